import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { JobStatus } from "../../src/api/schema.js";
import { loadConfig } from "../../src/config/index.js";
import { type Daemon, startDaemon } from "../../src/daemon/daemon.js";
import type { AnyCloudEvent } from "../../src/events/types.js";
import {
  type Faults,
  type SimStep,
  type Simulator,
  startSimulator,
} from "../../src/sim/simulator.js";
import { checkExactlyOnce, describeReport } from "../helpers/invariants.js";
import { cleanPrefix, redisClient, testPrefix, waitFor } from "../helpers/redis.js";
import { readAll } from "../helpers/streams.js";

/**
 * Upstream storms against the whole in-process daemon: the API fails a large share of requests
 * in every way it can for a sustained period, then fails completely. What must hold is the
 * contract, not a timing: healthy jobs still finish, nothing invented, nothing twice, memory
 * flat, and a full outage makes the daemon back off for everyone instead of hammering the API.
 */

const KEY = "storm-key";

// A real collection before each heap sample, so the comparison is of live objects, not garbage.
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

function heapMb(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

interface Planned {
  id: string;
  steps: SimStep[];
  final: JobStatus;
}

/** Deterministic lifecycles, spread so that jobs keep changing for about `spanMs`. */
function plan(sim: Simulator, count: number, spanMs: number): Planned[] {
  const out: Planned[] = [];
  for (let i = 0; i < count; i++) {
    const end = Math.round(((i + 1) / count) * spanMs);
    const at = (f: number) => Math.max(1, Math.round(end * f));
    let steps: SimStep[];
    let final: JobStatus;
    let maxAttempts = 3;
    switch (i % 4) {
      case 0:
        steps = [
          { afterMs: 0, status: "queued" },
          { afterMs: at(0.4), status: "running" },
          { afterMs: end, status: "succeeded" },
        ];
        final = "succeeded";
        break;
      case 1:
        steps = [
          { afterMs: 0, status: "queued" },
          { afterMs: at(0.2), status: "running" },
          { afterMs: at(0.4), status: "failed" },
          { afterMs: at(0.6), status: "queued" },
          { afterMs: at(0.8), status: "running" },
          { afterMs: end, status: "succeeded" },
        ];
        final = "succeeded";
        break;
      case 2:
        maxAttempts = 2;
        steps = [
          { afterMs: 0, status: "running" },
          { afterMs: at(0.3), status: "failed" },
          { afterMs: at(0.6), status: "running" },
          { afterMs: end, status: "dead_letter" },
        ];
        final = "dead_letter";
        break;
      default:
        steps = [
          { afterMs: 0, status: "queued" },
          { afterMs: end, status: "cancelled" },
        ];
        final = "cancelled";
    }
    const id = sim.addJob({ steps, maxAttempts, slaDeadlineInMs: null });
    out.push({ id, steps, final });
  }
  return out;
}

/**
 * Every status_changed names a status the simulator really served for that job: a step with
 * that status entered exactly at the event's `updatedAt`, and steps are reported in order.
 */
function inventedTransitions(events: readonly AnyCloudEvent[], jobs: Planned[]): string[] {
  const problems: string[] = [];
  const byId = new Map(jobs.map((j) => [j.id, j]));
  const lastStep = new Map<string, number>();
  for (const e of events) {
    if (e.type !== "idunox.job.status_changed") continue;
    const job = byId.get(e.subject);
    if (job === undefined) continue;
    const offset = Date.parse(e.data.job.updatedAt) - Date.parse(e.data.job.createdAt);
    const index = job.steps.findIndex((s) => s.afterMs === offset && s.status === e.data.status);
    if (index < 0 || index <= (lastStep.get(e.subject) ?? -1)) {
      problems.push(`${e.subject.slice(0, 8)}: ${e.data.status} at +${offset} ms never served`);
    }
    lastStep.set(e.subject, index);
  }
  return problems;
}

// 429s come from a quota, as from a real API: a 429 pauses all polling for its Retry-After
// (the request budget), so random 429s on a share of requests would throttle the daemon by
// design, not test how it rides out a storm.
const STORM: Faults = {
  error5xx: 0.3,
  status5xx: 503,
  hang: 0.03,
  reset: 0.05,
  malformed: 0.04,
  schemaBreak: 0.03,
  wrongJobId: 0.02,
};
/** The key's quota during the storm: about what the daemon would send, so some 429s. */
const STORM_QUOTA = { rate: 100 };
/** A burst of 429s with Retry-After on top of the rest: the quota drops far below demand. */
const BURST_QUOTA = { rate: 40 };

let redis: Redis;
let prefix: string;
let sim: Simulator;
let daemon: Daemon | undefined;

beforeEach(async () => {
  redis = redisClient();
  prefix = testPrefix();
  sim = await startSimulator({ apiKey: KEY, seed: 4242 });
});

afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  await sim.close();
  await cleanPrefix(redis, prefix);
  redis.disconnect();
});

