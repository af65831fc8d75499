import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  describeIssues,
  isValidJob,
  JOB_STATUSES,
  JOB_TYPES,
  jobSchema,
  parseJob,
} from "../../../src/api/schema.js";

const SENTINEL = "PATIENT-SENTINEL-7f3a";

/** Every field of the "Response" list on the API page, with the example's values. */
function fullBody(): Record<string, unknown> {
  return {
    jobId: "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb",
    submissionId: "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa",
    partnerSubmissionId: "hy-sub-0001",
    partnerSubjectId: "subject-1",
    type: "pipeline.run_inference",
    typeLabel: "Run inference",
    status: "succeeded",
    statusLabel: "Succeeded",
    segment: "default",
    correlationId: "corr-1",
    parentJobId: "3c90c3cc-0d44-4b50-8888-8dd25736052a",
    attempts: 1,
    maxAttempts: 3,
    lastError: null,
    errorDetail: {},
    queuedAt: "2026-04-20T09:00:00Z",
    acceptedAt: "2026-04-20T09:00:01Z",
    startedAt: "2026-04-20T09:00:02.5Z",
    completedAt: "2026-04-20T09:00:45.000Z",
    failedAt: null,
    slaDeadlineAt: "2026-04-20T10:00:00+02:00",
    processingDurationMs: 123,
    slaBreached: false,
    createdAt: "2023-11-07T05:31:56Z",
    updatedAt: "2026-04-20T09:00:45.000Z",
  };
}

function parse(overrides: Record<string, unknown>) {
  return jobSchema.safeParse({ ...fullBody(), ...overrides });
}

function issuePaths(overrides: Record<string, unknown>): string[] {
  const result = parse(overrides);
  expect(result.success).toBe(false);
  return result.success ? [] : result.error.issues.map((i) => i.path.join("."));
}

describe("jobSchema", () => {
  it("accepts a full body and keeps its values", () => {
    const result = jobSchema.safeParse(fullBody());
    expect(result.success).toBe(true);
    expect(result.data?.status).toBe("succeeded");
    expect(result.data?.attempts).toBe(1);
  });

  it("accepts null wherever the page says nullable", () => {
    const nulls = Object.fromEntries(
      [
        "submissionId",
        "partnerSubmissionId",
        "partnerSubjectId",
        "segment",
        "correlationId",
        "parentJobId",
        "lastError",
        "queuedAt",
        "acceptedAt",
        "startedAt",
        "completedAt",
        "failedAt",
        "slaDeadlineAt",
        "processingDurationMs",
      ].map((k) => [k, null]),
    );
    expect(parse(nulls).success).toBe(true);
  });

  it("rejects the partial example of the API page (no type, no status)", () => {
    const { type: _t, status: _s, ...partial } = fullBody();
    const result = jobSchema.safeParse(partial);
    expect(result.success).toBe(false);
    expect(result.error?.issues.map((i) => i.path.join(".")).sort()).toEqual(["status", "type"]);
  });

  it.each([
    "jobId",
    "typeLabel",
    "attempts",
    "errorDetail",
    "createdAt",
    "updatedAt",
    "slaBreached",
    "lastError",
  ])("rejects a body without %s", (field) => {
    const body = fullBody();
    delete body[field];
    const result = jobSchema.safeParse(body);
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.path).toEqual([field]);
  });

  it("rejects values outside the documented enums", () => {
    expect(issuePaths({ status: "done" })).toEqual(["status"]);
    expect(issuePaths({ status: "SUCCEEDED" })).toEqual(["status"]);
    expect(issuePaths({ type: "pipeline.unknown" })).toEqual(["type"]);
  });

  it("rejects ids that are not uuids", () => {
    expect(issuePaths({ jobId: "not-a-uuid" })).toEqual(["jobId"]);
    expect(issuePaths({ submissionId: "../../etc" })).toEqual(["submissionId"]);
    expect(issuePaths({ parentJobId: "" })).toEqual(["parentJobId"]);
  });

  it("rejects bad date-times", () => {
    expect(issuePaths({ createdAt: "yesterday" })).toEqual(["createdAt"]);
    expect(issuePaths({ updatedAt: "2026-04-20" })).toEqual(["updatedAt"]);
    expect(issuePaths({ completedAt: "2026-13-40T09:00:00Z" })).toEqual(["completedAt"]);
    expect(issuePaths({ queuedAt: 1713603645000 })).toEqual(["queuedAt"]);
  });

  it("rejects negative and non-integer counts", () => {
    expect(issuePaths({ attempts: -1 })).toEqual(["attempts"]);
    expect(issuePaths({ maxAttempts: 1.5 })).toEqual(["maxAttempts"]);
    expect(issuePaths({ processingDurationMs: -3 })).toEqual(["processingDurationMs"]);
    expect(issuePaths({ attempts: "1" })).toEqual(["attempts"]);
  });

  it("rejects an empty label and a non-boolean slaBreached", () => {
    expect(issuePaths({ typeLabel: "" })).toEqual(["typeLabel"]);
    expect(issuePaths({ slaBreached: "true" })).toEqual(["slaBreached"]);
  });

  it("tolerates and keeps extra fields", () => {
    const result = parse({ somethingNew: { nested: true } });
    expect(result.success).toBe(true);
    expect((result.data as Record<string, unknown>)["somethingNew"]).toEqual({ nested: true });
  });

  it.each([
    ["an object", { code: "E42", trace: [1, 2, 3] }],
    ["null", null],
    ["an array", [1, "two"]],
    ["a string", "opaque"],
  ])("accepts errorDetail as %s", (_name, errorDetail) => {
    const result = parse({ errorDetail });
    expect(result.success).toBe(true);
    expect(result.data?.errorDetail).toEqual(errorDetail);
  });
});

