import { Redis, Cluster, type RedisOptions, type ClusterOptions } from "ioredis";

export type RedisClient = Redis | Cluster;

/**
 * Opens a connection from `REDIS_URL`:
 * - `redis://[user:pass@]host:port[/db]`, `rediss://` for TLS;
 * - `redis+cluster://host:port,host:port` (or `rediss+cluster://`): seed nodes of a Cluster;
 * - `redis+sentinel://host:port,host:port/masterName` (or `rediss+sentinel://`).
 * A password in the URL is used for the data nodes (and the sentinels).
 */
export function connectRedis(url: string, extra: RedisOptions = {}): RedisClient {
  const base: RedisOptions = {
    // Fail a command after a few reconnection attempts instead of queueing forever: the
    // poller's loop retries with backoff, and readiness reports Redis down meanwhile.
    maxRetriesPerRequest: 3,
    enableAutoPipelining: true,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2000),
    connectionName: "idunox-poller",
    ...extra,
  };
  const parsed = new URL(url);
  const scheme = parsed.protocol.replace(/:$/, "");
  const tls = scheme.startsWith("rediss") ? { tls: {} } : {};
  const auth = {
    ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
  };
  if (scheme === "redis" || scheme === "rediss") {
    return new Redis(url, base);
  }
  const hosts = parseHosts(url);
  if (scheme.endsWith("+cluster")) {
    const options: ClusterOptions = {
      redisOptions: { ...base, ...tls, ...auth },
      enableAutoPipelining: true,
      clusterRetryStrategy: (attempt) => Math.min(100 * 2 ** attempt, 2000),
    };
    return new Cluster(hosts, options);
  }
  if (scheme.endsWith("+sentinel")) {
    const name = decodeURIComponent(parsed.pathname.replace(/^\//, "")) || "mymaster";
    return new Redis({
      ...base,
      ...tls,
      ...auth,
      sentinels: hosts,
      name,
      ...(auth.password ? { sentinelPassword: auth.password } : {}),
    });
  }
  throw new Error(`unsupported REDIS_URL scheme "${scheme}"`);
}

/** `scheme://[auth@]h1:p1,h2:p2/...` -> host list (URL() cannot parse a host list). */
function parseHosts(url: string): Array<{ host: string; port: number }> {
  const rest = url.replace(/^[a-z+]+:\/\//i, "");
  const hostPart = (rest.split("/")[0] ?? "").split("@").pop() ?? "";
  return hostPart
    .split(",")
    .filter(Boolean)
    .map((hp) => {
      const bracket = hp.match(/^\[(.+)\](?::(\d+))?$/);
      if (bracket) return { host: bracket[1] as string, port: Number(bracket[2] ?? 6379) };
      const [host, port] = hp.split(":");
      return { host: host ?? "127.0.0.1", port: Number(port ?? 6379) };
    });
}