async function start(concurrency: number): Promise<Daemon> {
  daemon = await startDaemon(
    loadConfig({
      IDUNOX_API_URL: sim.url,
      IDUNOX_API_KEY: KEY,
      REDIS_URL: process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379",
      POLLER_KEY_PREFIX: prefix,
      POLLER_CONCURRENCY: String(concurrency),
      POLLER_MIN_INTERVAL_MS: "100",
      POLLER_MAX_INTERVAL_MS: "400",
      POLLER_REQUEST_TIMEOUT_MS: "400",
      POLLER_RETRIES: "2",
      POLLER_LEASE_MS: "5000",
      POLLER_FAILURE_ALERT_AFTER: "5",
      POLLER_INTAKE_INTERVAL_MS: "50",
      POLLER_HTTP_PORT: "0",
      LOG_LEVEL: "silent",
    }),
  );
  return daemon;
}

async function events(): Promise<AnyCloudEvent[]> {
  return (await readAll(redis, `${prefix}events`)).map((e) => e.event);
}

function finishedAll(list: readonly AnyCloudEvent[], jobs: Planned[]): boolean {
  const done = new Set(
    list.flatMap((e) => {
      if (e.type !== "idunox.job.status_changed") return [];
      return byFinal.get(e.subject) === e.data.status ? [e.subject] : [];
    }),
  );
  return jobs.every((j) => done.has(j.id));
}
const byFinal = new Map<string, JobStatus>();

