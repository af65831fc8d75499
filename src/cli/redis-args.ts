import { connectRedis, type RedisClient } from "../store/connection.js";
import { Store } from "../store/store.js";

export const REDIS_OPTIONS = {
  "redis-url": { type: "string" },
  prefix: { type: "string" },
} as const;

export const REDIS_HELP = `  --redis-url URL   Redis to use (default: $REDIS_URL or redis://127.0.0.1:6379)
  --prefix PREFIX   key prefix (default: $POLLER_KEY_PREFIX or idunox:jobs:)`;

/**
 * The operator commands need only Redis and the prefix, not the whole daemon configuration
 * (no API key), so they read just these two settings.
 */
export function openStore(values: {
  "redis-url"?: string | undefined;
  prefix?: string | undefined;
}): {
  redis: RedisClient;
  store: Store;
} {
  const url = values["redis-url"] ?? process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
  const prefix = values.prefix ?? process.env.POLLER_KEY_PREFIX ?? "idunox:jobs:";
  const redis = connectRedis(url, {
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
    enableAutoPipelining: false,
  });
  // Connection errors surface through the failed command; no unhandled 'error' events.
  redis.on("error", () => {});
  const store = new Store(redis, { prefix, streamMaxLen: 1_000_000, stateTtlMs: 0 });
  return { redis, store };
}
