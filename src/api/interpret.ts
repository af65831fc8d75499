import { parseRetryAfter } from "./errors.js";
import type { Answer } from "./exchange.js";
import type { PollOutcome } from "./outcome.js";
import { parseJob } from "./schema.js";

/**
 * The pure step of one poll attempt: what an answer (status, headers, body) means. No I/O, no
 * clock of its own: the same answer and `nowMs` always give the same result. Either a
 * PollOutcome, final for this attempt, or a request to retry (a status worth another attempt),
 * which the client's retry loop acts on.
 */

/** The answer asks for another attempt, after `retryAfterMs` when the API said so. */
export interface RetryAnswer {
  kind: "retry";
  status: number;
  retryAfterMs: number | undefined;
}

/** Statuses worth another attempt: the API is busy, overloaded or briefly failing. */
const RETRY_STATUSES = new Set([408, 425, 429, 500, 502, 503, 504]);

// JSON.parse copes with any nesting, but JSON.stringify, pino and Lua cjson recurse and give up
// somewhere past a thousand levels (V8's JSON.stringify already between 1,000 and 5,000). A job
// passed on must survive being serialised again downstream, so deeper bodies are refused here.
export const MAX_JSON_DEPTH = 100;

export const NOT_FOUND: PollOutcome = Object.freeze({ kind: "not_found" });

export function invalid(reason: string): PollOutcome {
  return { kind: "invalid", reason };
}

export function isJsonMediaType(value: string | string[] | undefined): boolean {
  if (typeof value !== "string") return false;
  const semi = value.indexOf(";");
  const media = (semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase();
  return (
    media === "application/json" || (media.startsWith("application/") && media.endsWith("+json"))
  );
}

/** Nesting depth of a JSON text, counted without recursion; stops counting past `max`. */
function exceedsDepth(text: Buffer, max: number): boolean {
  // Fast path: a body with at most `max` brackets in all cannot nest deeper than `max`; counting
  // them with the native indexOf is much cheaper than walking every byte of a normal body.
  let brackets = 0;
  for (const open of [0x7b, 0x5b]) {
    for (let at = text.indexOf(open); at !== -1; at = text.indexOf(open, at + 1)) {
      if (++brackets > max) break;
    }
  }
  if (brackets <= max) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/** What one answer to `GET /v1/jobs/{jobId}` means; `nowMs` dates a Retry-After given as a date. */
export function interpretAnswer(
  jobId: string,
  answer: Answer,
  nowMs: number,
): PollOutcome | RetryAnswer {
  const { status, headers } = answer;
  if (status === 200) return readJob(jobId, answer);
  if (status === 404) return NOT_FOUND;
  if (status === 401 || status === 403) return { kind: "auth", status };
  if (RETRY_STATUSES.has(status)) {
    return { kind: "retry", status, retryAfterMs: parseRetryAfter(headers["retry-after"], nowMs) };
  }
  if (status >= 300 && status < 400) return invalid(`unexpected redirect (http ${status})`);
  return invalid(`unexpected status (http ${status})`);
}

function readJob(jobId: string, answer: Answer): PollOutcome {
  // The body was kept exactly when it was announced as JSON (see #pollLimits.keep).
  if (!answer.kept) return invalid("unexpected content type");
  const text = answer.body;
  if (answer.overCap || text === null) return invalid("body too large");
  if (exceedsDepth(text, MAX_JSON_DEPTH)) return invalid("body nested too deeply");
  let value: unknown;
  try {
    value = JSON.parse(text.toString("utf8"));
  } catch {
    return invalid("body is not json");
  }
  const parsed = parseJob(value);
  if (!parsed.ok) return invalid(`schema: ${parsed.issues}`);
  if (parsed.job.jobId.toLowerCase() !== jobId) return invalid("jobId mismatch");
  return { kind: "ok", job: parsed.job };
}
