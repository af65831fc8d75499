import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Simulator, startSimulator } from "../../src/sim/simulator.js";
import { allReached } from "../helpers/daemon.js";
import { type CliProcess, runCli } from "../helpers/processes.js";
import { cleanPrefix, redisClient, TEST_REDIS_URL, testPrefix, waitFor } from "../helpers/redis.js";
import { readAll, readUntil } from "../helpers/streams.js";

const KEY = `sim-${randomUUID()}`;
const LEASE_MS = 15_000;
const MAX_INTERVAL_MS = 500;
const JOBS = 6;

let redis: Redis;
let prefix: string;
let sim: Simulator;
const daemons: CliProcess[] = [];

beforeEach(async () => {
  redis = redisClient();
  prefix = testPrefix();
  sim = await startSimulator({ apiKey: KEY });
});

afterEach(async () => {
  for (const d of daemons.splice(0)) {
    if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill("SIGKILL");
    await d.exited;
  }
  await sim.close();
  await cleanPrefix(redis, prefix);
  redis.disconnect();
});

/** The real `run` command against the in-test simulator, on this test's prefix. */
async function startRun(replica: string, overrides: Record<string, string> = {}) {
  const d = runCli(["run"], {
    IDUNOX_API_URL: sim.url,
    IDUNOX_API_KEY: KEY,
    REDIS_URL: TEST_REDIS_URL,
    POLLER_KEY_PREFIX: prefix,
    POLLER_HTTP_PORT: "0",
    POLLER_REPLICA_ID: replica,
    POLLER_MIN_INTERVAL_MS: "100",
    POLLER_MAX_INTERVAL_MS: String(MAX_INTERVAL_MS),
    POLLER_INTAKE_INTERVAL_MS: "50",
    POLLER_IDLE_WAKE_MS: "50",
    POLLER_REQUEST_TIMEOUT_MS: "5000",
    POLLER_RETRIES: "0",
    POLLER_LEASE_MS: String(LEASE_MS),
    POLLER_SHUTDOWN_TIMEOUT_MS: "8000",
    LOG_LEVEL: "info",
    ...overrides,
  });
  daemons.push(d);
  await d.waitForLine(/"msg":"poller started"/);
  return d;
}

/** Jobs that are `running` for a while, then succeed: not final when the first daemon stops. */
function addJobs(): string[] {
  return Array.from({ length: JOBS }, () =>
    sim.addJob({
      steps: [
        { afterMs: 0, status: "running" },
        { afterMs: 4_000, status: "succeeded" },
      ],
      slaDeadlineInMs: null,
    }),
  );
}

async function scheduleScores(): Promise<number[]> {
  const flat = await redis.zrange(`${prefix}schedule`, 0, -1, "WITHSCORES");
  return flat.filter((_, i) => i % 2 === 1).map(Number);
}

describe("run: shutdown on real signals", () => {
  it.each(["SIGTERM", "SIGINT"] as const)(
    "%s with polls in flight: exits 0, holds no lease, loses nothing; a restart finishes once",
    async (signal) => {
      // Every answer takes 1.5 s, so the signal lands while each job's poll is open.
      sim.setFaults({ slow: 1, slowMs: 1_500 });
      const first = await startRun("r1");
      // Created only once the daemon runs: a slow start must not eat the jobs' running time,
      // or they would already be final at their first poll.
      const jobs = addJobs();
      await redis.sadd(`${prefix}pending`, ...jobs);
      await waitFor(() => sim.stats().byJob.size === JOBS, { what: "a poll in flight per job" });
      expect(await redis.hexists(`${prefix}replicas`, "r1")).toBe(1);

      first.child.kill(signal);
      // run.ts exits 1 by itself when the graceful stop overruns POLLER_SHUTDOWN_TIMEOUT_MS,
      // so 0 also says the drain ended within the timeout.
      expect(await first.exited).toBe(0);
      expect(first.stdout()).toContain('"msg":"stopped"');

      // A held lease is a score of claim time + lease; handed back or rescheduled jobs are due
      // now or within one poll interval.
      const scores = await scheduleScores();
      expect(scores).toHaveLength(JOBS);
      const bound = Date.now() + MAX_INTERVAL_MS * 2;
      for (const score of scores) expect(score).toBeLessThanOrEqual(bound);
      // None was final yet, so every job is still pending; the heartbeat is gone.
      expect((await redis.smembers(`${prefix}pending`)).sort()).toEqual([...jobs].sort());
      expect(await redis.hexists(`${prefix}replicas`, "r1")).toBe(0);

      sim.clearFaults();
      const second = await startRun("r2");
      await readUntil(redis, `${prefix}events`, allReached(jobs, "succeeded"), 30_000);
      second.child.kill("SIGTERM");
      expect(await second.exited).toBe(0);

      const events = (await readAll(redis, `${prefix}events`)).map((e) => e.event);
      expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
      for (const id of jobs) {
        const mine = events.filter((e) => e.subject === id);
        expect(
          mine.map((e) => (e.type === "idunox.job.status_changed" ? e.data.status : e.type)),
        ).toEqual(["running", "succeeded"]);
        expect(mine.map((e) => e.sequence)).toEqual(["0000000001", "0000000002"]);
      }
      expect(await redis.scard(`${prefix}pending`)).toBe(0);
    },
  );

  it("a second SIGTERM during a long drain exits at once with 1, leaving the jobs pending", async () => {
    const jobs = addJobs();
    // Never answered: the drain would wait for most of the (long) shutdown timeout.
    sim.setFaults({ hang: 1 });
    const d = await startRun("r1", { POLLER_SHUTDOWN_TIMEOUT_MS: "60000" });
    await redis.sadd(`${prefix}pending`, ...jobs);
    await waitFor(() => sim.stats().byJob.size === JOBS, { what: "a hanging poll per job" });

    d.child.kill("SIGTERM");
    await d.waitForLine(/"msg":"signal received: shutting down"/);
    d.child.kill("SIGTERM");
    expect(await d.exited).toBe(1);
    expect(d.stdout()).toContain('"msg":"second signal: exiting now"');
    expect(d.stdout()).not.toContain('"msg":"stopped"');
    // Nothing is lost: the leases run out and the next daemon takes the jobs over.
    expect((await redis.smembers(`${prefix}pending`)).sort()).toEqual([...jobs].sort());
    expect(await redis.xlen(`${prefix}events`)).toBe(0);
  });

  it("an idle stop removes the replica heartbeat and exits 0 without waiting out the timeout", async () => {
    // A shutdown budget longer than this test's own timeout: the process must exit as soon as
    // the stop is done, not when some leftover timer of the budget runs out.
    const d = await startRun("idle-replica", { POLLER_SHUTDOWN_TIMEOUT_MS: "300000" });
    await waitFor(async () => (await redis.hexists(`${prefix}replicas`, "idle-replica")) === 1, {
      what: "the heartbeat",
    });
    d.child.kill("SIGTERM");
    expect(await d.exited).toBe(0);
    expect(await redis.hexists(`${prefix}replicas`, "idle-replica")).toBe(0);
  });
});
