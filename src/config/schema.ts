import { hostname } from "node:os";
import { z } from "zod";
import { parseRedisUrl } from "../store/redis-url.js";

/**
 * The settings table: one row per environment variable, with what a valid value looks like and
 * its default written as the env string. Defaults go through the same schema as real values,
 * so a default can never be something the validator would refuse, and the example file can be
 * checked against this table.
 */
export interface Setting<T> {
  readonly env: string;
  /** Completes "expected …" in a problem line. */
  readonly expect: string;
  readonly schema: z.ZodType<T, string>;
  readonly fallback: string | (() => string);
  /** How a bad value may be shown in a problem line; by default quoted and shortened. */
  readonly show?: (raw: string) => string;
}

interface Rule<T> {
  expect: string;
  schema: z.ZodType<T, string>;
  show?: (raw: string) => string;
}

function setting<T>(env: string, fallback: Setting<T>["fallback"], rule: Rule<T>): Setting<T> {
  return { env, fallback, ...rule };
}

function integer(min: number, max: number): Rule<number> {
  return {
    expect: `an integer from ${min} to ${max}`,
    // Digits only: Number() alone would take "", " ", "0x10" and "1e3" without complaint.
    schema: z.string().regex(/^\d+$/).transform(Number).pipe(z.int().min(min).max(max)),
  };
}

function decimal(min: number, max: number): Rule<number> {
  return {
    expect: `a number from ${min} to ${max}`,
    schema: z
      .string()
      .regex(/^(\d+(\.\d*)?|\.\d+)$/)
      .transform(Number)
      .pipe(z.number().min(min).max(max)),
  };
}

/** The refusal reason of a custom check; the problem line uses it instead of "expected …". */
function refuse(ctx: z.RefinementCtx, message: string): never {
  ctx.addIssue({ code: "custom", message });
  return z.NEVER;
}

/**
 * Replaces the password of `scheme://user:password@…` so a URL can be logged or echoed in a
 * problem line. Everything up to the last `@` counts as user info: a password holding an
 * unencoded `/` or `:` is then still hidden rather than half-shown.
 */
export function maskUrlPassword(raw: string): string {
  const start = raw.indexOf("://");
  const at = raw.lastIndexOf("@");
  if (start < 0 || at < start) return raw;
  const userinfo = raw.slice(start + 3, at);
  const colon = userinfo.indexOf(":");
  const masked = colon < 0 ? "[redacted]" : `${userinfo.slice(0, colon)}:[redacted]`;
  return `${raw.slice(0, start + 3)}${masked}${raw.slice(at)}`;
}

