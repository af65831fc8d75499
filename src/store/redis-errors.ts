import { connect as tlsConnect } from "node:tls";
import { maskUrlPassword, parseRedisUrl } from "../config/index.js";
import { pingReply } from "../lib/net.js";
import type { RedisClient } from "./connection.js";

/**
 * The one place that turns a Redis failure into one line an operator can act on. Every command
 * (the daemon's logs and /readyz, `status`, `track`, `tail`, the demo) prints these lines, so a
 * new kind of failure (an ACL refusal, say) is taught here once and shows up everywhere.
 * A line names the Redis address with its password masked, never the password.
 */

export type RedisProblemKind =
  | "refused"
  | "host_not_found"
  | "timeout"
  | "closed"
  | "auth_required"
  | "auth_failed"
  | "tls_failed"
  | "tls_not_spoken"
  | "tls_expected"
  | "not_cluster"
  | "is_cluster"
  | "not_sentinel"
  | "loading"
  | "other";

export interface RedisProblem {
  kind: RedisProblemKind;
  /** One line, no newline, no stack. */
  line: string;
}

interface Rule {
  kind: RedisProblemKind;
  /** Tested against the error's code and the messages of the error and what it wraps. */
  match: (text: string, codes: readonly string[]) => boolean;
  line: (
    address: string,
    ctx: { waitedMs: number | undefined; codes: readonly string[] },
  ) => string;
}

const has = (re: RegExp) => (text: string) => re.test(text);
const code =
  (...names: string[]) =>
  (_text: string, codes: readonly string[]) =>
    codes.some((c) => names.includes(c));

/** First match wins: the specific server replies before the generic socket errors. */
const RULES: readonly Rule[] = [
  {
    kind: "auth_required",
    match: has(/\bNOAUTH\b/),
    line: (a) =>
      `Redis at ${a} requires a password (NOAUTH): put it in the URL, e.g. redis://:PASSWORD@host:port`,
  },
  {
    kind: "auth_failed",
    match: has(/\bWRONGPASS\b|invalid password|invalid username-password/i),
    line: (a) => `Redis at ${a} refused the user or password in the URL (WRONGPASS)`,
  },
  {
    kind: "not_cluster",
    match: has(/cluster support disabled/i),
    line: (a) =>
      `${a} asks for a Redis Cluster, but the server there is a standalone Redis (cluster support disabled): use redis:// instead`,
  },
  {
    kind: "is_cluster",
    match: has(/^(MOVED|ASK) \d+ |\bCLUSTERDOWN\b/m),
    line: (a) =>
      `Redis at ${a} is a Cluster node (it answered MOVED): use redis+cluster://host:port,... instead`,
  },
  {
    kind: "not_sentinel",
    match: has(/unknown command .sentinel./i),
    line: (a) => `${a} asks for Sentinel, but the servers listed there are not sentinels`,
  },
  {
    kind: "tls_not_spoken",
    match: (text, codes) =>
      codes.includes("ERR_SSL_WRONG_VERSION_NUMBER") ||
      /wrong version number|packet length too long/i.test(text),
    line: (a) => `TLS mismatch at ${a}: the server speaks plain Redis, not TLS (use redis://)`,
  },
  {
    kind: "tls_failed",
    match: (text, codes) =>
      codes.some((c) => /^ERR_(SSL|TLS)_|CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(c)) ||
      /certificate|handshake/i.test(text),
    line: (a, { codes }) =>
      `TLS handshake with Redis at ${a} failed (${codes.find((c) => c !== "") ?? "certificate not accepted"})`,
  },
  {
    kind: "refused",
    match: code("ECONNREFUSED"),
    line: (a) => `cannot reach Redis at ${a} (connection refused)`,
  },
  {
    kind: "host_not_found",
    match: code("ENOTFOUND", "EAI_AGAIN", "EAI_NONAME"),
    line: (a) => `cannot reach Redis at ${a} (host not found)`,
  },
  {
    kind: "timeout",
    match: (text, codes) => codes.includes("ETIMEDOUT") || /timed out|timeout/i.test(text),
    line: (a, { waitedMs }) =>
      `cannot reach Redis at ${a} (${waitedMs === undefined ? "no answer: timed out" : `no answer within ${seconds(waitedMs)}`})`,
  },
  {
    kind: "closed",
    match: (text, codes) =>
      codes.some((c) => c === "ECONNRESET" || c === "EPIPE") ||
      /connection is closed|max retries per request|stream isn't writeable/i.test(text),
    line: (a) => `cannot reach Redis at ${a} (connection closed by the server)`,
  },
  {
    kind: "loading",
    match: has(/^LOADING\b/m),
    line: (a) => `Redis at ${a} is still loading its data set`,
  },
];

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** The error and what ioredis wraps in it (a Cluster's last node error, a cause). */
function chain(err: unknown): Array<{ message: string; code: string }> {
  const out: Array<{ message: string; code: string }> = [];
  let current: unknown = err;
  for (let depth = 0; depth < 4 && current !== null && current !== undefined; depth++) {
    if (typeof current !== "object") {
      out.push({ message: String(current), code: "" });
      break;
    }
    const e = current as {
      message?: unknown;
      code?: unknown;
      lastNodeError?: unknown;
      cause?: unknown;
    };
    out.push({
      message: typeof e.message === "string" ? e.message : "",
      code: typeof e.code === "string" ? e.code : "",
    });
    current = e.lastNodeError ?? e.cause;
  }
  return out;
}

/** The address to show: the URL with its password masked. */
export function redisAddress(url: string): string {
  return maskUrlPassword(url);
}

export function classifyRedisError(
  err: unknown,
  url: string,
  opts: { waitedMs?: number } = {},
): RedisProblem {
  const links = chain(err);
  const text = links.map((l) => l.message).join("\n");
  const codes = links.map((l) => l.code).filter((c) => c !== "");
  const address = redisAddress(url);
  const ctx = { waitedMs: opts.waitedMs, codes };
  for (const rule of RULES) {
    if (rule.match(text, codes)) return { kind: rule.kind, line: rule.line(address, ctx) };
  }
  // An unknown reply: its first line only (a Redis error is one line; never a stack).
  const first = (links[0]?.message ?? "").split("\n")[0]?.slice(0, 200) || "unknown error";
  return { kind: "other", line: `Redis at ${address} failed: ${first}` };
}

/** One line for `err` met while using the Redis at `url`. */
export function describeRedisError(
  err: unknown,
  url: string,
  opts: { waitedMs?: number } = {},
): string {
  return classifyRedisError(err, url, opts).line;
}

/**
 * Like `classifyRedisError`, but when the error leaves open whether the two ends disagree on
 * TLS (a TLS client against a plain server just waits; a plain client against a TLS server is
 * hung up on), it asks the server once over a fresh socket. Standalone URLs only.
 */
export async function explainRedisError(
  err: unknown,
  url: string,
  opts: { waitedMs?: number; probeTimeoutMs?: number } = {},
): Promise<RedisProblem> {
  const problem = classifyRedisError(err, url, opts);
  if (problem.kind !== "timeout" && problem.kind !== "closed") return problem;
  let target: ReturnType<typeof parseRedisUrl>;
  try {
    target = parseRedisUrl(url);
  } catch {
    return problem;
  }
  const node = target.hosts[0];
  if (target.mode !== "standalone" || node === undefined) return problem;
  const timeoutMs = opts.probeTimeoutMs ?? 1000;
  const address = redisAddress(url);
  if (target.tls && (await speaksPlainRedis(node.host, node.port, timeoutMs))) {
    return {
      kind: "tls_not_spoken",
      line: `TLS mismatch at ${address}: the server speaks plain Redis, not TLS (use redis://)`,
    };
  }
  if (!target.tls && (await speaksTls(node.host, node.port, timeoutMs))) {
    return {
      kind: "tls_expected",
      line: `TLS mismatch at ${address}: the server expects TLS (use rediss://)`,
    };
  }
  return problem;
}

/** True when a PING over plain TCP gets a RESP reply (+PONG, or -NOAUTH and the like). */
async function speaksPlainRedis(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return /^[+-]/.test(await pingReply(host, port, timeoutMs));
}

/** True when a TLS handshake completes (the certificate is not checked: this only diagnoses). */
function speaksTls(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host, port, rejectUnauthorized: false, servername: undefined });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.on("error", () => done(false));
    socket.on("secureConnect", () => done(true));
  });
}

