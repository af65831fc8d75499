export type RedisMode = "standalone" | "cluster" | "sentinel";

/** REDIS_URL taken apart, ready to become ioredis options. */
export interface RedisTarget {
  mode: RedisMode;
  tls: boolean;
  /** One for standalone; the seed nodes for cluster; the sentinels for sentinel. */
  hosts: Array<{ host: string; port: number }>;
  username: string | null;
  password: string | null;
  /** Database number (standalone and sentinel); always 0 on a cluster. */
  db: number;
  /** Sentinel only: the name of the monitored master. */
  masterName: string | null;
}

export class RedisUrlError extends Error {
  readonly code = "REDIS_URL_INVALID";
}

const REDIS_URL = /^(rediss?)(?:\+(cluster|sentinel))?:\/\/(?:([^@/]*)@)?([^/?#]*)(?:\/([^?#]*))?$/;
const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::(\d{1,5}))?$/;

/**
 * Parses `redis[s][+cluster|+sentinel]://[user[:password]@]host[:port][,host[:port]…][/path]`.
 * The path is the database number for standalone, the master name for sentinel, and empty for
 * a cluster. Error messages never contain the password.
 */
export function parseRedisUrl(raw: string): RedisTarget {
  const m = REDIS_URL.exec(raw);
  if (m === null) {
    throw new RedisUrlError(
      "expected redis://, rediss://, redis[s]+cluster:// or redis[s]+sentinel:// followed by host[:port] (no query string)",
    );
  }
  const [, scheme, variant, userinfo, hostList = "", path = ""] = m;
  const mode: RedisMode =
    variant === "cluster" ? "cluster" : variant === "sentinel" ? "sentinel" : "standalone";
  const defaultPort = mode === "sentinel" ? 26379 : 6379;

  const hosts: RedisTarget["hosts"] = [];
  for (const item of hostList.split(",")) {
    const h = HOST_PORT.exec(item);
    const port = h?.[3] === undefined ? defaultPort : Number(h[3]);
    if (h === null || port < 1 || port > 65535) {
      throw new RedisUrlError(`expected host[:port] entries, got "${item}" in the host list`);
    }
    hosts.push({ host: h[1] ?? h[2] ?? "", port });
  }
  if (mode === "standalone" && hosts.length > 1) {
    throw new RedisUrlError("a list of hosts needs redis+cluster:// or redis+sentinel://");
  }

  let username: string | null = null;
  let password: string | null = null;
  if (userinfo !== undefined && userinfo !== "") {
    const colon = userinfo.indexOf(":");
    try {
      username = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon)) || null;
      password = colon < 0 ? null : decodeURIComponent(userinfo.slice(colon + 1)) || null;
    } catch {
      throw new RedisUrlError("the user info is not valid percent-encoding");
    }
  }

  let db = 0;
  let masterName: string | null = null;
  if (mode === "sentinel") {
    if (!/^[A-Za-z0-9._-]+$/.test(path)) {
      throw new RedisUrlError(
        "redis+sentinel:// needs the master name as its path, e.g. redis+sentinel://s1:26379,s2:26379/mymaster",
      );
    }
    masterName = path;
  } else if (mode === "cluster") {
    if (path !== "")
      throw new RedisUrlError("a cluster URL takes no path (a cluster has db 0 only)");
  } else if (path !== "") {
    if (!/^\d{1,5}$/.test(path)) throw new RedisUrlError("the path must be a database number");
    db = Number(path);
  }

  return { mode, tls: scheme === "rediss", hosts, username, password, db, masterName };
}
