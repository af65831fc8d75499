import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import {
  API_KEY_ENV,
  API_KEY_FILE_ENV,
  CONFIG_FILE_ENV,
  isLoopbackHost,
  KNOWN_ENV_NAMES,
  type LogLevel,
  maskUrlPassword,
  type ParsedSettings,
  type Schedule,
  SETTINGS,
  type Setting,
} from "./schema.js";

// REDIS_URL parsing lives with the Redis connection; re-exported for the config's users.
export {
  parseRedisUrl,
  type RedisMode,
  type RedisTarget,
  RedisUrlError,
} from "../store/redis-url.js";
export {
  isLoopbackHost,
  KNOWN_ENV_NAMES,
  type LogLevel,
  maskUrlPassword,
  SCHEDULES,
  type Schedule,
} from "./schema.js";

export interface Config {
  apiUrl: string;
  apiKey: string;
  /** Set when the key came from a file, so the daemon can re-read it after a 401/403 (rotation). */
  apiKeyFile: string | null;
  redisUrl: string;
  logLevel: LogLevel;
  keyPrefix: string;
  minIntervalMs: number;
  maxIntervalMs: number;
  backoffFactor: number;
  jitter: number;
  /** predictive: learned phase durations place the polls; backoff: the exponential backoff only. */
  schedule: Schedule;
  /** How often learned durations are merged into Redis and read back (one round trip). */
  scheduleSyncMs: number;
  concurrency: number;
  requestTimeoutMs: number;
  retries: number;
  maxBodyBytes: number;
  authRetryMs: number;
  notFoundGraceMs: number;
  failureAlertAfter: number;
  stateTtlMs: number;
  streamMaxLen: number;
  eventSource: string;
  httpPort: number;
  httpHost: string;
  shutdownTimeoutMs: number;
  leaseMs: number;
  intakeIntervalMs: number;
  claimBatch: number;
  idleWakeMs: number;
  /** POLLER_RATE_LIMIT: requests/s for the key across every replica; 0 = no fixed limit. */
  rateLimit: number;
  /** POLLER_RATE_BURST as used: the limit (at least 1) when not set. */
  rateBurst: number;
  replicaId: string;
  /** Lets an http:// API URL name a host that is not loopback; the daemon warns at start. */
  allowInsecureHttp: boolean;
}

