import { createHash } from "node:crypto";
import { type Cluster, Redis, type RedisOptions } from "ioredis";
import { loadScriptSources, type ScriptName } from "../store/scripts.js";
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

const shas = new Map<ScriptName, { sha: string; lua: string; numberOfKeys: number }>();

/**
 * Runs one of the daemon's Lua scripts by EVALSHA, loading it on NOSCRIPT. Not through
 * `defineCommand`, which would add methods to an ioredis instance the caller owns.
 */
export async function runScript(
  redis: RedisLike,
  name: ScriptName,
  keys: readonly string[],
  args: ReadonlyArray<string | number>,
): Promise<unknown> {
  let script = shas.get(name);
  if (!script) {
    const source = loadScriptSources().get(name);
    if (!source) throw new Error(`missing Lua script ${name}`);
    const sha = createHash("sha1").update(source.lua).digest("hex");
    script = { sha, lua: source.lua, numberOfKeys: source.numberOfKeys };
    shas.set(name, script);
  }
  if (keys.length !== script.numberOfKeys) {
    throw new Error(`${name} takes ${script.numberOfKeys} keys, got ${keys.length}`);
  }
  try {
    return await redis.evalsha(script.sha, keys.length, ...keys, ...args);
  } catch (err) {
    if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw err;
    return await redis.eval(script.lua, keys.length, ...keys, ...args);
  }
}
