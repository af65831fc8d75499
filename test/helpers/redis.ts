import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { deleteKeysWithPrefix } from "../../src/store/connection.js";

export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

/** A fresh key prefix per test, so tests never see each other's keys. */
export function testPrefix(): string {
  return `test:${randomUUID()}:`;
}

export function redisClient(url = TEST_REDIS_URL): Redis {
  return new Redis(url, { maxRetriesPerRequest: 3 });
}

/** Deletes every key under the prefix (SCAN, not KEYS, so a shared Redis is not blocked). */
export async function cleanPrefix(redis: Redis, prefix: string): Promise<void> {
  await deleteKeysWithPrefix(redis, prefix);
}

/** Waits until `check` returns a value other than undefined/false, polling, with a deadline. */
export async function waitFor<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? "condition"}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 25));
  }
}