export class ConfigError extends Error {
  readonly code = "CONFIG_INVALID";
  readonly problems: string[];

  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** Values of one source: the environment or the config file. */
interface Source {
  values: Record<string, string>;
  /** The config file's path; null for the environment. */
  origin: string | null;
  /** Every name the source mentions, set or empty. */
  names: string[];
}

// A key file holds one key; anything this big is the wrong file, and is not read into memory.
const MAX_KEY_FILE_BYTES = 4096;
// What an HTTP header value may carry without undici refusing it (its error would be logged).
const KEY_SHAPE = /^[\x21-\x7e]+$/;

/**
 * Reads and validates the whole configuration. The environment wins over the optional JSON file
 * named by POLLER_CONFIG_FILE (same names as keys). An empty value counts as unset, so
 * `FOO=` in a compose file or `"FOO": ""` in the JSON file means "use the default".
 *
 * @throws ConfigError naming every bad setting at once, never showing the API key.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const envValues: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && value.trim() !== "") envValues[name] = value.trim();
  }

  const sources: Source[] = [{ values: envValues, origin: null, names: Object.keys(envValues) }];
  const filePath = envValues[CONFIG_FILE_ENV];
  const file = filePath === undefined ? null : readConfigFile(filePath, problems);
  if (file !== null) {
    // The file may not point at another file; unknownNames reports the attempt.
    delete file.values[CONFIG_FILE_ENV];
    sources.push(file);
  }
  const lookup = (name: string): { raw: string; origin: string | null } | undefined => {
    for (const source of sources) {
      const raw = source.values[name];
      if (raw !== undefined) return { raw, origin: source.origin };
    }
    return undefined;
  };

  const parsed: Partial<Record<string, unknown>> = {};
  for (const [key, setting] of Object.entries(SETTINGS) as Array<[string, Setting<unknown>]>) {
    const found = lookup(setting.env);
    const raw =
      found?.raw ??
      (typeof setting.fallback === "function" ? setting.fallback() : setting.fallback);
    const result = setting.schema.safeParse(raw);
    if (result.success) {
      parsed[key] = result.data;
      continue;
    }
    const issue = result.error.issues[0];
    const reason = issue?.code === "custom" ? issue.message : `expected ${setting.expect}`;
    const shown = setting.show ? setting.show(raw) : quote(raw);
    const where = found?.origin ? ` (set in ${found.origin})` : "";
    problems.push(`${setting.env}: ${reason}, got ${shown}${where}`);
  }
  const s = parsed as Partial<ParsedSettings>;

  if (s.minIntervalMs !== undefined && s.maxIntervalMs !== undefined) {
    if (s.maxIntervalMs < s.minIntervalMs) {
      problems.push(
        `POLLER_MAX_INTERVAL_MS: expected at least POLLER_MIN_INTERVAL_MS (${s.minIntervalMs}), got ${s.maxIntervalMs}`,
      );
    }
  }
  // A replica owns a job only while its lease runs. If one attempt may take half the lease,
  // there is no room left for a retry, its backoff and the Redis write that records the result:
  // leases would routinely expire mid-poll, another replica would take the job over, and this
  // replica's write would be refused as lease_lost. Exactly-once still holds (the write is
  // fenced), but the work is wasted and the takeover is noise, so the pair is refused up front.
  if (s.requestTimeoutMs !== undefined && s.leaseMs !== undefined) {
    if (s.requestTimeoutMs * 2 >= s.leaseMs) {
      problems.push(
        `POLLER_REQUEST_TIMEOUT_MS: expected less than half of POLLER_LEASE_MS (${s.leaseMs}), got ${s.requestTimeoutMs}`,
      );
    }
  }

  // The scripts touch several keys at once; on a Cluster they must all hash to one slot, which
  // only a `{tag}` in the prefix guarantees. Without it every script fails with CROSSSLOT.
  if (s.redisUrl !== undefined && s.keyPrefix !== undefined) {
    if (/^rediss?\+cluster:/.test(s.redisUrl) && !/\{[^{}]+\}/.test(s.keyPrefix)) {
      problems.push(
        `POLLER_KEY_PREFIX: a Redis Cluster needs a hash tag in the prefix, e.g. {idunox}:jobs:, got ${quote(s.keyPrefix)}`,
      );
    }
  }

  // The bucket holds one second of the limit unless told otherwise, and at least one permit.
  if (s.rateBurst === 0 && s.rateLimit !== undefined) {
    s.rateBurst = Math.max(1, Math.ceil(s.rateLimit));
  }

  // The key goes out in a header of every request: over plain HTTP anyone on the path reads it.
  // Only a loopback host is safe without TLS, unless a test rig says otherwise explicitly.
  if (s.apiUrl !== undefined && s.allowInsecureHttp === false) {
    const url = new URL(s.apiUrl);
    if (url.protocol === "http:" && !isLoopbackHost(url.hostname)) {
      problems.push(
        `IDUNOX_API_URL: an http:// URL would send the API key in clear text; use https://, or a loopback host (127.0.0.1, ::1, localhost), or set POLLER_ALLOW_INSECURE_HTTP=true on a test rig, got ${quote(maskUrlPassword(s.apiUrl))}`,
      );
    }
  }

  const key = readApiKey(lookup(API_KEY_ENV), lookup(API_KEY_FILE_ENV), problems);
  problems.push(...unknownNames(envValues, file));

  if (problems.length > 0) throw new ConfigError(problems);
  return assemble(s as ParsedSettings, key!.apiKey, key!.apiKeyFile);
}

// The compiler checks here that the settings table yields every field of Config.
function assemble(parsed: ParsedSettings, apiKey: string, apiKeyFile: string | null): Config {
  const { apiUrl, ...rest } = parsed;
  return { apiUrl, apiKey, apiKeyFile, ...rest };
}

/** The configuration in a form that is safe to log: no API key, no Redis password. */
export function redactedConfig(c: Config): Record<string, unknown> {
  return { ...c, apiKey: "[redacted]", redisUrl: maskUrlPassword(c.redisUrl) };
}

function quote(raw: string): string {
  return JSON.stringify(raw.length > 80 ? `${raw.slice(0, 77)}...` : raw);
}

function readConfigFile(path: string, problems: string[]): Source | null {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(resolve(path), "utf8"));
  } catch (err) {
    const why =
      err instanceof SyntaxError ? "is not valid JSON" : `cannot be read (${errCode(err)})`;
    problems.push(`${CONFIG_FILE_ENV}: the file ${quote(path)} ${why}`);
    return null;
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    problems.push(
      `${CONFIG_FILE_ENV}: the file ${quote(path)} must hold one JSON object of settings`,
    );
    return null;
  }
  const values: Record<string, string> = {};
  for (const [name, value] of Object.entries(data)) {
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") {
      const text = String(value).trim();
      if (text !== "") values[name] = text;
    } else if (value !== null) {
      const kind = Array.isArray(value) ? "an array" : "an object";
      problems.push(`${name}: expected a string or a number, got ${kind} (set in ${path})`);
    }
  }
  return { values, origin: path, names: Object.keys(data) };
}

