import { describe, expect, it } from "vitest";
import { coerceError } from "../../../src/lib/errors.js";

describe("coerceError", () => {
  it("keeps errors and wraps everything else", () => {
    const err = new Error("x");
    expect(coerceError(err)).toBe(err);
    expect(coerceError("boom").message).toBe("boom");
    expect(coerceError(undefined)).toBeInstanceOf(Error);
    const cyclic: Record<string, unknown> = {};
    cyclic["self"] = cyclic;
    expect(coerceError(cyclic)).toBeInstanceOf(Error);
  });

  it("names a thrown non-Error by its type, never its contents", () => {
    const message = coerceError({ partnerSubjectId: "patient-123" }).message;
    expect(message).toBe("non-error thrown: object");
    expect(message).not.toContain("patient-123");
  });
});
