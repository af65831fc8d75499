/**
 * Errors of the Jobs API edge. Every message is a fixed string (plus a status or an error code):
 * never a value from a response body, never the API key, so any of them may be logged or put in
 * a `poll_failed` reason as is.
 */

export type ErrorKind = "transient" | "auth" | "invalid";

export abstract class ApiError extends Error {
  abstract readonly code: string;
  abstract readonly kind: ErrorKind;
}

/** Worth another attempt: a connection problem, a timeout, or 408/425/429/500/502/503/504. */
export class ApiTransientError extends ApiError {
  readonly code = "API_TRANSIENT";
  readonly kind = "transient";
  readonly status: number | undefined;
  /** From `Retry-After`: the server asked for this much quiet before the next attempt. */
  readonly retryAfterMs: number | undefined;
  /** The request never went out: the request budget granted no permit in time. */
  readonly unsent: boolean;

  constructor(
    message: string,
    opts: { status?: number; retryAfterMs?: number; unsent?: boolean } = {},
  ) {
    super(message);
    this.name = "ApiTransientError";
    this.status = opts.status;
    this.retryAfterMs = opts.retryAfterMs;
    this.unsent = opts.unsent ?? false;
  }

  /** The quota, not the job: a 429, or no permit from the request budget in time. */
  get throttled(): boolean {
    return this.status === 429 || this.unsent;
  }
}

/** 401/403: the key is refused, for every job at once. */
export class ApiAuthError extends ApiError {
  readonly code = "API_AUTH";
  readonly kind = "auth";
  readonly status: number;

  constructor(status: number) {
    super(`api key refused (http ${status})`);
    this.name = "ApiAuthError";
    this.status = status;
  }
}

// Connection-level failures of the network or the peer: the same request may well succeed later.
const TRANSIENT_SYSTEM_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "EADDRNOTAVAIL",
  "EAI_AGAIN",
  "ENOTFOUND",
]);

// undici codes that name a mistake on our side or an oversized answer, not a flaky connection.
const NON_TRANSIENT_UNDICI_CODES = new Set([
  "UND_ERR_INVALID_ARG",
  "UND_ERR_INVALID_RETURN_VALUE",
  "UND_ERR_NOT_SUPPORTED",
  "UND_ERR_HEADERS_OVERFLOW",
  "UND_ERR_RES_EXCEEDED_MAX_SIZE",
]);

function codeOf(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}

function nameOf(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const name = (err as { name?: unknown }).name;
  return typeof name === "string" ? name : undefined;
}

/**
 * The one place that decides what a failure means; the client's p-retry `shouldRetry` retries
 * exactly the `transient` ones. Anything unrecognised is `invalid`: it is counted towards the
 * job's `poll_failed` alert instead of being retried blindly.
 */
export function classify(err: unknown): ErrorKind {
  if (err instanceof ApiError) return err.kind;
  const code = codeOf(err);
  if (code !== undefined) {
    if (code.startsWith("UND_ERR"))
      return NON_TRANSIENT_UNDICI_CODES.has(code) ? "invalid" : "transient";
    if (TRANSIENT_SYSTEM_CODES.has(code)) return "transient";
  }
  // DOMExceptions of an aborted or timed-out AbortSignal (our per-request deadline).
  const name = nameOf(err);
  if (name === "TimeoutError" || name === "AbortError") return "transient";
  return "invalid";
}

/**
 * A short reason for an error, safe to log: our own fixed messages, or the error's code. Never
 * a foreign error's message, which may quote whatever the peer sent.
 */
export function reasonOf(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  const code = codeOf(err);
  if (code !== undefined && /^[A-Z][A-Z0-9_]{0,63}$/.test(code)) return `network error ${code}`;
  const name = nameOf(err);
  if (name === "TimeoutError") return "timeout";
  if (name === "AbortError") return "aborted";
  return "unexpected error";
}

/** The longest wait a `Retry-After` may ask of us; a larger value is taken as this. */
export const RETRY_AFTER_MAX_MS = 60 * 60 * 1000;

// An HTTP-date (IMF-fixdate, RFC 850 or asctime) starts with a day name; requiring one keeps
// Date.parse's leniency from turning stray numbers or words into a date.
const HTTP_DATE_START = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? /;

/**
 * `Retry-After` as milliseconds from `nowMs`: delta-seconds or an HTTP-date, clamped to
 * [0, RETRY_AFTER_MAX_MS]. Anything else (missing, negative, fractional, garbage) is undefined,
 * i.e. "no instruction": the ordinary backoff applies.
 */
export function parseRetryAfter(
  value: string | string[] | undefined,
  nowMs: number,
): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined) return undefined;
  const text = raw.trim();
  if (text.length === 0 || text.length > 64) return undefined;
  let ms: number;
  if (/^\d+$/.test(text)) {
    ms = Number(text) * 1000;
  } else if (HTTP_DATE_START.test(text)) {
    const at = Date.parse(text);
    if (Number.isNaN(at)) return undefined;
    ms = at - nowMs;
  } else {
    return undefined;
  }
  return Math.min(Math.max(ms, 0), RETRY_AFTER_MAX_MS);
}