function readApiKey(
  direct: { raw: string; origin: string | null } | undefined,
  file: { raw: string; origin: string | null } | undefined,
  problems: string[],
): { apiKey: string; apiKeyFile: string | null } | null {
  if (direct !== undefined && file !== undefined) {
    problems.push(`${API_KEY_ENV}, ${API_KEY_FILE_ENV}: set exactly one of them, not both`);
    return null;
  }
  if (direct === undefined && file === undefined) {
    problems.push(
      `${API_KEY_ENV}: required (or ${API_KEY_FILE_ENV} with the path of a file that holds the key)`,
    );
    return null;
  }
  if (direct !== undefined) {
    if (!KEY_SHAPE.test(direct.raw)) {
      problems.push(
        `${API_KEY_ENV}: expected printable ASCII without spaces (the value is not shown)`,
      );
      return null;
    }
    return { apiKey: direct.raw, apiKeyFile: null };
  }
  const path = file!.raw;
  const result = readApiKeyFile(path);
  if (!result.ok) {
    problems.push(`${API_KEY_FILE_ENV}: ${result.problem}`);
    return null;
  }
  return { apiKey: result.key, apiKeyFile: path };
}

/**
 * Reads the key from a mounted secret file, trimmed. The daemon calls it again after a 401/403
 * to pick up a rotated key. A problem names the file but never shows what is in it.
 */
export function readApiKeyFile(
  path: string,
): { ok: true; key: string } | { ok: false; problem: string } {
  let text: string;
  try {
    const buf = readFileSync(resolve(path));
    if (buf.length > MAX_KEY_FILE_BYTES) {
      return { ok: false, problem: `the file ${quote(path)} is too large to hold one key` };
    }
    text = buf.toString("utf8").trim();
  } catch (err) {
    return { ok: false, problem: `cannot read the file ${quote(path)} (${errCode(err)})` };
  }
  if (text === "") return { ok: false, problem: `the file ${quote(path)} is empty` };
  if (!KEY_SHAPE.test(text)) {
    return {
      ok: false,
      problem: `the file ${quote(path)} must hold only the key, printable ASCII without spaces (contents not shown)`,
    };
  }
  return { ok: true, key: text };
}

function unknownNames(envValues: Record<string, string>, file: Source | null): string[] {
  const known = KNOWN_ENV_NAMES.filter((n) => n.startsWith("POLLER_"));
  const problems: string[] = [];
  const report = (name: string, where: string) => {
    const guess = closest(name, KNOWN_ENV_NAMES);
    const hint = guess ? ` (did you mean ${guess}?)` : "";
    problems.push(
      `${name}: unknown setting${where}${hint}; known POLLER_* settings: ${known.join(", ")}`,
    );
  };
  for (const name of Object.keys(envValues)) {
    if (name.startsWith("POLLER_") && !KNOWN_ENV_NAMES.includes(name)) report(name, "");
  }
  // The file is the daemon's own: every name in it must be known, not only POLLER_* ones.
  if (file !== null) {
    for (const name of file.names) {
      if (name === CONFIG_FILE_ENV) {
        problems.push(`${name}: cannot be set inside the config file (set in ${file.origin})`);
      } else if (!KNOWN_ENV_NAMES.includes(name)) {
        report(name, ` (set in ${file.origin})`);
      }
    }
  }
  return problems;
}

/** The known name within edit distance 2 of a typo, if there is exactly one best. */
function closest(name: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = 3;
  for (const c of candidates) {
    const d = editDistance(name, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row.push(Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost));
    }
    prev = row;
  }
  return prev[b.length]!;
}

function errCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "unknown error";
}
