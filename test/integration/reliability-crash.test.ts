import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRng } from "../../src/sim/random.js";
import { type Simulator, startSimulator } from "../../src/sim/simulator.js";
import { keysFor } from "../../src/store/keys.js";
import { checkExactlyOnce, describeReport } from "../helpers/invariants.js";
import type { CliProcess } from "../helpers/processes.js";
import { cleanPrefix, redisClient, TEST_REDIS_URL, testPrefix, waitFor } from "../helpers/redis.js";
import {
  allEvents,
  daemonEnv,
  finalsOf,
  killHard,
  plannedJobs,
  runDaemon,
  startDaemonProcess,
  stopGracefully,
  submit,
  waitForFinals,
} from "../helpers/reliability.js";

/**
 * kill -9 at any instant: the daemon runs as a real process and is killed again and again at
 * random points of its work (while starting, claiming, polling, writing), then left to finish.
 * Whatever the kills interrupted, every job's final status must be in the stream exactly once,
 * with per-job sequences that have no gap. The seed reproduces the jobs and the kill points.
 */
const SEED = Number(process.env.RELIABILITY_SEED ?? 20_260_420);
const API_KEY = "crash-test-key";
const JOBS = 240;
const BATCHES = 6;

describe("reliability: crash at any instant", () => {
  let sim: Simulator;
  let redis: Redis;
  const prefix = testPrefix();
  const keys = keysFor(prefix);
  const daemons: CliProcess[] = [];

  beforeAll(async () => {
    sim = await startSimulator({ apiKey: API_KEY, seed: SEED });
    redis = redisClient();
  });

  afterAll(async () => {
    await Promise.all(daemons.map(killHard));
    await cleanPrefix(redis, prefix);
    redis.disconnect();
    await sim.close();
  });

  it("SIGKILLs the daemon 8-15 times at random moments without losing or duplicating events", async () => {
    const rng = createRng(SEED);
    const jobs = plannedJobs(rng, JOBS, 0.3);
    const batchSize = Math.ceil(JOBS / BATCHES);
    const batches = Array.from({ length: BATCHES }, (_, i) =>
      jobs.slice(i * batchSize, (i + 1) * batchSize),
    );
    const env = daemonEnv({
      apiUrl: sim.url,
      apiKey: API_KEY,
      redisUrl: TEST_REDIS_URL,
      prefix,
      replicaId: "crash",
    });

    // The first batch is waiting before any daemon runs: jobs added while it is down count too.
    // The others arrive spread over the kills, so every daemon finds work to be killed in.
    await submit(sim, redis, keys.pending, batches[0] ?? []);
    const kills = rng.int(8, 15);
    const batchAt = (i: number) =>
      batches.findIndex((_, b) => b > 0 && Math.floor((b * kills) / BATCHES) === i);
    const killedAt: string[] = [];
    let starts = 0;
    let killedWhileWorking = 0;
    for (let i = 0; i < kills; i++) {
      const daemon = runDaemon(env);
      daemons.push(daemon);
      starts++;
      const batch = batchAt(i);
      if (batch > 0) await submit(sim, redis, keys.pending, batches[batch] ?? []);
      // The kill point is counted in log lines: 0 is "just spawned", a few is mid-startup
      // (config, Redis, scripts), more is somewhere among claims, polls and writes.
      const lines = rng.int(0, 3) === 0 ? rng.int(0, 3) : rng.int(3, 50);
      const reached = await waitFor(() => daemon.lines.length >= lines, {
        timeoutMs: 2500,
        intervalMs: 5,
        what: `${lines} log lines`,
      }).then(
        () => true,
        () => false,
      );
      const working = daemon.lines.some((l) => l.includes('"msg":"poller started"'));
      await killHard(daemon);
      if (working) killedWhileWorking++;
      killedAt.push(reached ? `${lines}` : `${lines}(timeout)`);
    }

    const final = await startDaemonProcess(env);
    daemons.push(final);
    starts++;
    const finals = finalsOf(jobs);
    await waitForFinals(redis, keys.events, finals, 45_000);

    const events = await allEvents(redis, keys.events);
    const report = checkExactlyOnce({
      events,
      finals,
      pending: await redis.smembers(keys.pending),
      alerts: await allEvents(redis, keys.alerts),
    });
    const stats = sim.stats();
    console.log(
      `[reliability-crash] seed=${SEED} jobs=${JOBS} kills=${kills} (${killedWhileWorking} after startup) starts=${starts} ` +
        `kill points (log lines)=${killedAt.join(",")} requests=${stats.requests} ` +
        `overlaps=${stats.overlapsPerJob}; ${describeReport(report)}`,
    );

    expect(report.problems).toEqual([]);
    expect(report.finished).toBe(JOBS);
    expect(await redis.scard(keys.pending)).toBe(0);
    // The lease held across every kill: a job was never polled by two processes at once.
    expect(stats.overlapsPerJob).toBe(0);
    expect(await stopGracefully(final)).toBe(0);
  });
});