const apiUrl: Rule<string> = {
  expect: "an http(s) URL",
  show: (raw) => JSON.stringify(maskUrlPassword(raw)),
  schema: z.string().transform((raw, ctx) => {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      return refuse(ctx, "expected an http(s) URL");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      return refuse(ctx, "expected an http:// or https:// URL");
    }
    if (url.username !== "" || url.password !== "") {
      return refuse(ctx, "must not carry credentials (the key belongs in IDUNOX_API_KEY)");
    }
    // The client appends /v1/jobs/{jobId}; a query or fragment would end up in front of it.
    if (/[?#]/.test(raw)) return refuse(ctx, "must not have a query or a fragment");
    return url.href.replace(/\/+$/, "");
  }),
};

const redisUrl: Rule<string> = {
  expect: "a Redis URL",
  show: (raw) => JSON.stringify(maskUrlPassword(raw)),
  schema: z.string().transform((raw, ctx) => {
    try {
      parseRedisUrl(raw);
      return raw;
    } catch (err) {
      return refuse(ctx, (err as Error).message);
    }
  }),
};

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const logLevel: Rule<LogLevel> = {
  expect: `one of ${LOG_LEVELS.join(", ")}`,
  schema: z
    .string()
    .transform((s) => s.toLowerCase())
    .pipe(z.enum(LOG_LEVELS)),
};

const keyPrefix: Rule<string> = {
  expect: "a key prefix without spaces, at most 200 characters",
  schema: z
    .string()
    .max(200)
    .regex(/^[\x21-\x7e]+$/)
    .superRefine((prefix, ctx) => {
      // Redis Cluster hashes only the text between the first "{" and the next "}". Every key of
      // the daemon must land in one slot for its scripts to run, so a brace in the prefix has to
      // form exactly one non-empty tag; anything else would split the keys across slots.
      if (/[{}]/.test(prefix) && !/^[^{}]*\{[^{}]+\}[^{}]*$/.test(prefix)) {
        ctx.addIssue({
          code: "custom",
          message: "a brace must form one non-empty hash tag, e.g. {idunox}:jobs:",
        });
      }
    }),
};

const eventSource: Rule<string> = {
  expect: "a URI reference, e.g. urn:idunox:job-poller",
  // The characters RFC 3986 allows in a URI reference, with % only as part of an escape.
  schema: z.string().regex(/^(?:[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+$/),
};

const hostName: Rule<string> = {
  expect: "a host name or IP address",
  schema: z.string().regex(/^[A-Za-z0-9._:[\]-]{1,253}$/),
};

const replicaId: Rule<string> = {
  expect: "1 to 200 printable characters without spaces",
  schema: z.string().regex(/^[\x21-\x7e]{1,200}$/),
};

export const SCHEDULES = ["predictive", "backoff"] as const;
export type Schedule = (typeof SCHEDULES)[number];

const schedule: Rule<Schedule> = {
  expect: `one of ${SCHEDULES.join(", ")}`,
  schema: z
    .string()
    .transform((s) => s.toLowerCase())
    .pipe(z.enum(SCHEDULES)),
};

const flag: Rule<boolean> = {
  expect: "true or false",
  schema: z
    .string()
    .transform((s) => s.toLowerCase())
    .pipe(z.enum(["true", "false"]))
    .transform((s) => s === "true"),
};

/**
 * True when the URL's host can only be this machine: `localhost`, 127.0.0.0/8 or ::1. Plain
 * HTTP to such a host never crosses a network, so the key cannot be read on the way. WHATWG
 * URL parsing has already normalised the host (`127.1` -> `127.0.0.1`, `[0:0::1]` -> `[::1]`).
 */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  if (host === "localhost" || host === "[::1]") return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

const DAY_MS = 86_400_000;

/**
 * Every setting except the API key, which is read from one of two variables and never shown.
 * The property names are those of `Config`.
 */
export const SETTINGS = {
  apiUrl: setting("IDUNOX_API_URL", "https://api-test.idunox.com", apiUrl),
  redisUrl: setting("REDIS_URL", "redis://127.0.0.1:6379", redisUrl),
  logLevel: setting("LOG_LEVEL", "info", logLevel),
  keyPrefix: setting("POLLER_KEY_PREFIX", "idunox:jobs:", keyPrefix),
  minIntervalMs: setting("POLLER_MIN_INTERVAL_MS", "2000", integer(10, DAY_MS)),
  maxIntervalMs: setting("POLLER_MAX_INTERVAL_MS", "60000", integer(10, DAY_MS)),
  backoffFactor: setting("POLLER_BACKOFF_FACTOR", "2", decimal(1, 10)),
  jitter: setting("POLLER_JITTER", "0.2", decimal(0, 1)),
  schedule: setting("POLLER_SCHEDULE", "predictive", schedule),
  scheduleSyncMs: setting("POLLER_SCHEDULE_SYNC_MS", "5000", integer(100, 600_000)),
  concurrency: setting("POLLER_CONCURRENCY", "32", integer(1, 1024)),
  requestTimeoutMs: setting("POLLER_REQUEST_TIMEOUT_MS", "10000", integer(100, 120_000)),
  retries: setting("POLLER_RETRIES", "3", integer(0, 10)),
  maxBodyBytes: setting("POLLER_MAX_BODY_BYTES", "1048576", integer(1024, 64 * 1024 * 1024)),
  authRetryMs: setting("POLLER_AUTH_RETRY_MS", "30000", integer(100, DAY_MS)),
  notFoundGraceMs: setting("POLLER_NOT_FOUND_GRACE_MS", "60000", integer(0, 30 * DAY_MS)),
  failureAlertAfter: setting("POLLER_FAILURE_ALERT_AFTER", "10", integer(1, 1_000_000)),
  stateTtlMs: setting("POLLER_STATE_TTL_MS", "604800000", integer(60_000, 3650 * DAY_MS)),
  streamMaxLen: setting("POLLER_STREAM_MAXLEN", "1000000", integer(1000, 1_000_000_000)),
  eventSource: setting("POLLER_EVENT_SOURCE", "urn:idunox:job-poller", eventSource),
  httpPort: setting("POLLER_HTTP_PORT", "9464", integer(0, 65535)),
  httpHost: setting("POLLER_HTTP_HOST", "0.0.0.0", hostName),
  shutdownTimeoutMs: setting("POLLER_SHUTDOWN_TIMEOUT_MS", "10000", integer(100, 600_000)),
  leaseMs: setting("POLLER_LEASE_MS", "30000", integer(1000, DAY_MS)),
  // An id added by track() waits at most one interval for intake (then it is claimed at once),
  // and an intake call with nothing new is O(1): 100 ms keeps pickup p99 under 200 ms.
  intakeIntervalMs: setting("POLLER_INTAKE_INTERVAL_MS", "100", integer(10, 60_000)),
  // At most 1000: the claim script unpacks the batch into one Redis call.
  claimBatch: setting("POLLER_CLAIM_BATCH", "256", integer(1, 1000)),
  idleWakeMs: setting("POLLER_IDLE_WAKE_MS", "500", integer(10, 60_000)),
  // Requests/s for the API key, shared by every replica on the prefix; 0: no fixed limit.
  rateLimit: setting("POLLER_RATE_LIMIT", "0", decimal(0, 1_000_000)),
  // The bucket of that budget; 0 stands for the default: the limit, at least 1 (see loadConfig).
  rateBurst: setting("POLLER_RATE_BURST", "0", integer(0, 1_000_000)),
  replicaId: setting("POLLER_REPLICA_ID", () => `${hostname()}-${process.pid}`, replicaId),
  // For test rigs only: lets an http:// IDUNOX_API_URL point at a host that is not loopback.
  allowInsecureHttp: setting("POLLER_ALLOW_INSECURE_HTTP", "false", flag),
} as const;

export type SettingKey = keyof typeof SETTINGS;
export type ParsedSettings = {
  -readonly [K in SettingKey]: z.output<(typeof SETTINGS)[K]["schema"]>;
};

export const API_KEY_ENV = "IDUNOX_API_KEY";
export const API_KEY_FILE_ENV = "IDUNOX_API_KEY_FILE";
export const CONFIG_FILE_ENV = "POLLER_CONFIG_FILE";

/** Every variable the daemon reads, in the order of the table. */
export const KNOWN_ENV_NAMES: readonly string[] = [
  ...Object.values(SETTINGS).map((s) => s.env),
  API_KEY_ENV,
  API_KEY_FILE_ENV,
  CONFIG_FILE_ENV,
];

/** The default of every table setting as its env string (dynamic defaults are computed now). */
export function defaultsAsEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of Object.values(SETTINGS)) {
    out[s.env] = typeof s.fallback === "function" ? s.fallback() : s.fallback;
  }
  return out;
}