describe("upstream storms", () => {
  it("keeps healthy jobs moving, invents nothing and stays flat in memory", async () => {
    const jobs = plan(sim, 40, 10_000);
    for (const j of jobs) byFinal.set(j.id, j.final);
    // Two jobs with faults of their own that never clear: they must not hold the others up.
    const hanging = sim.addJob({ steps: [{ afterMs: 0, status: "running" }] });
    const garbage = sim.addJob({ steps: [{ afterMs: 0, status: "running" }] });
    sim.setFaults({ hang: 1 }, hanging);
    sim.setFaults({ malformed: 1 }, garbage);
    sim.setFaults(STORM);
    sim.setQuota(STORM_QUOTA);

    const d = await start(8);
    await redis.sadd(`${prefix}pending`, ...jobs.map((j) => j.id), hanging, garbage);
    const stormStart = Date.now();

    // Warm up (pools, JIT, first intake) before the first heap sample.
    await waitFor(() => sim.stats().requests >= 300, { timeoutMs: 20_000, what: "warm-up" });
    const heapBefore = heapMb();
    sim.setQuota(BURST_QUOTA);
    const burstFrom = sim.stats().requests;
    await waitFor(() => sim.stats().requests >= burstFrom + 200, {
      timeoutMs: 20_000,
      what: "a burst of 429s",
    });
    sim.setQuota(STORM_QUOTA);
    await waitFor(async () => finishedAll(await events(), jobs), {
      timeoutMs: 45_000,
      intervalMs: 200,
      what: "every healthy job to reach its final status during the storm",
    });
    const stormMs = Date.now() - stormStart;
    const heapAfter = heapMb();
    const requests = sim.stats().requests;
    expect(d.poller.circuitOpen).toBe(false);
    await d.stop();

    const all = await events();
    const report = checkExactlyOnce({
      events: all,
      finals: new Map(jobs.map((j) => [j.id, j.final])),
      alerts: (await readAll(redis, `${prefix}alerts`)).map((e) => e.event),
      pending: await redis.smembers(`${prefix}pending`),
    });
    console.log(
      `storm: ${requests} requests in ${stormMs} ms; ${describeReport(report)}; ` +
        `heapUsed ${heapBefore.toFixed(1)} MB -> ${heapAfter.toFixed(1)} MB`,
    );
    expect(report.problems).toEqual([]);
    expect(inventedTransitions(all, jobs)).toEqual([]);
    // The faulty jobs never produced a transition, and the garbage one was reported once.
    expect(all.filter((e) => e.subject === hanging && e.type !== "idunox.job.poll_failed")).toEqual(
      [],
    );
    expect(all.filter((e) => e.subject === garbage).map((e) => e.type)).toEqual([
      "idunox.job.poll_failed",
    ]);
    expect(await redis.smembers(`${prefix}pending`)).toEqual(
      expect.arrayContaining([hanging, garbage]),
    );
    expect(await redis.scard(`${prefix}pending`)).toBe(2);
    // Generous: a leak per request (listeners, timers, bodies) over thousands of requests
    // would show up as tens of megabytes.
    expect(heapAfter - heapBefore).toBeLessThan(25);
  }, 80_000);

  it("backs off globally during a full outage and resumes after it", async () => {
    const concurrency = 8;
    const jobs = plan(sim, 24, 4_000);
    // Long-running jobs keep a steady poll rate to compare the outage against.
    const steady = Array.from({ length: 24 }, () =>
      sim.addJob({ steps: [{ afterMs: 0, status: "running" }], slaDeadlineInMs: null }),
    );
    for (const j of jobs) byFinal.set(j.id, j.final);
    const d = await start(concurrency);
    await redis.sadd(`${prefix}pending`, ...jobs.map((j) => j.id), ...steady);

    await waitFor(() => sim.stats().requests >= 100, { timeoutMs: 20_000, what: "warm-up" });
    const before = { requests: sim.stats().requests, at: Date.now() };
    await waitFor(() => sim.stats().requests >= before.requests + 300, {
      timeoutMs: 20_000,
      what: "a steady poll rate",
    });
    const beforeRate = (sim.stats().requests - before.requests) / ((Date.now() - before.at) / 1000);

    sim.setFaults({ error5xx: 1, status5xx: 503 });
    await waitFor(() => d.poller.circuitOpen, { timeoutMs: 20_000, what: "the circuit to open" });
    // The outage window: from the circuit opening until two probes in a row failed (cooldowns
    // of about 1 s and 2 s). In-flight polls of the moment it opened still land in it.
    sim.resetStats();
    const outageAt = Date.now();
    const known = new Set([...jobs.map((j) => j.id), ...steady]);
    // Probes ask for random ids; requests for ids the test never added are the probes.
    const probes = () => [...sim.stats().byJob.keys()].filter((id) => !known.has(id)).length;
    await waitFor(() => probes() >= 2, { timeoutMs: 20_000, what: "two failed probes" });
    const outageRequests = sim.stats().requests;
    const outageRate = outageRequests / ((Date.now() - outageAt) / 1000);
    expect(d.poller.circuitOpen).toBe(true);
    expect(d.readiness().checks["api"]).toEqual({ ok: false, reason: "API failing: circuit open" });

    // Jobs added during the outage can only finish once polling resumes.
    const late = plan(sim, 8, 400);
    for (const j of late) byFinal.set(j.id, j.final);
    await redis.sadd(`${prefix}pending`, ...late.map((j) => j.id));

    sim.clearFaults();
    await waitFor(() => !d.poller.circuitOpen, {
      timeoutMs: 30_000,
      what: "the circuit to close after the outage",
    });
    await waitFor(async () => finishedAll(await events(), [...jobs, ...late]), {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: "jobs to finish after the outage",
    });
    const after = sim.stats().requests;
    await d.stop();

    console.log(
      `outage: before ${beforeRate.toFixed(1)} req/s, during (circuit open) ` +
        `${outageRate.toFixed(1)} req/s (${outageRequests} requests), ` +
        `ratio ${(outageRate / beforeRate).toFixed(3)}; ${after - outageRequests} requests after`,
    );
    expect(outageRate / beforeRate).toBeLessThan(0.25);
    const report = checkExactlyOnce({
      events: await events(),
      finals: new Map([...jobs, ...late].map((j) => [j.id, j.final])),
    });
    expect(report.problems).toEqual([]);
    expect(report.finished).toBe(jobs.length + late.length);
  }, 80_000);
});
