import type { Job } from "../api/schema.js";
import type { Rng } from "./random.js";

/** Probabilities in 0..1, rolled per request, set globally or per job. */
export interface Faults {
  error5xx?: number;
  /** The status `error5xx` answers with; default 503. */
  status5xx?: number;
  rateLimit?: number;
  /** `Retry-After` of the 429, in seconds; default 1. */
  retryAfterS?: number;
  slow?: number;
  /** How long `slow` delays the answer; default 2000. */
  slowMs?: number;
  /** Never answers, until the client gives up or the simulator closes. */
  hang?: number;
  /** Destroys the socket without an answer. */
  reset?: number;
  /** A body that is not JSON. */
  malformed?: number;
  /** JSON that fails the job schema. */
  schemaBreak?: number;
  /** A valid body for another job id. */
  wrongJobId?: number;
  /** An HTML page served as `text/html`, like a proxy's error page. */
  htmlContentType?: number;
  /** A valid body padded to about 5 MB. */
  huge?: number;
  /** 401 even with the right key. */
  authFail?: number;
}

/** Faults that replace the whole answer, in the order they are rolled. */
const ANSWER_FAULTS = ["reset", "hang", "authFail", "rateLimit", "error5xx"] as const;
/** Faults that spoil a 200 body, in the order they are rolled. */
const BODY_FAULTS = ["malformed", "schemaBreak", "wrongJobId", "htmlContentType", "huge"] as const;

export type AnswerFault = (typeof ANSWER_FAULTS)[number];
export type BodyFault = (typeof BODY_FAULTS)[number];

export interface FaultPlan {
  /** Delay before anything else happens (0: none). */
  delayMs: number;
  answer: AnswerFault | null;
  body: BodyFault | null;
}

export const NO_FAULTS: FaultPlan = { delayMs: 0, answer: null, body: null };

/** Per-job settings override global ones field by field. */
export function mergeFaults(global: Faults, perJob: Faults | undefined): Faults {
  return perJob === undefined ? global : { ...global, ...perJob };
}

export function hasFaults(f: Faults): boolean {
  return [...ANSWER_FAULTS, ...BODY_FAULTS, "slow" as const].some((k) => (f[k] ?? 0) > 0);
}

/**
 * Rolls the faults of one request in a fixed order: `slow` first (it only delays, so it
 * combines with anything), then the first answer fault that hits (reset, hang, authFail,
 * rateLimit, error5xx), then, for a 200, the first body fault that hits (malformed,
 * schemaBreak, wrongJobId, htmlContentType, huge). Later faults are not rolled once one hit.
 */
export function planFaults(f: Faults, rng: Rng): FaultPlan {
  const delayMs = rng.chance(f.slow ?? 0) ? (f.slowMs ?? 2_000) : 0;
  const answer = ANSWER_FAULTS.find((k) => rng.chance(f[k] ?? 0)) ?? null;
  const body = answer === null ? (BODY_FAULTS.find((k) => rng.chance(f[k] ?? 0)) ?? null) : null;
  return { delayMs, answer, body };
}

/** Ways a body can break the schema, one picked per `schemaBreak` hit. */
const SCHEMA_BREAKS: Array<(job: Record<string, unknown>) => void> = [
  (job) => {
    job["status"] = "exploded";
  },
  (job) => {
    delete job["updatedAt"];
  },
  (job) => {
    job["attempts"] = -1;
  },
  (job) => {
    job["type"] = "pipeline.teleport";
  },
  (job) => {
    job["createdAt"] = "yesterday";
  },
];

export const SCHEMA_BREAK_COUNT = SCHEMA_BREAKS.length;

export function breakSchema(job: Job, variant: number): Record<string, unknown> {
  const broken: Record<string, unknown> = { ...job };
  SCHEMA_BREAKS[variant % SCHEMA_BREAKS.length]?.(broken);
  return broken;
}

const HUGE_PADDING_BYTES = 5 * 1024 * 1024;
let hugePadding: string | undefined;

/** The padding is built once: a 5 MB string per request would dominate a fault test's cost. */
export function hugeBody(job: Job): string {
  hugePadding ??= "x".repeat(HUGE_PADDING_BYTES);
  return JSON.stringify({ ...job, padding: hugePadding });
}

export function malformedBody(job: Job): string {
  // A body cut mid-way, as a proxy that dropped the connection would leave it.
  return JSON.stringify(job).slice(0, 40);
}

export const HTML_PAGE =
  "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>";
