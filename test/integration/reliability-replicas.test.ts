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
  type PlannedJob,
  plannedJobs,
  startDaemonProcess,
  stopGracefully,
  submit,
  waitForFinals,
} from "../helpers/reliability.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";

/**
 * Several replicas on one prefix share the work through leases: no job is polled by two at
 * once, the events stay exactly-once, the replicas together poll about as often as one daemon
 * would, and a replica killed with its leases has its jobs taken over once they run out.
 */
const SEED = Number(process.env.RELIABILITY_SEED ?? 7_345_001);
const API_KEY = "replicas-test-key";
const JOBS = 60;
const LEASE_MS = 1500;
const MAX_INTERVAL_MS = 800;

describe("reliability: replicas", () => {
  let redis: Redis;
  const prefixes: string[] = [];
  const sims: Simulator[] = [];
  const daemons: CliProcess[] = [];
  const proxies: TcpProxy[] = [];

  const env = (sim: Simulator, prefix: string, replicaId: string) =>
    daemonEnv({
      apiUrl: sim.url,
      apiKey: API_KEY,
      redisUrl: TEST_REDIS_URL,
      prefix,
      replicaId,
      leaseMs: LEASE_MS,
      maxIntervalMs: MAX_INTERVAL_MS,
      concurrency: 4,
    });
  const start = async (e: Record<string, string>) => {
    const d = await startDaemonProcess(e);
    daemons.push(d);
    return d;
  };
  const workload = (): PlannedJob[] => plannedJobs(createRng(SEED), JOBS, 0.3);

  beforeAll(() => {
    redis = redisClient();
  });

  afterAll(async () => {
    await Promise.all(daemons.map(killHard));
    for (const prefix of prefixes) await cleanPrefix(redis, prefix);
    redis.disconnect();
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(sims.map((s) => s.close()));
  });

  it("three replicas poll each job one at a time, about as often as one daemon, and take over a killed one's jobs", async () => {
    // Baseline: the same workload under one daemon.
    const singleSim = await startSimulator({ apiKey: API_KEY, seed: SEED });
    sims.push(singleSim);
    const singlePrefix = testPrefix();
    prefixes.push(singlePrefix);
    const single = await start(env(singleSim, singlePrefix, "single"));
    const singleJobs = workload();
    await submit(singleSim, redis, keysFor(singlePrefix).pending, singleJobs);
    await waitForFinals(redis, keysFor(singlePrefix).events, finalsOf(singleJobs), 30_000);
    const singleRequests = singleSim.stats().requests;
    expect(await stopGracefully(single)).toBe(0);

    // Three replicas, one prefix, the same jobs.
    const sim = await startSimulator({ apiKey: API_KEY, seed: SEED });
    sims.push(sim);
    const prefix = testPrefix();
    prefixes.push(prefix);
    const keys = keysFor(prefix);
    const victimTap = new Set<string>();
    const victimProxy = await startTcpProxy({
      targetPort: sim.port,
      onData: (chunk, from) => {
        const id = /GET \/v1\/jobs\/([0-9a-f-]{36})/.exec(chunk.toString("latin1"))?.[1];
        if (from === "client" && id !== undefined) victimTap.add(id);
      },
    });
    proxies.push(victimProxy);
    const replicas = await Promise.all([
      start({ ...env(sim, prefix, "r1"), IDUNOX_API_URL: `http://127.0.0.1:${victimProxy.port}` }),
      start(env(sim, prefix, "r2")),
      start(env(sim, prefix, "r3")),
    ]);
    const jobs = workload();
    await submit(sim, redis, keys.pending, jobs);
    await waitForFinals(redis, keys.events, finalsOf(jobs), 30_000);
    const shared = sim.stats();
    const sharedReport = checkExactlyOnce({
      events: await allEvents(redis, keys.events),
      finals: finalsOf(jobs),
      pending: await redis.smembers(keys.pending),
    });
    console.log(
      `[reliability-replicas] seed=${SEED} jobs=${JOBS} requests: one daemon=${singleRequests}, ` +
        `three replicas=${shared.requests}, overlaps=${shared.overlapsPerJob}; ${describeReport(sharedReport)}`,
    );
    expect(sharedReport.problems).toEqual([]);
    expect(shared.overlapsPerJob).toBe(0);
    // Leases share the schedule, they do not multiply it: three replicas poll about as often as
    // one (jitter and claim timing leave some slack, a per-replica schedule would triple it).
    expect(shared.requests).toBeLessThanOrEqual(Math.ceil(singleRequests * 1.3) + 20);

    // Takeover. r1 reaches the API through a proxy; black-holing it leaves r1's next polls
    // hanging, so the jobs it asks for are exactly the leases it holds when it is killed.
    const more = plannedJobs(createRng(SEED + 1), JOBS / 2, 0.3);
    await submit(sim, redis, keys.pending, more);
    const moreIds = new Set(more.map((j) => j.spec.jobId));
    await waitFor(
      async () => (await allEvents(redis, keys.events)).some((e) => moreIds.has(e.subject)),
      {
        what: "the second batch in progress",
      },
    );
    victimTap.clear();
    victimProxy.blackhole(true);
    const requested = await waitFor(() => (victimTap.size > 0 ? [...victimTap] : false), {
      timeoutMs: 10_000,
      intervalMs: 5,
      what: "r1 polling into the black hole",
    });
    await killHard(replicas[0] as CliProcess);
    const killedAt = Date.now();
    const scores = await redis.zmscore(keys.schedule, ...requested);
    // Still leased: the score (lease expiry) lies ahead. The lease outlives the kill.
    const held = new Map<string, number>();
    requested.forEach((id, i) => {
      const score = Number(scores[i] ?? 0);
      if (score > killedAt) held.set(id, score);
    });
    const changedAt = new Map<string, number>();
    await waitFor(
      async () => {
        const ids = [...held.keys()];
        const now = Date.now();
        const current = ids.length === 0 ? [] : await redis.zmscore(keys.schedule, ...ids);
        ids.forEach((id, i) => {
          const score = current[i];
          if (!changedAt.has(id) && (score === null || Number(score) !== held.get(id))) {
            changedAt.set(id, now);
          }
        });
        return changedAt.size === held.size;
      },
      { timeoutMs: LEASE_MS * 4, intervalMs: 20, what: "r1's leases taken over" },
    );
    const takeoverMs = [...changedAt.values()].map((t) => t - killedAt);
    // How long after the lease ran out a live replica claimed the job: the claim loop's part.
    const afterExpiryMs = [...changedAt].map(([id, t]) => t - (held.get(id) ?? 0));

    const allJobs = [...jobs, ...more];
    await waitForFinals(redis, keys.events, finalsOf(allJobs), 30_000);
    const report = checkExactlyOnce({
      events: await allEvents(redis, keys.events),
      finals: finalsOf(allJobs),
      pending: await redis.smembers(keys.pending),
      alerts: await allEvents(redis, keys.alerts),
    });
    const stats = sim.stats();
    console.log(
      `[reliability-replicas] killed r1 holding ${held.size} leases (${requested.length} polls in flight); ` +
        `taken over ${Math.min(...takeoverMs)}-${Math.max(...takeoverMs)} ms after the kill, ` +
        `${Math.min(...afterExpiryMs)}-${Math.max(...afterExpiryMs)} ms after lease expiry ` +
        `(POLLER_LEASE_MS=${LEASE_MS}); requests=${stats.requests} overlaps=${stats.overlapsPerJob}; ` +
        describeReport(report),
    );
    expect(held.size).toBeGreaterThan(0);
    // Taken over only once the lease ran out, never before: no early double polling.
    expect(Math.min(...afterExpiryMs)).toBeGreaterThanOrEqual(0);
    expect(report.problems).toEqual([]);
    expect(report.finished).toBe(allJobs.length);
    expect(stats.overlapsPerJob).toBe(0);
    expect(await redis.scard(keys.pending)).toBe(0);
    for (const r of replicas.slice(1)) expect(await stopGracefully(r)).toBe(0);
  });
});
