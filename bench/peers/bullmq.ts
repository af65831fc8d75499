import { DelayedError, type Job, Queue, Worker } from "bullmq";
import { Redis } from "ioredis";
import { Pool } from "undici";
import { reportRedisErrors } from "../lib/redis.js";
import { subjectEnv } from "./env.js";

/**
 * The same poller built on BullMQ: one job per tracked id, which polls the API, appends an
 * event on a status change, and puts itself back as a delayed job with backoff
 * (`moveToDelayed` + DelayedError, so each tracked id stays one BullMQ job). Leases, retries
 * and crash recovery come from BullMQ; the exactly-once write of state and event does not
 * (the XADD and the job update are two calls).
 */
interface PollData {
  id: string;
  status: string | null;
  intervalMs: number;
}

const env = subjectEnv();
const BACKOFF_FACTOR = Number(process.env["BENCH_BACKOFF_FACTOR"] ?? "1");
const connection = { url: env.redisUrl, maxRetriesPerRequest: null };
const bullPrefix = `${env.prefix}bull`;
const queue = new Queue<PollData>("poll", { connection, prefix: bullPrefix });
const redis = new Redis(env.redisUrl, { maxRetriesPerRequest: 3 });
reportRedisErrors(redis, env.redisUrl, "bullmq peer");
// BullMQ's own connections report through the Queue's and the Worker's error events.
queue.on("error", (err) => process.stderr.write(`queue error: ${err.message}\n`));
const pool = new Pool(env.simUrl, { connections: env.concurrency });
const headers = { "x-api-key": env.apiKey };
const events = `${env.prefix}events`;

const ids = await redis.smembers(`${env.prefix}pending`);
for (let i = 0; i < ids.length; i += 1000) {
  await queue.addBulk(
    ids.slice(i, i + 1000).map((id) => ({
      name: "poll",
      data: { id, status: null, intervalMs: env.minIntervalMs },
      opts: { jobId: id, removeOnComplete: true, removeOnFail: true },
    })),
  );
}

async function processJob(job: Job<PollData>, token?: string): Promise<void> {
  const { id, status, intervalMs } = job.data;
  const { statusCode, body } = await pool.request({
    path: `/v1/jobs/${id}`,
    method: "GET",
    headers,
  });
  const text = await body.text();
  let next = Math.min(intervalMs * BACKOFF_FACTOR, env.maxIntervalMs);
  if (statusCode === 200) {
    const current = String((JSON.parse(text) as { status?: unknown }).status);
    if (current !== status) {
      await redis.xadd(events, "MAXLEN", "~", 1_000_000, "*", "subject", id, "data", text);
      next = env.minIntervalMs;
      await job.updateData({ id, status: current, intervalMs: next });
    } else if (next !== intervalMs) {
      await job.updateData({ id, status, intervalMs: next });
    }
  }
  await job.moveToDelayed(Date.now() + next, token);
  throw new DelayedError();
}

const worker = new Worker<PollData>("poll", processJob, {
  connection,
  prefix: bullPrefix,
  concurrency: env.concurrency,
});
worker.on("error", (err) => process.stderr.write(`worker error: ${err.message}\n`));

await new Promise<void>((resolve) => process.once("SIGTERM", () => resolve()));
await worker.close();
await queue.close();
await pool.close();
redis.disconnect();
