import { Cluster, Redis, type RedisOptions } from "ioredis";
import { parseRedisUrl } from "./redis-url.js";

export type RedisClient = Redis | Cluster;

/**
 * Opens a connection from `REDIS_URL` (see `parseRedisUrl`): standalone `redis://` or
 * `rediss://`, a Cluster from seed nodes with `redis+cluster://h1:p1,h2:p2`, or a master found
 * through Sentinel with `redis+sentinel://s1:p1,s2:p2/masterName`. A password in the URL is
 * used for the data nodes and for the sentinels.
 */
export function connectRedis(url: string, extra: RedisOptions = {}): RedisClient {
  const target = parseRedisUrl(url);
  const base: RedisOptions = {
    // Fail a command after a few reconnection attempts instead of queueing it forever: the
    // poll loop retries with backoff, and readiness reports Redis as down meanwhile.
    maxRetriesPerRequest: 3,
    // A connection that stays open but answers nothing (a black-holed network path) would
    // otherwise hang every command until the kernel gives up, minutes later, while readiness
    // still said ready. A command timing out counts as Redis down; retrying is safe because
    // every write is compare-and-set. Blocking reads (XREAD BLOCK) must block for less.
    commandTimeout: 5000,
    keepAlive: 10_000,
    enableAutoPipelining: true,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2000),
    connectionName: "idunox-poller",
    // A primary demoted by a failover (or a replica named by mistake) answers writes with
    // READONLY while the connection itself stays up, so nothing else would make the client
    // look again. Reconnecting asks the sentinels (or the URL's host) for the primary anew.
    // Behind Sentinel the refused command is also resent there (2): a refused write did not
    // happen, and every write of the daemon is a compare-and-set, so sending it again is safe.
    // Without Sentinel the reconnection reaches the same host, so the command fails (1) and
    // READONLY is reported as such.
    reconnectOnError: (err) =>
      /^READONLY\b/.test(err.message) ? (target.mode === "sentinel" ? 2 : 1) : false,
    ...(target.tls ? { tls: {} } : {}),
    ...(target.username ? { username: target.username } : {}),
    ...(target.password ? { password: target.password } : {}),
    ...extra,
  };
  switch (target.mode) {
    case "standalone": {
      const [node] = target.hosts;
      return new Redis({ ...base, host: node?.host, port: node?.port, db: target.db });
    }
    case "cluster":
      return new Cluster(target.hosts, {
        redisOptions: base,
        enableAutoPipelining: true,
        clusterRetryStrategy: (attempt) => Math.min(100 * 2 ** attempt, 2000),
      });
    case "sentinel":
      return keepReconnecting(
        new Redis({
          ...base,
          sentinels: target.hosts,
          name: target.masterName ?? "mymaster",
          // Subscribes to the sentinels' +switch-master, so a failover moves the client to the
          // new primary at once instead of when the old connection finally errors out.
          failoverDetector: true,
          db: target.db,
          ...(target.password ? { sentinelPassword: target.password } : {}),
        }),
      );
  }
}

/**
 * ioredis 5.11 leaves the failover detector of a connection that died subscribed. When its
 * +switch-master arrives while the client is already reconnecting, it aborts that reconnection
 * and the client ends for good ("Connection is closed." on every command) although nobody
 * closed it: a daemon that survived the failover would never reach the new primary. Seen in
 * test/integration/failover.test.ts. Until ioredis releases the fix (redis/ioredis#2198), a
 * client that ends without our own quit() or disconnect() is connected again.
 */
function keepReconnecting(redis: Redis): Redis {
  let closedByUs = false;
  const quit = redis.quit.bind(redis);
  const disconnect = redis.disconnect.bind(redis);
  redis.quit = ((...args: Parameters<typeof quit>) => {
    closedByUs = true;
    return quit(...args);
  }) as typeof redis.quit;
  redis.disconnect = (reconnect = false) => {
    if (!reconnect) closedByUs = true;
    disconnect(reconnect);
  };
  redis.on("end", () => {
    if (closedByUs) return;
    setTimeout(() => {
      if (!closedByUs && redis.status === "end") redis.connect().catch(() => {});
    }, 50);
  });
  return redis;
}

/** True while the connection can serve commands. */
export function redisReady(redis: RedisClient): boolean {
  return redis.status === "ready";
}

/**
 * Deletes every key under `prefix`, with SCAN and UNLINK so Redis is never blocked for long.
 * For throwaway prefixes (the demo, tests, benchmarks); never point it at a live deployment.
 * On a Cluster it reaches the node the client asks, which holds a hash-tagged prefix entirely.
 */
export async function deleteKeysWithPrefix(redis: RedisClient, prefix: string): Promise<number> {
  let cursor = "0";
  let removed = 0;
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    cursor = next;
    if (keys.length > 0) removed += await redis.unlink(...keys);
  } while (cursor !== "0");
  return removed;
}
