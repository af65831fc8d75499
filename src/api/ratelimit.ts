/**
 * What an API's rate-limit headers say about the budget of the key, as the two numbers the
 * shared budget understands: a rate to send at, and a pause. Pure; every value from the peer is
 * bounded before it is used.
 *
 * Understood, in this order of preference for the rate:
 * - IETF `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): a list of policies
 *   `"name";q=<quota>;w=<window s>`; the strictest q / w is the rate.
 * - IETF `RateLimit`: `"name";r=<remaining>;t=<seconds to reset>`, or the older
 *   `limit=…, remaining=…, reset=…` form, or separate `RateLimit-Limit`, `-Remaining`, `-Reset`.
 * - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (reset as seconds, or as
 *   a Unix time when it is that large).
 * Without a policy, the remaining requests spread over the time to the reset are the rate. When
 * nothing remains, the budget pauses until the reset (with a policy, only for a reset more than
 * a second away).
 */

export interface RateLimitAdvice {
  /** Requests per second the key may use; undefined when the headers do not say. */
  rate?: number;
  /** Send nothing for this long: nothing remains until the reset. */
  pauseMs?: number;
}

type Headers = Record<string, string | string[] | undefined>;

/** The longest pause a reset may ask for, as for `Retry-After`. */
const MAX_PAUSE_MS = 60 * 60 * 1000;
/** A reset this large is a Unix time in seconds, not a number of seconds from now. */
const UNIX_TIME_FROM = 1_000_000_000;
const MAX_HEADER_LENGTH = 1024;
/** Remaining and reset as separate fields, IETF's older names first. */
const SEPARATE_FIELDS = [
  ["ratelimit-remaining", "ratelimit-reset"],
  ["x-ratelimit-remaining", "x-ratelimit-reset"],
] as const;
/** Every header read here: an answer with none of them says nothing. */
const NAMES = ["ratelimit-policy", "ratelimit", ...SEPARATE_FIELDS.flat()];

function anyOf(headers: Headers): boolean {
  for (const name of NAMES) if (headers[name] !== undefined) return true;
  return false;
}

function header(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  const text = Array.isArray(value) ? value.join(", ") : value;
  if (text === undefined || text.length > MAX_HEADER_LENGTH) return undefined;
  return text;
}

function nonNegative(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (!/^\d{1,15}(\.\d{1,6})?$/.test(t)) return undefined;
  return Number(t);
}

interface Member {
  name: string;
  params: Map<string, string>;
}

/**
 * A structured-field list (RFC 8941) reduced to what these headers use: items that are a token,
 * a quoted string or an integer, each with `;key=value` parameters. Unparseable members are
 * skipped rather than failing the whole header.
 */
function parseList(text: string): Member[] {
  const members: Member[] = [];
  for (const raw of splitOutsideQuotes(text, ",")) {
    const parts = splitOutsideQuotes(raw, ";").map((p) => p.trim());
    const head = parts[0] ?? "";
    if (head === "") continue;
    const params = new Map<string, string>();
    let name = head;
    const eq = head.indexOf("=");
    // `limit=100` as the member itself: the older dictionary form.
    if (eq > 0 && !head.startsWith('"')) {
      name = "";
      params.set(head.slice(0, eq).trim().toLowerCase(), unquote(head.slice(eq + 1)));
    } else {
      name = unquote(head);
    }
    for (const p of parts.slice(1)) {
      const at = p.indexOf("=");
      if (at > 0) params.set(p.slice(0, at).trim().toLowerCase(), unquote(p.slice(at + 1)));
    }
    members.push({ name, params });
  }
  return members;
}

function splitOutsideQuotes(text: string, sep: string): string[] {
  const out: string[] = [];
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\\" && quoted) i++;
    else if (c === '"') quoted = !quoted;
    else if (c === sep && !quoted) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  out.push(text.slice(start));
  return out;
}

function unquote(value: string): string {
  const v = value.trim();
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
}

/** Seconds from now until a reset given as seconds or as a Unix time. */
function resetSeconds(value: number | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  if (value < UNIX_TIME_FROM) return value;
  return Math.max(0, value - nowMs / 1000);
}

/** The strictest rate of the `RateLimit-Policy` policies counted in requests. */
function policyRate(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  let rate: number | undefined;
  for (const m of parseList(text)) {
    const unit = m.params.get("qu");
    if (unit !== undefined && unit !== "requests") continue;
    // The older form put the quota first: `100;w=60`.
    const q = nonNegative(m.params.get("q") ?? (m.name !== "" ? m.name : undefined));
    const w = nonNegative(m.params.get("w"));
    if (q === undefined || w === undefined || w <= 0) continue;
    const r = q / w;
    if (rate === undefined || r < rate) rate = r;
  }
  return rate;
}

/** Remaining and reset of the `RateLimit` field (first member that says both). */
function remainingOf(headers: Headers): { remaining?: number; reset?: number } | undefined {
  const field = header(headers, "ratelimit");
  if (field !== undefined) {
    const members = parseList(field);
    const all = new Map<string, string>();
    for (const m of members) for (const [k, v] of m.params) if (!all.has(k)) all.set(k, v);
    const remaining = nonNegative(all.get("r") ?? all.get("remaining"));
    const reset = nonNegative(all.get("t") ?? all.get("reset"));
    if (remaining !== undefined || reset !== undefined) return { remaining, reset };
  }
  for (const [remainingName, resetName] of SEPARATE_FIELDS) {
    const remaining = nonNegative(header(headers, remainingName));
    const reset = nonNegative(header(headers, resetName));
    if (remaining !== undefined || reset !== undefined) return { remaining, reset };
  }
  return undefined;
}

/**
 * The advice of one answer's headers (names in lower case, as undici gives them), or null when
 * they carry none.
 */
export function parseRateLimitHeaders(headers: Headers, nowMs: number): RateLimitAdvice | null {
  // Most APIs send none of these: this runs on every answer, so say so without allocating.
  if (!anyOf(headers)) return null;
  const advice: RateLimitAdvice = {};
  const policy = policyRate(header(headers, "ratelimit-policy"));
  if (policy !== undefined && policy > 0) advice.rate = policy;
  const left = remainingOf(headers);
  if (left !== undefined) {
    const seconds = resetSeconds(left.reset, nowMs);
    // With a policy pacing the sends, a reset at most a second away is a token bucket's next
    // token rounded up to whole seconds, not a reason to stop for a second.
    const brief = advice.rate !== undefined && seconds !== undefined && seconds <= 1;
    if (left.remaining === 0 && seconds !== undefined && seconds > 0 && !brief) {
      advice.pauseMs = Math.min(Math.ceil(seconds * 1000), MAX_PAUSE_MS);
    } else if (
      advice.rate === undefined &&
      left.remaining !== undefined &&
      seconds !== undefined &&
      seconds > 0
    ) {
      advice.rate = left.remaining / seconds;
    }
  }
  return advice.rate === undefined && advice.pauseMs === undefined ? null : advice;
}
