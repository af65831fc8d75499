import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { freePort } from "../src/lib/net.js";
import { RequestBudget } from "../src/poller/budget.js";
import { createRng } from "../src/sim/random.js";
import { type Simulator, startSimulator } from "../src/sim/simulator.js";
import { BudgetStore } from "../src/store/budget.js";
import { deleteKeysWithPrefix } from "../src/store/connection.js";
import { keysFor } from "../src/store/keys.js";
import { Store } from "../src/store/store.js";
import { ROOT, START_FLAGS, type Subject, sleep, spawnSubject, waitUntil } from "./lib/children.js";
import { percentile, round } from "./lib/stats.js";

/**
 * `npm run bench:realapi`: the daemon against an API with a quota and a latency, as a user
 * deploys it: REALAPI_REPLICAS replica processes (dist/, default settings) on one Redis and one
 * prefix, a simulator that allows REALAPI_QUOTA requests/s for the key (a token bucket; 429
 * with Retry-After beyond it) and answers in REALAPI_LATENCY_MS. A fixed set of jobs, each
 * queued -> running -> succeeded within a minute, is tracked until every one is done; once
 * with POLLER_RATE_LIMIT at the quota, once with no limit (the budget adapts), once at twice
 * the quota.
 *
 *   REALAPI_JOBS=1500  REALAPI_QUOTA=200  REALAPI_LATENCY_MS=100  REALAPI_REPLICAS=3
 *   REALAPI_SEED=7     REALAPI_ONLY=quota,none,double    BENCH_REDIS_URL=...
 *
 * Measured per run:
 * - the share of requests answered 429 (the simulator's own count);
 * - goodput against the quota while work remains: answers without 429 per second, over the
 *   samples (every 500 ms) in which due jobs were waiting;
 * - schedule lag: how late the most overdue job is (the store's statistic), sampled;
 * - time until every job reached its final state and left the pending set.
 * Then the Redis cost of the budget itself: its script's CPU per permit (one permit per HTTP
 * attempt), from INFO commandstats of a private redis-server that runs nothing else.
 */

const env = process.env;
const num = (name: string, fallback: number) => {
  const v = env[name];
  return v === undefined || v === "" ? fallback : Number(v);
};
const JOBS = num("REALAPI_JOBS", 1500);
const QUOTA = num("REALAPI_QUOTA", 200);
const LATENCY_MS = num("REALAPI_LATENCY_MS", 100);
const REPLICAS = num("REALAPI_REPLICAS", 3);
const SEED = num("REALAPI_SEED", 7);
const ONLY = new Set((env["REALAPI_ONLY"] ?? "").split(",").filter((s) => s !== ""));
const REDIS_URL = env["BENCH_REDIS_URL"] ?? "redis://127.0.0.1:6379";
const API_KEY = "realapi-key";
const SAMPLE_MS = 500;

const log = (line: string) => process.stderr.write(`${line}\n`);

interface Setting {
  name: "quota" | "none" | "double";
  label: string;
  limit: number;
}

const SETTINGS: Setting[] = [
  { name: "quota", label: "limit = quota", limit: QUOTA },
  { name: "none", label: "no limit (adaptive)", limit: 0 },
  { name: "double", label: "limit = 2 x quota", limit: 2 * QUOTA },
];

interface Row {
  setting: string;
  limit: number;
  requests: number;
  throttled: number;
  throttledShare: number;
  goodputPerSec: number;
  goodputOfQuota: number;
  /** Seconds of the run in which due jobs were waiting (what the goodput is measured over). */
  busySeconds: number;
  lagP50s: number;
  lagP95s: number;
  lagMaxS: number;
  finishSeconds: number;
  /** The shared rate in force at the end (requests/s), or null for none. */
  finalRate: number | null;
}

/** queued at once, running 2-10 s later, succeeded 5-30 s after that: every job changes twice. */
function addJobs(sim: Simulator): string[] {
  const rng = createRng(SEED);
  return Array.from({ length: JOBS }, () => {
    const running = rng.int(2000, 10_000);
    const done = running + rng.int(5000, 30_000);
    return sim.addJob({
      jobId: rng.uuid(),
      steps: [
        { afterMs: 0, status: "queued" },
        { afterMs: running, status: "running" },
        { afterMs: done, status: "succeeded" },
      ],
      slaDeadlineInMs: null,
    });
  });
}

function startReplica(simUrl: string, prefix: string, i: number, limit: number): Subject {
  return spawnSubject({
    name: `replica-${i}`,
    entry: "dist/cli/main.js",
    args: ["run"],
    nodeFlags: START_FLAGS,
    env: {
      IDUNOX_API_URL: simUrl,
      IDUNOX_API_KEY: API_KEY,
      REDIS_URL,
      POLLER_KEY_PREFIX: prefix,
      POLLER_HTTP_PORT: "0",
      POLLER_REPLICA_ID: `realapi-${i}`,
      POLLER_RATE_LIMIT: String(limit),
      LOG_LEVEL: "info",
    },
  });
}

