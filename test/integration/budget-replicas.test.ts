import type { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HOLD_MS } from "../../src/poller/budget.js";
import { type Simulator, type SimulatorOptions, startSimulator } from "../../src/sim/simulator.js";
import { keysFor } from "../../src/store/keys.js";
import type { CliProcess } from "../helpers/processes.js";
import { cleanPrefix, redisClient, TEST_REDIS_URL, testPrefix, waitFor } from "../helpers/redis.js";
import { type RedisServer, startRedisServer } from "../helpers/redis-server.js";
import { daemonEnv, killHard, startDaemonProcess } from "../helpers/reliability.js";

/**
 * The request budget with real replica processes against the simulator: the limit holds
 * across three replicas, a 429 pauses all of them, the adaptive rate settles below the quota,
 * the API's rate-limit headers set the rate, and a Redis restart does not jam the budget.
 * Bounds are upper bounds on what reached the API (load on the machine can only lower them);
 * the one lower bound asks for a quarter of the limit while demand is many times more.
 */
const API_KEY = "budget-test-key";
/** Enough jobs, polled every 100 ms, that demand is far above every budget below. */
const JOBS = 60;

let redis: Redis;
let prefix: string;
let sim: Simulator | undefined;
const daemons: CliProcess[] = [];

beforeEach(() => {
  redis = redisClient();
  prefix = testPrefix();
});

afterEach(async () => {
  await Promise.all(daemons.splice(0).map(killHard));
  await sim?.close();
  sim = undefined;
  await cleanPrefix(redis, prefix);
  redis.disconnect();
});

async function simulator(opts: Partial<SimulatorOptions> = {}): Promise<Simulator> {
  const s = await startSimulator({ apiKey: API_KEY, seed: 5, ...opts });
  sim = s;
  return s;
}

/** Jobs that run forever, handed to the daemons. */
async function foreverJobs(s: Simulator, redisUrl = TEST_REDIS_URL): Promise<string[]> {
  const ids = Array.from({ length: JOBS }, () =>
    s.addJob({ steps: [{ afterMs: 0, status: "running" }], slaDeadlineInMs: null }),
  );
  const client = redisUrl === TEST_REDIS_URL ? redis : redisClient(redisUrl);
  await client.sadd(keysFor(prefix).pending, ...ids);
  if (client !== redis) client.disconnect();
  return ids;
}

async function replicas(
  s: Simulator,
  n: number,
  extra: Record<string, string>,
  redisUrl = TEST_REDIS_URL,
): Promise<void> {
  const started = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      startDaemonProcess({
        ...daemonEnv({
          apiUrl: s.url,
          apiKey: API_KEY,
          redisUrl,
          prefix,
          replicaId: `r${i}`,
          maxIntervalMs: 100,
          concurrency: 4,
          leaseMs: 3000,
        }),
        ...extra,
      }),
    ),
  );
  daemons.push(...started);
}

/** Requests (and quota refusals) the simulator saw over `ms`, wall clock. */
async function window(s: Simulator, ms: number) {
  const a = s.stats();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const b = s.stats();
  return {
    seconds: (performance.now() - t0) / 1000,
    requests: b.requests - a.requests,
    throttled: b.throttled - a.throttled,
  };
}

/**
 * The most a budget of `rate`/s with bucket `burst` lets reach the API in `seconds`: permits
 * granted up to HOLD_MS before the window may still arrive in it, so the window counts that
 * much longer.
 */
function allowed(rate: number, burst: number, seconds: number): number {
  return burst + rate * (seconds + HOLD_MS / 1000 + 0.2);
}

async function budgetRate(): Promise<number | null> {
  const raw = await redis.hget(keysFor(prefix).budget, "rate");
  return raw === null ? null : Number(raw);
}

