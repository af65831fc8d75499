import { type Cluster, Redis, type RedisOptions } from "ioredis";
import { InvalidArgumentError } from "./errors.js";

export type RedisLike = Redis | Cluster;

/**
 * Opens a connection from a `redis://` or `rediss://` URL. Sentinel and Cluster deployments
 * pass their own ioredis instance instead (the daemon's `redis+sentinel://` URLs are not parsed
 * here, which keeps zod and the daemon's configuration out of the library).
 */
export function openRedis(url: string, extra: RedisOptions = {}): Redis {
  if (!/^rediss?:\/\//i.test(url)) {
    throw new InvalidArgumentError(
      "redis must be a redis:// or rediss:// URL, or an ioredis instance (Sentinel, Cluster)",
    );
  }
  const redis = new Redis(url, {
    maxRetriesPerRequest: 3,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2000),
    connectionName: "idunox-poller-client",
    ...(/^rediss:/i.test(url) ? { tls: {} } : {}),
    ...extra,
  });
  watchErrors(redis);
  return redis;
}

/**
 * An 'error' listener, so a connection that drops (Redis restarting, a failover) never crashes
 * the host process with an unhandled 'error' event. The failure reaches callers through the
 * commands that fail; ioredis reconnects on its own.
 */
export function watchErrors(redis: RedisLike): void {
  redis.on("error", () => {});
}

/**
 * A second connection for blocking reads (XREAD BLOCK, XREADGROUP BLOCK), which would hold up
 * every other command on a shared one. Same server and options; opened by the library, so the
 * library closes it.
 */
export function blockingDuplicate(redis: RedisLike, purpose: "wait" | "subscribe"): RedisLike {
  // A blocking read waits longer than a command timeout the caller may have configured. The
  // name says whose connection it is in CLIENT LIST.
  const name = `${(redis as Redis).options?.connectionName || "idunox-poller-client"}:${purpose}`;
  const copy = redis.isCluster
    ? (redis as Cluster).duplicate()
    : (redis as Redis).duplicate({
        commandTimeout: undefined,
        connectionName: name,
      } as RedisOptions);
  watchErrors(copy);
  return copy;
}