async function run(redis: Redis, setting: Setting): Promise<Row> {
  const prefix = `bench:realapi:${setting.name}:${Date.now()}:`;
  const sim = await startSimulator({
    apiKey: API_KEY,
    seed: SEED,
    quota: { rate: QUOTA },
    latencyMs: LATENCY_MS,
  });
  const store = new Store(redis, { prefix, streamMaxLen: 100_000, stateTtlMs: 3_600_000 });
  const replicas = Array.from({ length: REPLICAS }, (_, i) =>
    startReplica(sim.url, prefix, i, setting.limit),
  );
  try {
    for (const r of replicas) {
      await waitUntil(
        `${r.name} started`,
        async () => (r.tail().includes('"poller started"') ? true : undefined),
        60_000,
        100,
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}\n${r.tail()}`);
      });
    }
    const ids = addJobs(sim);
    sim.resetStats();
    const t0 = performance.now();
    await redis.sadd(keysFor(prefix).pending, ...ids);

    const lags: number[] = [];
    let busyMs = 0;
    let busyGood = 0;
    let last = { at: t0, requests: 0, throttled: 0 };
    let finishSeconds = Number.NaN;
    for (;;) {
      await sleep(SAMPLE_MS);
      const at = performance.now();
      const s = sim.stats();
      const stats = await store.stats(Date.now());
      lags.push(stats.scheduleLagSeconds);
      if (stats.dueBacklog > 0) {
        busyMs += at - last.at;
        busyGood += s.requests - s.throttled - (last.requests - last.throttled);
      }
      last = { at, requests: s.requests, throttled: s.throttled };
      // Done when every job reached its final state and left the pending set (not the
      // tracked count: intake may not have taken the jobs in at the first sample).
      if ((await redis.scard(keysFor(prefix).pending)) === 0) {
        finishSeconds = (at - t0) / 1000;
        break;
      }
      if (at - t0 > 600_000) throw new Error(`${setting.label}: jobs not done after 10 minutes`);
    }
    const s = sim.stats();
    const rate = await redis.hget(keysFor(prefix).budget, "rate");
    const goodput = busyMs > 0 ? busyGood / (busyMs / 1000) : 0;
    return {
      setting: setting.label,
      limit: setting.limit,
      requests: s.requests,
      throttled: s.throttled,
      throttledShare: round(s.throttled / Math.max(1, s.requests), 4),
      goodputPerSec: round(goodput, 1),
      goodputOfQuota: round(goodput / QUOTA, 3),
      busySeconds: round(busyMs / 1000, 1),
      lagP50s: round(percentile(lags, 50), 2),
      lagP95s: round(percentile(lags, 95), 2),
      lagMaxS: round(Math.max(...lags), 2),
      finishSeconds: round(finishSeconds, 1),
      finalRate:
        rate === null ? (setting.limit > 0 ? setting.limit : null) : round(Number(rate), 1),
    };
  } finally {
    for (const r of replicas) {
      const code = await r.stop();
      if (code !== 0) log(`${r.name} exited with ${code}:\n${r.tail()}`);
    }
    await sim.close();
    await deleteKeysWithPrefix(redis, prefix);
  }
}

// ---- the budget's own Redis cost --------------------------------------------------------------

interface CostRow {
  limit: number;
  seconds: number;
  permits: number;
  scriptCalls: number;
  permitsPerCall: number;
  /** Time inside the script per call (commandstats usec), and the server's CPU per call. */
  usPerCall: number;
  cpuUsPerCall: number;
}

async function scriptStats(redis: Redis): Promise<{ calls: number; usec: number; cpuUs: number }> {
  let calls = 0;
  let usec = 0;
  for (const line of (await redis.info("commandstats")).split("\n")) {
    const m = /^cmdstat_(evalsha|eval):calls=(\d+),usec=(\d+)/.exec(line);
    if (m) {
      calls += Number(m[2]);
      usec += Number(m[3]);
    }
  }
  const cpu = await redis.info("cpu");
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(cpu)?.[1] ?? 0);
  return { calls, usec, cpuUs: (field("used_cpu_user") + field("used_cpu_sys")) * 1e6 };
}

/**
 * REPLICAS limiters (the daemon's own code) draw permits as fast as the budget allows for
 * `seconds`, against a private redis-server, so that its command statistics are the budget's
 * alone.
 */
async function budgetCost(limit: number, seconds: number): Promise<CostRow> {
  const port = await freePort();
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdio: "ignore" },
  );
  const redis = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 3 });
  redis.on("error", () => {});
  try {
    await waitUntil(
      "the private redis-server answers",
      async () => ((await redis.ping().catch(() => null)) === "PONG" ? true : undefined),
      10_000,
      100,
    );
    const budgets = Array.from(
      { length: REPLICAS },
      () =>
        new RequestBudget({
          source: new BudgetStore(redis, "bench:cost:{b}:budget"),
          settings: { limit, burst: Math.max(1, limit) },
        }),
    );
    const before = await scriptStats(redis);
    const until = AbortSignal.timeout(seconds * 1000);
    let permits = 0;
    await Promise.all(
      budgets.map(async (b) => {
        let mine = 0;
        while (await b.acquire(until)) {
          permits++;
          // Every replica yields to the event loop now and then, as requests would: with no
          // rate in force permits are granted in memory, and a loop that never yields would
          // keep the timers (and the abort) from ever running.
          if (++mine % 64 === 0) await new Promise((r) => setImmediate(r));
        }
      }),
    );
    for (const b of budgets) b.close();
    const after = await scriptStats(redis);
    const calls = Math.max(1, after.calls - before.calls);
    return {
      limit,
      seconds,
      permits,
      scriptCalls: calls,
      permitsPerCall: round(permits / calls, 1),
      usPerCall: round((after.usec - before.usec) / calls, 1),
      cpuUsPerCall: round((after.cpuUs - before.cpuUs) / calls, 1),
    };
  } finally {
    redis.disconnect();
    child.kill("SIGTERM");
  }
}

// ---- report ----------------------------------------------------------------------------------

function table(headers: string[], rows: Array<Array<string | number>>): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => String(c)))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => c.padStart(widths[i] ?? 0)).join("  ");
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...cells.slice(1).map(line)].join(
    "\n",
  );
}

async function main(): Promise<void> {
  const started = Date.now();
  const loadAtStart = loadavg().map((l) => round(l, 2));
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 });
  const rows: Row[] = [];
  const costs: CostRow[] = [];
  try {
    for (const setting of SETTINGS) {
      if (ONLY.size > 0 && !ONLY.has(setting.name)) continue;
      log(
        `real API: ${setting.label}, ${REPLICAS} replicas, quota ${QUOTA}/s, ${LATENCY_MS} ms ...`,
      );
      const row = await run(redis, setting);
      log(
        `  429 share ${row.throttledShare}, goodput ${row.goodputOfQuota} of the quota, done in ${row.finishSeconds} s`,
      );
      rows.push(row);
    }
    log("budget cost ...");
    // Permits per call at the quota (few calls: their own timing is noise on a busy machine),
    // and the cost of one call of the same (rate-limited) path over many calls.
    costs.push(await budgetCost(QUOTA, 5));
    costs.push(await budgetCost(100_000, 3));
    costs.push(await budgetCost(0, 3));
  } finally {
    redis.disconnect();
  }

  const many = costs.find((c) => c.limit === 100_000);
  const atQuota = costs.find((c) => c.limit === QUOTA);
  const costAtQuota =
    many && atQuota ? round(many.usPerCall / Math.max(1, atQuota.permitsPerCall), 2) : null;
  const out = [
    "",
    `Real API (${REPLICAS} replicas, default settings, quota ${QUOTA}/s with 429 + Retry-After, ${LATENCY_MS} ms answers, ${JOBS} jobs)`,
    table(
      [
        "setting",
        "requests",
        "429 share",
        "goodput/s",
        "x quota",
        "busy s",
        "lag p50 s",
        "lag p95 s",
        "lag max s",
        "done in s",
        "rate at end",
      ],
      rows.map((r) => [
        r.setting,
        r.requests,
        `${(r.throttledShare * 100).toFixed(2)}%`,
        r.goodputPerSec,
        r.goodputOfQuota.toFixed(2),
        r.busySeconds,
        r.lagP50s,
        r.lagP95s,
        r.lagMaxS,
        r.finishSeconds,
        r.finalRate ?? "-",
      ]),
    ),
    "",
    `Redis cost of the budget (${REPLICAS} limiters drawing as fast as allowed, private redis-server)`,
    table(
      ["limit", "seconds", "permits", "script calls", "permits/call", "us/call", "CPU us/call"],
      costs.map((c) => [
        c.limit === 0 ? "none" : c.limit,
        c.seconds,
        c.permits,
        c.scriptCalls,
        c.permitsPerCall,
        c.usPerCall,
        c.cpuUsPerCall,
      ]),
    ),
    ...(costAtQuota === null
      ? []
      : [
          `Redis per permit (one per HTTP attempt) at the quota: ${costAtQuota} us in the script ` +
            `(us/call at limit 100000 / permits per call at ${QUOTA})`,
        ]),
  ];
  process.stdout.write(`${out.join("\n")}\n`);
  const result = {
    date: new Date(started).toISOString(),
    durationSeconds: Math.round((Date.now() - started) / 1000),
    settings: { jobs: JOBS, quota: QUOTA, latencyMs: LATENCY_MS, replicas: REPLICAS, seed: SEED },
    machine: {
      loadAverageAtStart: loadAtStart,
      loadAverageAtEnd: loadavg().map((l) => round(l, 2)),
    },
    rows,
    costs,
    redisUsPerPermitAtQuota: costAtQuota,
  };
  const dir = join(ROOT, "bench", "results");
  mkdirSync(dir, { recursive: true });
  const stamp = result.date.replace(/:/g, "-").replace(/\.\d+Z$/, "Z");
  writeFileSync(join(dir, `${stamp}-realapi.json`), `${JSON.stringify(result, null, 2)}\n`);
  log(`results written to bench/results/${stamp}-realapi.json`);
}

main().catch((err: unknown) => {
  log(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
});
