import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { deleteKeysWithPrefix } from "../../src/store/connection.js";
import { describeRedisError } from "../../src/store/redis-errors.js";

/** Server-wide counters; only their deltas around a window mean anything. */
export interface RedisSnapshot {
  /** Command name -> calls, script-internal calls included (that is how commandstats counts). */
  calls: Map<string, number>;
  /** used_cpu_user + used_cpu_sys of the server, in microseconds. */
  cpuUs: number;
}

/** The driver's own INFO calls are not the subject's work. */
const DRIVER_COMMANDS = new Set(["info"]);

export async function snapshotRedis(redis: Redis): Promise<RedisSnapshot> {
  const [stats, cpu] = await Promise.all([redis.info("commandstats"), redis.info("cpu")]);
  const calls = new Map<string, number>();
  for (const line of stats.split("\n")) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (m?.[1] !== undefined && !DRIVER_COMMANDS.has(m[1])) calls.set(m[1], Number(m[2]));
  }
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(cpu)?.[1] ?? 0);
  return { calls, cpuUs: (field("used_cpu_user") + field("used_cpu_sys")) * 1e6 };
}

export interface RedisDelta {
  commands: number;
  cpuUs: number;
  /** The commands that made up the delta, largest first (for the report). */
  top: Array<[string, number]>;
}

export function redisDelta(before: RedisSnapshot, after: RedisSnapshot): RedisDelta {
  const byCommand: Array<[string, number]> = [];
  let commands = 0;
  for (const [name, calls] of after.calls) {
    const d = calls - (before.calls.get(name) ?? 0);
    if (d > 0) {
      byCommand.push([name, d]);
      commands += d;
    }
  }
  byCommand.sort((a, b) => b[1] - a[1]);
  return { commands, cpuUs: after.cpuUs - before.cpuUs, top: byCommand.slice(0, 8) };
}

export function benchPrefix(scenario: string): string {
  return `bench:${scenario}:${randomUUID().slice(0, 8)}:`;
}

/** Deletes every key under `prefix` (SCAN + UNLINK, so Redis is never blocked for long). */
export function cleanPrefix(redis: Redis, prefix: string): Promise<number> {
  return deleteKeysWithPrefix(redis, prefix);
}

/** Lowercase random UUIDs: the fast simulator answers any of them with a `running` job. */
export function jobIds(n: number): string[] {
  return Array.from({ length: n }, () => randomUUID());
}

/** SADD in pipelined batches, so seeding a million members takes seconds, not minutes. */
export async function seedPending(
  redis: Redis,
  key: string,
  ids: readonly string[],
): Promise<void> {
  const BATCH = 10_000;
  const PER_PIPELINE = 10;
  for (let start = 0; start < ids.length; start += BATCH * PER_PIPELINE) {
    const pipeline = redis.pipeline();
    for (let i = start; i < Math.min(ids.length, start + BATCH * PER_PIPELINE); i += BATCH) {
      pipeline.sadd(key, ...ids.slice(i, i + BATCH));
    }
    const results = await pipeline.exec();
    const failed = results?.find(([err]) => err !== null);
    if (failed) throw failed[0];
  }
}

/** MEMORY USAGE with every element sampled (SAMPLES 0); 0 for a missing key. */
export async function memoryUsage(redis: Redis, key: string): Promise<number> {
  const bytes = (await redis.call("MEMORY", "USAGE", key, "SAMPLES", "0")) as number | null;
  return bytes ?? 0;
}

/**
 * The `error` listener of a benchmark's own clients: without one ioredis prints "Unhandled
 * error event" with a stack on every reconnection attempt. One line per distinct problem.
 */
export function reportRedisErrors(client: Redis, url: string, who: string): void {
  const seen = new Set<string>();
  client.on("error", (err: unknown) => {
    const line = describeRedisError(err, url);
    if (seen.has(line)) return;
    seen.add(line);
    process.stderr.write(`${who}: ${line}\n`);
  });
}
