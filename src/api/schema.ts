import { z } from "zod";

/**
 * The job body of `GET /v1/jobs/{jobId}`, written from the field list under "Response" on the
 * API page (the examples there are partial and are not the schema). Every field is required,
 * nullable exactly where the page says so; unknown extra fields are tolerated and kept.
 */

export const JOB_STATUSES = [
  "pending",
  "queued",
  "running",
  "succeeded",
  "failed",
  "cancelled",
  "dead_letter",
] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const JOB_TYPES = [
  "pipeline.ingest_validate",
  "pipeline.deidentify",
  "pipeline.map_to_fhir",
  "pipeline.fhir_store_upsert",
  "pipeline.run_inference",
  "pipeline.write_artifacts",
  "pipeline.dispatch_webhooks",
] as const;
export type JobType = (typeof JOB_TYPES)[number];

// The 8-4-4-4-12 hex shape, the same definition the pending-set intake applies (`isJobId`):
// a stricter RFC 9562 check here would turn a job the API really has into endless invalid polls.
const uuid = z.guid();
// RFC 3339 with an offset or Z, any number of fraction digits.
const dateTime = z.iso.datetime({ offset: true });
const count = z.int().min(0);

export const jobSchema = z.looseObject({
  jobId: uuid,
  submissionId: uuid.nullable(),
  partnerSubmissionId: z.string().nullable(),
  partnerSubjectId: z.string().nullable(),
  type: z.enum(JOB_TYPES),
  typeLabel: z.string().min(1),
  status: z.enum(JOB_STATUSES),
  statusLabel: z.string().min(1),
  segment: z.string().nullable(),
  correlationId: z.string().nullable(),
  parentJobId: uuid.nullable(),
  attempts: count,
  maxAttempts: count,
  lastError: z.string().nullable(),
  // "Opaque JSON when present": required as a key, any JSON value (including null).
  errorDetail: z.unknown().refine((v) => v !== undefined, { message: "Required" }),
  queuedAt: dateTime.nullable(),
  acceptedAt: dateTime.nullable(),
  startedAt: dateTime.nullable(),
  completedAt: dateTime.nullable(),
  failedAt: dateTime.nullable(),
  slaDeadlineAt: dateTime.nullable(),
  processingDurationMs: count.nullable(),
  slaBreached: z.boolean(),
  createdAt: dateTime,
  updatedAt: dateTime,
});

export type Job = z.infer<typeof jobSchema>;

// ---- the fast path -----------------------------------------------------------------------
// zod walks its schema generically and copies the object on every parse; at thousands of polls
// per second that was about a tenth of the daemon's CPU. `isValidJob` checks the same rules by
// hand, with zod's own regular expressions, and `parseJob` falls back to zod whenever it says
// no, so zod still has the last word on a rejection and writes its description. The property
// test in test/unit/api/schema.test.ts holds the two to the same answers.

const GUID = z.regexes.guid;
const DATE_TIME = z.regexes.datetime({ offset: true, local: false });
const TYPE_SET: ReadonlySet<unknown> = new Set(JOB_TYPES);
const STATUS_SET: ReadonlySet<unknown> = new Set(JOB_STATUSES);

function isGuid(v: unknown): boolean {
  return typeof v === "string" && GUID.test(v);
}
function isDateTime(v: unknown): boolean {
  return typeof v === "string" && DATE_TIME.test(v);
}
function isCount(v: unknown): boolean {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}
function isLabel(v: unknown): boolean {
  return typeof v === "string" && v.length > 0;
}
function isNullableString(v: unknown): boolean {
  return v === null || typeof v === "string";
}

/**
 * True only for a value `jobSchema` accepts (it may say false for one zod would accept). A body
 * with an own `__proto__` key goes to zod, whose copy drops that key: passing it on in events
 * would invite prototype pollution in consumers that merge objects naively.
 */
export function isValidJob(value: unknown): value is Job {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  if (Object.hasOwn(value, "__proto__")) return false;
  const j = value as Record<string, unknown>;
  return (
    isGuid(j["jobId"]) &&
    (j["submissionId"] === null || isGuid(j["submissionId"])) &&
    isNullableString(j["partnerSubmissionId"]) &&
    isNullableString(j["partnerSubjectId"]) &&
    TYPE_SET.has(j["type"]) &&
    isLabel(j["typeLabel"]) &&
    STATUS_SET.has(j["status"]) &&
    isLabel(j["statusLabel"]) &&
    isNullableString(j["segment"]) &&
    isNullableString(j["correlationId"]) &&
    (j["parentJobId"] === null || isGuid(j["parentJobId"])) &&
    isCount(j["attempts"]) &&
    isCount(j["maxAttempts"]) &&
    isNullableString(j["lastError"]) &&
    j["errorDetail"] !== undefined &&
    (j["queuedAt"] === null || isDateTime(j["queuedAt"])) &&
    (j["acceptedAt"] === null || isDateTime(j["acceptedAt"])) &&
    (j["startedAt"] === null || isDateTime(j["startedAt"])) &&
    (j["completedAt"] === null || isDateTime(j["completedAt"])) &&
    (j["failedAt"] === null || isDateTime(j["failedAt"])) &&
    (j["slaDeadlineAt"] === null || isDateTime(j["slaDeadlineAt"])) &&
    (j["processingDurationMs"] === null || isCount(j["processingDurationMs"])) &&
    typeof j["slaBreached"] === "boolean" &&
    isDateTime(j["createdAt"]) &&
    isDateTime(j["updatedAt"])
  );
}

export type JobParse = { ok: true; job: Job } | { ok: false; issues: string };

/** A job body checked against `jobSchema`: by hand when it is valid, by zod when it is not. */
export function parseJob(value: unknown): JobParse {
  if (isValidJob(value)) return { ok: true, job: value };
  const parsed = jobSchema.safeParse(value);
  return parsed.success
    ? { ok: true, job: parsed.data }
    : { ok: false, issues: describeIssues(parsed.error) };
}

/** Fields that may carry patient data: they reach events, never logs. */
export const PATIENT_FIELDS = ["partnerSubjectId", "lastError", "errorDetail"] as const;

/**
 * Describes why a value is not a valid job body using only issue paths and codes: zod messages
 * can quote received values, and a body's values must never reach logs or `poll_failed`.
 */
export function describeIssues(error: z.ZodError, max = 5): string {
  const parts = error.issues.slice(0, max).map((issue) => {
    const path = issue.path.length > 0 ? issue.path.map(String).join(".") : "(root)";
    return `${path}: ${issue.code}`;
  });
  if (error.issues.length > max) parts.push(`+${error.issues.length - max} more`);
  return parts.join("; ");
}

// The job-id rule is a dependency-free leaf (the client library loads it without zod).
export { isJobId, JOB_ID_PATTERN } from "../lib/job-id.js";