describe("request budget across replica processes", () => {
  it("three replicas share POLLER_RATE_LIMIT, and a 429 pauses all three for its Retry-After", async () => {
    const s = await simulator();
    const ids = await foreverJobs(s);
    await replicas(s, 3, { POLLER_RATE_LIMIT: "30", POLLER_RATE_BURST: "5" });
    await waitFor(() => s.stats().requests > 60, {
      what: "the replicas polling",
      timeoutMs: 30_000,
    });

    const w = await window(s, 3000);
    expect(w.requests).toBeLessThanOrEqual(allowed(30, 5, w.seconds));
    expect(w.requests).toBeGreaterThanOrEqual(30 * w.seconds * 0.25);

    // One job's next answer is a 429 asking for 3 s of quiet.
    const victim = ids[0] as string;
    const before = s.stats().byJob.get(victim) ?? 0;
    s.script(victim, [
      { status: 429, body: { error: "rate_limited" }, headers: { "retry-after": "3" } },
    ]);
    const samples: Array<{ at: number; requests: number }> = [];
    const seen = await waitFor(
      () => {
        const stats = s.stats();
        samples.push({ at: performance.now(), requests: stats.requests });
        return (stats.byJob.get(victim) ?? 0) > before ? performance.now() : undefined;
      },
      { what: "the scripted 429 served", intervalMs: 5, timeoutMs: 20_000 },
    );
    // From shortly after the 429 (the others hear of it within HOLD_MS of their next call)
    // until well before its end, nothing reaches the API from any replica.
    const quietFrom = seen + 400;
    const quietTo = seen + 2400;
    while (performance.now() < quietTo + 100) {
      samples.push({ at: performance.now(), requests: s.stats().requests });
      await new Promise((r) => setTimeout(r, 20));
    }
    const quiet = samples.filter((x) => x.at >= quietFrom && x.at <= quietTo);
    expect(quiet.length).toBeGreaterThan(10);
    expect((quiet.at(-1) as { requests: number }).requests).toBe(
      (quiet[0] as { requests: number }).requests,
    );
    // And polling resumes after the pause.
    const resumedFrom = s.stats().requests;
    await waitFor(() => s.stats().requests > resumedFrom + 10, { what: "polling resumed" });
  });

  it("with no limit set, the shared rate adapts to the quota's 429s and settles below it", async () => {
    const s = await simulator({ quota: { rate: 40 }, latencyMs: 20 });
    await foreverJobs(s);
    await replicas(s, 3, {});
    // The first cuts start from what the replicas sent unchecked; a few bursts of 429s later
    // the rate is under the quota.
    await waitFor(async () => ((await budgetRate()) ?? 1000) < 40, {
      what: "the shared rate cut below the quota",
      timeoutMs: 40_000,
    });
    // From there it saws just under the quota: it grows by 2% of the cut rate per second
    // until a 429 cuts it by a fifth again.
    const rates: number[] = [];
    const sampling = setInterval(() => {
      void budgetRate().then((r) => r !== null && rates.push(r));
    }, 200);
    const w = await window(s, 5000).finally(() => clearInterval(sampling));
    expect(rates.length).toBeGreaterThan(10);
    const mean = rates.reduce((a, b) => a + b, 0) / rates.length;
    expect(mean).toBeLessThan(40);
    expect(Math.max(...rates)).toBeLessThan(40 * 1.1);
    expect(Math.min(...rates)).toBeGreaterThan(10);
    expect(w.throttled).toBeLessThanOrEqual(w.requests * 0.1);
    expect(w.requests).toBeLessThanOrEqual(allowed(40, 40, w.seconds));
  });

  it("obeys the API's rate-limit headers: their policy is the rate of every replica", async () => {
    const s = await simulator({ quota: { rate: 25, headers: true }, latencyMs: 10 });
    await foreverJobs(s);
    await replicas(s, 3, {});
    await waitFor(async () => (await budgetRate()) === 25, {
      what: "the header rate in force",
      timeoutMs: 30_000,
    });
    const w = await window(s, 3000);
    // With no limit set the bucket holds one second of the rate.
    expect(w.requests).toBeLessThanOrEqual(allowed(25, 25, w.seconds));
    expect(w.requests).toBeGreaterThanOrEqual(25 * w.seconds * 0.25);
    expect(await budgetRate()).toBe(25);
  });

  it("a Redis restart neither jams the budget nor lets more than a fresh bucket through", async () => {
    let server: RedisServer | undefined;
    try {
      server = await startRedisServer();
      const s = await simulator();
      await foreverJobs(s, server.url);
      await replicas(s, 2, { POLLER_RATE_LIMIT: "20", POLLER_RATE_BURST: "5" }, server.url);
      await waitFor(() => s.stats().requests > 30, { what: "polling", timeoutMs: 30_000 });

      await server.kill();
      await server.restart();
      const afterRestart = s.stats().requests;
      await waitFor(() => s.stats().requests > afterRestart + 20, {
        what: "polling after the restart",
        timeoutMs: 30_000,
      });
      // The budget's state may be gone with the restart: at most one more full bucket.
      const w = await window(s, 3000);
      expect(w.requests).toBeLessThanOrEqual(allowed(20, 5, w.seconds) + 5);
      expect(w.requests).toBeGreaterThanOrEqual(20 * w.seconds * 0.25);
    } finally {
      await Promise.all(daemons.splice(0).map(killHard));
      await server?.stop();
    }
  });
});
