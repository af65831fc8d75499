import { Redis } from "ioredis";
import { Pool } from "undici";
import { reportRedisErrors } from "../lib/redis.js";
import { subjectEnv } from "./env.js";

/**
 * The poller most teams write first: read the whole pending set, then poll every job with
 * bounded concurrency, compare the status with the last one in a hash, and on a change append
 * an event and remember the new status. One sweep after another, no per-job backoff.
 *
 * What it leaves out, and the daemon pays for: schema validation, leases (two replicas poll and
 * emit everything twice), atomicity (a crash between XADD and HSET emits the event again on
 * restart), final states and SLA rules, and events in the CloudEvents shape.
 */
const env = subjectEnv();
const redis = new Redis(env.redisUrl, { maxRetriesPerRequest: 3 });
reportRedisErrors(redis, env.redisUrl, "naive peer");
const pool = new Pool(env.simUrl, { connections: env.concurrency });
const headers = { "x-api-key": env.apiKey };
const keys = {
  pending: `${env.prefix}pending`,
  state: `${env.prefix}naive:state`,
  events: `${env.prefix}events`,
};
let stopping = false;

async function pollOne(id: string): Promise<void> {
  const { statusCode, body } = await pool.request({
    path: `/v1/jobs/${id}`,
    method: "GET",
    headers,
  });
  const text = await body.text();
  if (statusCode !== 200) return;
  const job = JSON.parse(text) as { status?: unknown };
  const status = String(job.status);
  const last = await redis.hget(keys.state, id);
  if (last === status) return;
  await redis.xadd(keys.events, "MAXLEN", "~", 1_000_000, "*", "subject", id, "data", text);
  await redis.hset(keys.state, id, status);
}

async function sweep(ids: readonly string[]): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (!stopping && next < ids.length) {
      const id = ids[next++] as string;
      await pollOne(id).catch((err: unknown) => {
        process.stderr.write(`poll failed: ${(err as Error).message}\n`);
      });
    }
  };
  await Promise.all(Array.from({ length: env.concurrency }, worker));
}

process.once("SIGTERM", () => {
  stopping = true;
});
while (!stopping) {
  const ids = await redis.smembers(keys.pending);
  if (ids.length === 0) await new Promise((r) => setTimeout(r, env.minIntervalMs));
  else await sweep(ids);
}
await pool.close();
redis.disconnect();