describe("describeIssues", () => {
  it("names paths and codes, never the values of the body", () => {
    const result = parse({
      partnerSubjectId: 42,
      lastError: { text: SENTINEL },
      status: SENTINEL,
      type: `${SENTINEL}.x`,
      jobId: SENTINEL,
      createdAt: SENTINEL,
      attempts: SENTINEL,
    });
    expect(result.success).toBe(false);
    const text = result.success ? "" : describeIssues(result.error, 100);
    expect(text).toContain("status: invalid_value");
    expect(text).toContain("lastError: invalid_type");
    expect(text).not.toContain(SENTINEL);
    expect(text).not.toContain("42");
  });

  it("caps the number of issues it lists", () => {
    const result = jobSchema.safeParse({});
    expect(result.success).toBe(false);
    const text = result.success ? "" : describeIssues(result.error, 3);
    expect(text.split("; ")).toHaveLength(4);
    expect(text).toMatch(/\+\d+ more$/);
  });

  it("describes a non-object body at the root", () => {
    const result = jobSchema.safeParse([SENTINEL]);
    expect(result.success).toBe(false);
    const text = result.success ? "" : describeIssues(result.error);
    expect(text).toBe("(root): invalid_type");
  });
});

describe("parseJob (the hand-written fast path)", () => {
  const FIELDS = Object.keys(fullBody());
  // Values chosen to sit on each rule's edge: wrong types, empty and odd strings, near-uuids,
  // near-dates (bad day, lowercase T, no offset, leap years), unsafe and negative numbers.
  const edgy = fc.oneof(
    fc.constantFrom(
      null,
      "",
      "x",
      0,
      -0,
      -1,
      1.5,
      2 ** 53,
      2 ** 53 - 1,
      true,
      false,
      [],
      {},
      "BBBBBBBB-BBBB-4BBB-8BBB-BBBBBBBBBBBB",
      "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbb",
      "bbbbbbbbbbbb-4bbb-8bbb-bbbbbbbbbbbbb",
      "gbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb",
      "2026-04-20T09:00:00Z",
      "2026-04-20t09:00:00Z",
      "2026-04-20T09:00:00",
      "2026-04-20T09:00Z",
      "2026-04-20T24:00:00Z",
      "2023-02-29T00:00:00Z",
      "2024-02-29T00:00:00Z",
      "2000-02-29T00:00:00Z",
      "1900-02-29T00:00:00Z",
      "2026-04-31T00:00:00Z",
      "2026-04-20T09:00:00.123456789+05:30",
      "2026-04-20T09:00:00+0530",
      "2026-04-20T09:00:00.Z",
      " 2026-04-20T09:00:00Z",
      "2026-04-20 09:00:00Z",
      ...JOB_TYPES,
      ...JOB_STATUSES,
      "Running",
    ),
    fc.tuple(fc.uuid(), fc.boolean()).map(([u, upper]) => (upper ? u.toUpperCase() : u)),
    fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
    fc.string(),
    fc.integer(),
    fc.double(),
    fc.jsonValue(),
  );
  const body = fc
    .record({
      changes: fc.array(fc.tuple(fc.constantFrom(...FIELDS), edgy), { maxLength: 3 }),
      removed: fc.array(fc.constantFrom(...FIELDS), { maxLength: 2 }),
    })
    .map(({ changes, removed }) => {
      const b: Record<string, unknown> = fullBody();
      for (const [field, value] of changes) b[field] = value;
      for (const field of removed) delete b[field];
      return b;
    });

  it("accepts exactly what zod accepts, on bodies mutated at the edges of each rule", () => {
    fc.assert(
      fc.property(fc.oneof(body, fc.jsonValue()), (value) => {
        // Through JSON, as the client sees it: no undefined values, no shared references.
        const json = JSON.parse(JSON.stringify(value) ?? "null");
        const zodAccepts = jobSchema.safeParse(json).success;
        // An own __proto__ key is left to zod on purpose (see isValidJob).
        const protoKey =
          typeof json === "object" && json !== null && Object.hasOwn(json, "__proto__");
        expect(isValidJob(json)).toBe(zodAccepts && !protoKey);
      }),
      { numRuns: 5000 },
    );
  });

  it("leaves a body with an own __proto__ key to zod, which drops the key", () => {
    const text = JSON.stringify(fullBody()).replace("{", '{"__proto__":{"polluted":true},');
    const value: unknown = JSON.parse(text);
    expect(Object.hasOwn(value as object, "__proto__")).toBe(true);
    expect(isValidJob(value)).toBe(false);
    const parsed = parseJob(value);
    expect(parsed.ok).toBe(true);
    expect(parsed.ok && Object.hasOwn(parsed.job, "__proto__")).toBe(false);
    expect(parsed.ok && parsed.job.jobId).toBe(fullBody()["jobId"]);
  });

  it("gives the same job as zod when valid, and zod's description when not", () => {
    const good = fullBody();
    const fast = parseJob(good);
    const slow = jobSchema.safeParse(good);
    expect(fast).toEqual({ ok: true, job: slow.data });
    const bad = parseJob({ ...fullBody(), attempts: -1, status: "done" });
    const zodBad = jobSchema.safeParse({ ...fullBody(), attempts: -1, status: "done" });
    expect(zodBad.success).toBe(false);
    expect(bad).toEqual({ ok: false, issues: zodBad.success ? "" : describeIssues(zodBad.error) });
  });
});
