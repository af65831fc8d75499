import { Redis } from "ioredis";

/**
 * The integration tests need a real Redis. Fail once, early, with the command that starts one,
 * instead of a wall of ECONNREFUSED from every test.
 */
export default async function setup(): Promise<void> {
  const url = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
  const redis = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  try {
    await redis.connect();
    await redis.ping();
  } catch {
    throw new Error(
      `Redis is not answering at ${url}. Start one with:\n` +
        '  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no\n' +
        "or set TEST_REDIS_URL.",
    );
  } finally {
    redis.disconnect();
  }
}
