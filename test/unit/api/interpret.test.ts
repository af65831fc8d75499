import { describe, expect, it } from "vitest";
import type { Answer } from "../../../src/api/exchange.js";
import { interpretAnswer, MAX_JSON_DEPTH } from "../../../src/api/interpret.js";
import { jobBody } from "../../fixtures/job.js";

const jobId = "3c90c3cc-0d44-4b50-8888-8dd25736052a";
const NOW = Date.parse("2026-04-20T09:00:00.000Z");

function answer(status: number, body?: unknown, headers: Answer["headers"] = {}): Answer {
  const text = body === undefined ? null : Buffer.from(JSON.stringify(body));
  return { status, headers, kept: text !== null, body: text, overCap: false };
}

describe("interpretAnswer", () => {
  it("reads a 200 with a valid body for the same job as ok", () => {
    const body = jobBody({ jobId });
    const got = interpretAnswer(jobId, answer(200, body), NOW);
    expect(got).toEqual({ kind: "ok", job: expect.objectContaining({ jobId, status: "running" }) });
  });

  it("refuses a body for another job, one not kept as JSON, one over its cap, one nested too deep", () => {
    expect(interpretAnswer(jobId, answer(200, jobBody()), NOW)).toEqual({
      kind: "invalid",
      reason: "jobId mismatch",
    });
    expect(interpretAnswer(jobId, { ...answer(200, {}), kept: false }, NOW)).toEqual({
      kind: "invalid",
      reason: "unexpected content type",
    });
    expect(interpretAnswer(jobId, { ...answer(200, {}), overCap: true }, NOW)).toEqual({
      kind: "invalid",
      reason: "body too large",
    });
    let deep: unknown = 1;
    for (let i = 0; i <= MAX_JSON_DEPTH; i++) deep = [deep];
    expect(interpretAnswer(jobId, answer(200, deep), NOW)).toEqual({
      kind: "invalid",
      reason: "body nested too deeply",
    });
  });

  it("maps 404, 401/403, redirects and other statuses without retrying", () => {
    expect(interpretAnswer(jobId, answer(404), NOW)).toEqual({ kind: "not_found" });
    expect(interpretAnswer(jobId, answer(401), NOW)).toEqual({ kind: "auth", status: 401 });
    expect(interpretAnswer(jobId, answer(403), NOW)).toEqual({ kind: "auth", status: 403 });
    expect(interpretAnswer(jobId, answer(302), NOW)).toEqual({
      kind: "invalid",
      reason: "unexpected redirect (http 302)",
    });
    expect(interpretAnswer(jobId, answer(418), NOW)).toEqual({
      kind: "invalid",
      reason: "unexpected status (http 418)",
    });
  });

  it("asks for a retry on 429 and 5xx, with Retry-After in seconds or as a date against now", () => {
    expect(interpretAnswer(jobId, answer(503), NOW)).toEqual({
      kind: "retry",
      status: 503,
      retryAfterMs: undefined,
    });
    expect(interpretAnswer(jobId, answer(429, undefined, { "retry-after": "2" }), NOW)).toEqual({
      kind: "retry",
      status: 429,
      retryAfterMs: 2000,
    });
    const at = new Date(NOW + 5000).toUTCString();
    expect(interpretAnswer(jobId, answer(429, undefined, { "retry-after": at }), NOW)).toEqual({
      kind: "retry",
      status: 429,
      retryAfterMs: 5000,
    });
  });
});
