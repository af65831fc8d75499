import { describe, expect, it } from "vitest";
import { jobSchema } from "../../../src/api/schema.js";
import {
  breakSchema,
  type Faults,
  hasFaults,
  hugeBody,
  malformedBody,
  mergeFaults,
  planFaults,
  SCHEMA_BREAK_COUNT,
} from "../../../src/sim/faults.js";
import { createSimJob, jobAt } from "../../../src/sim/lifecycle.js";
import { createRng } from "../../../src/sim/random.js";

const rng = createRng(1);
const simJob = createSimJob({}, rng, Date.UTC(2026, 3, 20), () => rng.uuid());
const body = jobAt(simJob, simJob.createdAt + 5_000)!;

describe("planFaults", () => {
  it("serves the request untouched when nothing is set", () => {
    expect(hasFaults({ status5xx: 500, slowMs: 10, retryAfterS: 3 })).toBe(false);
    expect(planFaults({}, createRng(1))).toEqual({ delayMs: 0, answer: null, body: null });
  });

  it.each([
    ["reset", { reset: 1 }],
    ["hang", { hang: 1 }],
    ["authFail", { authFail: 1 }],
    ["rateLimit", { rateLimit: 1 }],
    ["error5xx", { error5xx: 1 }],
  ] as const)("answers with %s at probability 1", (answer, faults) => {
    expect(planFaults(faults, createRng(1))).toEqual({ delayMs: 0, answer, body: null });
  });

  it.each([
    ["malformed", { malformed: 1 }],
    ["schemaBreak", { schemaBreak: 1 }],
    ["wrongJobId", { wrongJobId: 1 }],
    ["htmlContentType", { htmlContentType: 1 }],
    ["huge", { huge: 1 }],
  ] as const)("spoils the body with %s at probability 1", (fault, faults) => {
    expect(planFaults(faults, createRng(1)).body).toBe(fault);
  });

  it("rolls in a fixed order: slow combines, the first answer fault wins, body faults only without one", () => {
    const all: Faults = { slow: 1, slowMs: 25, reset: 1, hang: 1, error5xx: 1, malformed: 1 };
    expect(planFaults(all, createRng(1))).toEqual({ delayMs: 25, answer: "reset", body: null });
    expect(planFaults({ error5xx: 1, rateLimit: 1 }, createRng(1)).answer).toBe("rateLimit");
    expect(planFaults({ huge: 1, malformed: 1 }, createRng(1)).body).toBe("malformed");
  });

  it("hits about as often as the probability says", () => {
    const r = createRng(99);
    const hits = Array.from({ length: 2_000 }, () => planFaults({ error5xx: 0.25 }, r)).filter(
      (p) => p.answer === "error5xx",
    ).length;
    expect(hits).toBeGreaterThan(350);
    expect(hits).toBeLessThan(650);
  });

  it("lets per-job settings override global ones field by field", () => {
    expect(mergeFaults({ error5xx: 1, status5xx: 502 }, { error5xx: 0 })).toEqual({
      error5xx: 0,
      status5xx: 502,
    });
    expect(mergeFaults({ slow: 1 }, undefined)).toEqual({ slow: 1 });
  });
});

describe("spoiled bodies", () => {
  it("starts from a valid body", () => {
    expect(jobSchema.safeParse(body).success).toBe(true);
  });

  it.each(Array.from({ length: SCHEMA_BREAK_COUNT }, (_, i) => i))(
    "schema break variant %i fails the job schema but is JSON",
    (variant) => {
      const broken = JSON.parse(JSON.stringify(breakSchema(body, variant))) as unknown;
      expect(jobSchema.safeParse(broken).success).toBe(false);
    },
  );

  it("malformed is not JSON", () => {
    expect(() => JSON.parse(malformedBody(body))).toThrow();
  });

  it("huge is valid JSON of several megabytes that still carries the job", () => {
    const text = hugeBody(body);
    expect(Buffer.byteLength(text)).toBeGreaterThan(4 * 1024 * 1024);
    expect(jobSchema.parse(JSON.parse(text)).jobId).toBe(body.jobId);
  });
});