/**
 * Keeps the latest connection error a client emitted, and is its `error` listener: ioredis
 * prints "[ioredis] Unhandled error event" with a stack for any client without one. A failed
 * command often says only "Connection is closed."; the connection error says why.
 */
export function rememberRedisErrors(client: RedisClient): { last(): unknown } {
  let last: unknown;
  client.on("error", (err: unknown) => {
    last = err;
  });
  client.on("ready", () => {
    last = undefined;
  });
  return { last: () => last };
}

export interface RedisConnectionWatch {
  /** The current problem as one line, or null while the connection is ready. */
  readonly problem: string | null;
}

export interface RedisConnectionHooks {
  /** Once per distinct problem per outage: the first error, not every reconnection attempt. */
  down(problem: RedisProblem, err: unknown): void;
  /** When the connection is ready again after `down` was called; `downMs` since the first. */
  up(downMs: number): void;
  /** Every error, for debug logs. */
  each?(err: unknown): void;
}

/**
 * Follows a long-lived client (the daemon's) and is its `error` listener. ioredis reconnects
 * by itself and emits an error per attempt; an operator wants one line saying what is wrong
 * when it starts, and one when it is over, so repeats within one outage are not reported.
 */
export function watchRedisConnection(
  client: RedisClient,
  url: string,
  hooks: RedisConnectionHooks,
  now: () => number = Date.now,
): RedisConnectionWatch {
  let problem: string | null = null;
  let downSince: number | null = null;
  let reported = new Set<string>();
  // Bumped when the connection is ready: an explanation that finishes after that is stale.
  let epoch = 0;
  client.on("error", (err: unknown) => {
    hooks.each?.(err);
    downSince ??= now();
    problem ??= classifyRedisError(err, url).line;
    const mine = epoch;
    explainRedisError(err, url).then(
      (explained) => {
        if (mine !== epoch) return;
        problem = explained.line;
        if (reported.has(explained.line)) return;
        reported.add(explained.line);
        hooks.down(explained, err);
      },
      () => {},
    );
  });
  client.on("ready", () => {
    epoch += 1;
    if (reported.size > 0 && downSince !== null) hooks.up(now() - downSince);
    problem = null;
    downSince = null;
    reported = new Set();
  });
  return {
    get problem() {
      return problem;
    },
  };
}

/** What connecting to `url` involves, for the log line that says it failed. */
export function redisAttempt(url: string): string {
  try {
    const t = parseRedisUrl(url);
    const hosts = t.hosts.map((h) => `${h.host}:${h.port}`).join(",");
    const tls = t.tls ? " over TLS" : "";
    if (t.mode === "cluster") return `ask the cluster seed nodes ${hosts}${tls} for the slot map`;
    if (t.mode === "sentinel") {
      return `ask the sentinels ${hosts}${tls} for master "${t.masterName ?? "mymaster"}"`;
    }
    return `connect to ${hosts}${tls}${t.password === null ? "" : " with a password"}, db ${t.db}`;
  } catch {
    return "connect";
  }
}
