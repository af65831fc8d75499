import { connectRedis, type RedisClient } from "../store/connection.js";
import {
  explainRedisError,
  type RedisProblem,
  rememberRedisErrors,
} from "../store/redis-errors.js";
import { Store } from "../store/store.js";

export const REDIS_OPTIONS = {
  "redis-url": { type: "string" },
  prefix: { type: "string" },
} as const;

export const REDIS_HELP = `  --redis-url URL   Redis to use (default: $REDIS_URL or redis://127.0.0.1:6379)
  --prefix PREFIX   key prefix (default: $POLLER_KEY_PREFIX or idunox:jobs:)`;

/**
 * How long an operator command waits for Redis before it gives up with one line. Short: a
 * person is waiting, and a Redis that has not answered in this long is down or misconfigured.
 */
export const COMMAND_REDIS_WAIT_MS = 3000;

/** A Redis failure already put into one line; main prints its message and exits 1. */
export class RedisCommandError extends Error {
  readonly code = "REDIS_FAILED";

  constructor(readonly problem: RedisProblem) {
    super(problem.line);
  }
}

/**
 * Runs `fn` with a store on the Redis of the operator commands, which need only Redis and the
 * prefix, not the whole daemon configuration (no API key). Redis is asked once (PING) before
 * `fn` runs, within COMMAND_REDIS_WAIT_MS; any Redis failure, then or later, comes out as a
 * RedisCommandError whose message is the one line of `explainRedisError`. The connection is
 * closed in every case.
 */
export async function withStore<T>(
  values: { "redis-url"?: string | undefined; prefix?: string | undefined },
  fn: (ctx: { redis: RedisClient; store: Store }) => Promise<T>,
): Promise<T> {
  const url = values["redis-url"] ?? process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
  const prefix = values.prefix ?? process.env.POLLER_KEY_PREFIX ?? "idunox:jobs:";
  const redis = connectRedis(url, {
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
    enableAutoPipelining: false,
    connectTimeout: COMMAND_REDIS_WAIT_MS,
    commandTimeout: COMMAND_REDIS_WAIT_MS,
  });
  const errors = rememberRedisErrors(redis);
  const store = new Store(redis, { prefix, streamMaxLen: 1_000_000, stateTtlMs: 0 });
  let checked = false;
  try {
    await withDeadline(redis.ping(), COMMAND_REDIS_WAIT_MS);
    checked = true;
    return await fn({ redis, store });
  } catch (err) {
    if (checked && !isRedisFailure(err)) throw err;
    const cause = errors.last() ?? err;
    const problem = await explainRedisError(cause, url, { waitedMs: COMMAND_REDIS_WAIT_MS });
    throw new RedisCommandError(problem);
  } finally {
    redis.disconnect();
  }
}

/** Asks the Redis at `url` once (PING); null when it answers, else what is wrong. */
export async function redisProblemAt(url: string): Promise<RedisProblem | null> {
  try {
    await withStore({ "redis-url": url }, async () => undefined);
    return null;
  } catch (err) {
    if (err instanceof RedisCommandError) return err.problem;
    throw err;
  }
}

/** Errors that come from Redis or the connection to it, as opposed to the command's own. */
function isRedisFailure(err: unknown): boolean {
  const name = (err as { name?: unknown } | null)?.name;
  return (
    err instanceof DeadlineError ||
    name === "ReplyError" ||
    name === "MaxRetriesPerRequestError" ||
    name === "ClusterAllFailedError" ||
    /Connection is closed|Command timed out|ECONN|EPIPE/.test((err as Error | null)?.message ?? "")
  );
}

class DeadlineError extends Error {
  readonly code = "ETIMEDOUT";
}

/**
 * ioredis may queue a command while it reconnects (a Cluster refreshing its slots, a Sentinel
 * looking for its master), so the wait is bounded here and not left to its options alone.
 */
function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError("timed out")), ms + 500);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}
