import { describe, expect, it } from "vitest";
import {
  ApiAuthError,
  ApiTransientError,
  classify,
  parseRetryAfter,
  RETRY_AFTER_MAX_MS,
  reasonOf,
} from "../../../src/api/errors.js";

function withCode(code: string, message = "some message"): Error {
  return Object.assign(new Error(message), { code });
}

describe("error classes", () => {
  it("carry stable codes, kinds and statuses", () => {
    const transient = new ApiTransientError("http 503", { status: 503, retryAfterMs: 2000 });
    expect([transient.code, transient.kind, transient.status, transient.retryAfterMs]).toEqual([
      "API_TRANSIENT",
      "transient",
      503,
      2000,
    ]);
    const auth = new ApiAuthError(401);
    expect([auth.code, auth.kind, auth.status, auth.message]).toEqual([
      "API_AUTH",
      "auth",
      401,
      "api key refused (http 401)",
    ]);
    // 404 and invalid answers are outcomes (src/api/interpret.ts), never thrown as errors.
    expect(auth).toBeInstanceOf(Error);
  });
});

describe("classify", () => {
  it("follows our own classes", () => {
    expect(classify(new ApiTransientError("timeout"))).toBe("transient");
    expect(classify(new ApiAuthError(403))).toBe("auth");
  });

  it.each([
    "UND_ERR_SOCKET",
    "UND_ERR_CONNECT_TIMEOUT",
    "UND_ERR_HEADERS_TIMEOUT",
    "UND_ERR_BODY_TIMEOUT",
    "UND_ERR_ABORTED",
    "UND_ERR_CLOSED",
    "UND_ERR_RES_CONTENT_LENGTH_MISMATCH",
    "ECONNRESET",
    "ECONNREFUSED",
    "EPIPE",
    "ETIMEDOUT",
    "EAI_AGAIN",
  ])("treats %s as transient", (code) => {
    expect(classify(withCode(code))).toBe("transient");
  });

  it("treats aborts and timeouts of an AbortSignal as transient", () => {
    expect(classify(new DOMException("timed out", "TimeoutError"))).toBe("transient");
    expect(classify(new DOMException("aborted", "AbortError"))).toBe("transient");
  });

  it("does not retry our own mistakes or unknown failures", () => {
    expect(classify(withCode("UND_ERR_INVALID_ARG"))).toBe("invalid");
    expect(classify(withCode("UND_ERR_RES_EXCEEDED_MAX_SIZE"))).toBe("invalid");
    expect(classify(withCode("ERR_SOMETHING_ELSE"))).toBe("invalid");
    expect(classify(new TypeError("x is not a function"))).toBe("invalid");
    expect(classify("a string")).toBe("invalid");
    expect(classify(undefined)).toBe("invalid");
    expect(classify(null)).toBe("invalid");
  });
});

describe("reasonOf", () => {
  it("uses our messages and foreign codes, never foreign messages", () => {
    expect(reasonOf(new ApiTransientError("http 503"))).toBe("http 503");
    expect(reasonOf(withCode("ECONNRESET", "secret peer text"))).toBe("network error ECONNRESET");
    expect(reasonOf(withCode("not a code: secret"))).toBe("unexpected error");
    expect(reasonOf(new Error("secret"))).toBe("unexpected error");
    expect(reasonOf(new DOMException("secret", "TimeoutError"))).toBe("timeout");
  });
});

describe("parseRetryAfter", () => {
  const now = Date.parse("2026-04-20T09:00:00Z");

  it("reads delta-seconds", () => {
    expect(parseRetryAfter("1", now)).toBe(1000);
    expect(parseRetryAfter(" 120 ", now)).toBe(120_000);
    expect(parseRetryAfter("0", now)).toBe(0);
    expect(parseRetryAfter(["3", "9"], now)).toBe(3000);
  });

  it("reads an HTTP date relative to now", () => {
    expect(parseRetryAfter("Mon, 20 Apr 2026 09:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfter("Monday, 20-Apr-26 09:00:05 GMT", now)).toBe(5000);
  });

  it("clamps a date in the past to zero and anything huge to the maximum", () => {
    expect(parseRetryAfter("Sun, 19 Apr 2026 09:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("86400", now)).toBe(RETRY_AFTER_MAX_MS);
    expect(parseRetryAfter("99999999999999999999999", now)).toBe(RETRY_AFTER_MAX_MS);
    expect(parseRetryAfter("Fri, 01 Jan 2100 00:00:00 GMT", now)).toBe(RETRY_AFTER_MAX_MS);
  });

  it.each([
    undefined,
    "",
    "   ",
    "soon",
    "-5",
    "1.5",
    "2026-04-20T09:00:30Z",
    "Mon, 99 Foo 2026 25:00:00 GMT",
    [],
  ])("ignores %j", (value) => {
    expect(parseRetryAfter(value as string | string[] | undefined, now)).toBeUndefined();
  });
});
