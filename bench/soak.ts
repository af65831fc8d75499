/**
 * Soak: the built daemon at saturation against the simulator with faults on, for a set time,
 * watching for anything that grows without bound. Not part of CI (`npm run soak`).
 *
 *   npm run soak                       # 10 minutes
 *   SOAK_MINUTES=30 npm run soak       # longer
 *
 * Every SOAK_SAMPLE_S seconds it records the daemon's heap and RSS and event-loop delay (from
 * its /metrics, prom-client's nodejs metrics) and Redis's used_memory per job held in Redis.
 * After a warm-up it fits a line to each series; a series fails when the fitted growth over the
 * window is more than its threshold of the window's mean AND the second half of the window
 * still grows at more than half that rate. A series that rises then levels off (caches filling,
 * the stream reaching its MAXLEN, states reaching their TTL) passes; one that keeps climbing
 * fails. Results go to bench/results/soak-<time>.json; exit 1 when any series fails.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { freePort } from "../src/lib/net.js";
import { startSimulator } from "../src/sim/simulator.js";
import { keysFor } from "../src/store/keys.js";
import { ROOT } from "./lib/children.js";
import { reportRedisErrors } from "./lib/redis.js";

const env = process.env;
const num = (name: string, fallback: number) => {
  const raw = env[name];
  const n = raw === undefined || raw === "" ? fallback : Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number`);
  return n;
};
const MINUTES = num("SOAK_MINUTES", 10);
const SAMPLE_S = num("SOAK_SAMPLE_S", 10);
/** Jobs kept running at once: finished ones are replaced by new ones. */
const ACTIVE_JOBS = num("SOAK_JOBS", 2000);
const CONCURRENCY = num("SOAK_CONCURRENCY", 32);
const WARMUP_S = Math.min(180, MINUTES * 60 * 0.3);
const API_KEY = "soak-key";
const DURATION_MS = MINUTES * 60_000;

/** Relative growth over the window that fails a series (see the header). */
const THRESHOLDS: Record<Series, number> = {
  heapUsedBytes: 0.2,
  rssBytes: 0.2,
  eventLoopP99Ms: 1.0,
  redisBytesPerJob: 0.2,
};
type Series = "heapUsedBytes" | "rssBytes" | "eventLoopP99Ms" | "redisBytesPerJob";

interface Sample extends Record<Series, number> {
  t: number;
  redisUsedBytes: number;
  jobsInRedis: number;
  scheduled: number;
  eventsTotal: number;
  pollsTotal: number;
}

async function startRedis(): Promise<{ port: number; child: ChildProcess; dir: string }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "idunox-soak-"));
  // No persistence: the soak measures memory, and a private server keeps other tenants out.
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", ""];
  const child = spawn("redis-server", [...args, "--appendonly", "no", "--loglevel", "warning"], {
    stdio: "ignore",
  });
  const probe = new Redis({
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  // Refused connections are expected until the server listens; the loop below retries them.
  probe.on("error", () => {});
  for (let i = 0; ; i++) {
    try {
      await probe.connect();
      await probe.ping();
      probe.disconnect();
      return { port, child, dir };
    } catch {
      if (i > 100) throw new Error("redis-server did not start");
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function metricValue(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, "m").exec(text);
  return m === null ? Number.NaN : Number(m[1]);
}

function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, "gm"))) {
    sum += Number(m[1]);
  }
  return sum;
}

/** Least-squares slope of y over t (per second). */
function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mt = points.reduce((s, [t]) => s + t, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [t, y] of points) {
    num += (t - mt) * (y - my);
    den += (t - mt) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

interface Verdict {
  series: Series;
  mean: number;
  /** Fitted growth over the window / mean. */
  growth: number;
  /** The same over the window's second half. */
  lateGrowth: number;
  threshold: number;
  ok: boolean;
}

export function judge(samples: readonly Sample[], series: Series, threshold: number): Verdict {
  const points = samples.map((s): [number, number] => [s.t, s[series]]);
  const span = (p: Array<[number, number]>) => (p.length < 2 ? 0 : p[p.length - 1]![0] - p[0]![0]);
  const mean = points.reduce((s, [, y]) => s + y, 0) / Math.max(1, points.length);
  const relative = (p: Array<[number, number]>) => (mean === 0 ? 0 : (slope(p) * span(p)) / mean);
  const late = points.slice(Math.floor(points.length / 2));
  const growth = relative(points);
  // The late half is half as long: growing at the same rate shows half the total.
  const lateGrowth = relative(late) * 2;
  const ok = !(growth > threshold && lateGrowth > threshold / 2);
  return { series, mean, growth, lateGrowth, threshold, ok };
}

async function main(): Promise<number> {
  const redisServer = await startRedis();
  const redisUrl = `redis://127.0.0.1:${redisServer.port}`;
  const redis = new Redis(redisUrl);
  reportRedisErrors(redis, redisUrl, "soak");
  const prefix = "soak:jobs:";
  const keys = keysFor(prefix);
  const sim = await startSimulator({ apiKey: API_KEY, seed: 4242 });
  // Faults on every path the daemon handles: server errors, 429 with Retry-After, slow and
  // hung answers (request timeouts), resets, bodies that are not JSON or break the schema.
  sim.setFaults({
    error5xx: 0.02,
    rateLimit: 0.01,
    retryAfterS: 1,
    slow: 0.01,
    slowMs: 800,
    hang: 0.001,
    reset: 0.005,
    malformed: 0.005,
    schemaBreak: 0.005,
    wrongJobId: 0.002,
  });
  const metricsPort = await freePort();
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
    scripts: { start: string };
  };
  const startFlags = pkg.scripts.start.split(" ").filter((f) => f.startsWith("--"));
  const daemon = spawn(process.execPath, [...startFlags, "dist/cli/main.js", "run"], {
    cwd: ROOT,
    stdio: ["ignore", "ignore", "inherit"],
    env: {
      PATH: env["PATH"] ?? "",
      IDUNOX_API_URL: sim.url,
      IDUNOX_API_KEY: API_KEY,
      REDIS_URL: redisUrl,
      POLLER_KEY_PREFIX: prefix,
      POLLER_CONCURRENCY: String(CONCURRENCY),
      POLLER_MIN_INTERVAL_MS: "100",
      POLLER_MAX_INTERVAL_MS: "1000",
      POLLER_REQUEST_TIMEOUT_MS: "2000",
      POLLER_LEASE_MS: "10000",
      POLLER_NOT_FOUND_GRACE_MS: "5000",
      // Finished states are bounded by their TTL, which the soak checks. The streams are
      // bounded by their MAXLEN by construction: the smallest cap lets both (alerts are rarer)
      // reach it within the warm-up, so that what remains measured is the daemon's own state.
      POLLER_STATE_TTL_MS: "60000",
      POLLER_STREAM_MAXLEN: "1000",
      POLLER_HTTP_PORT: String(metricsPort),
      POLLER_HTTP_HOST: "127.0.0.1",
      LOG_LEVEL: "error",
    },
  });
  const daemonExit = once(daemon, "exit");

  const top = async () => {
    const scheduled = await redis.zcard(keys.schedule);
    const missing = ACTIVE_JOBS - scheduled;
    if (missing > 0) {
      const ids = sim.addRandomJobs(missing);
      for (let i = 0; i < ids.length; i += 1000)
        await redis.sadd(keys.pending, ...ids.slice(i, i + 1000));
    }
  };

  const samples: Sample[] = [];
  const started = Date.now();
  const sample = async (): Promise<Sample> => {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    const text = await res.text();
    const memory = await redis.info("memory");
    const used = Number(/^used_memory:(\d+)/m.exec(memory)?.[1] ?? Number.NaN);
    const [jobsInRedis, scheduled] = await Promise.all([
      redis.hlen(keys.state),
      redis.zcard(keys.schedule),
    ]);
    return {
      t: (Date.now() - started) / 1000,
      heapUsedBytes: metricValue(text, "idunox_poller_nodejs_heap_size_used_bytes"),
      rssBytes: metricValue(text, "idunox_poller_process_resident_memory_bytes"),
      eventLoopP99Ms: metricValue(text, "idunox_poller_nodejs_eventloop_lag_p99_seconds") * 1000,
      redisUsedBytes: used,
      jobsInRedis,
      scheduled,
      // Per tracked job: finished states (kept POLLER_STATE_TTL_MS) and the capped streams are
      // overhead on top, bounded if the daemon is right.
      redisBytesPerJob: used / Math.max(1, scheduled),
      eventsTotal: metricSum(text, "idunox_poller_events_total"),
      pollsTotal: metricSum(text, "idunox_poller_polls_total"),
    };
  };

  try {
    await top();
    // Wait for the metrics endpoint.
    for (let i = 0; ; i++) {
      try {
        await fetch(`http://127.0.0.1:${metricsPort}/healthz`);
        break;
      } catch {
        if (i > 100) throw new Error("the daemon's HTTP server did not come up");
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const topper = setInterval(() => void top().catch(() => {}), 1000);
    try {
      while (Date.now() - started < DURATION_MS) {
        await Promise.race([
          new Promise((r) => setTimeout(r, SAMPLE_S * 1000)),
          daemonExit.then(([code]) => {
            throw new Error(`the daemon exited (${code}) during the soak`);
          }),
        ]);
        const s = await sample();
        samples.push(s);
        process.stdout.write(
          `${s.t.toFixed(0).padStart(5)} s  heap ${(s.heapUsedBytes / 2 ** 20).toFixed(1)} MiB  rss ${(s.rssBytes / 2 ** 20).toFixed(1)} MiB  loop p99 ${s.eventLoopP99Ms.toFixed(1)} ms  redis ${(s.redisUsedBytes / 2 ** 20).toFixed(1)} MiB / ${s.scheduled} tracked = ${s.redisBytesPerJob.toFixed(0)} B (${s.jobsInRedis} states)  polls ${s.pollsTotal}  events ${s.eventsTotal}\n`,
        );
      }
    } finally {
      clearInterval(topper);
    }
  } finally {
    daemon.kill("SIGTERM");
    await daemonExit;
    await sim.close();
    redis.disconnect();
    redisServer.child.kill("SIGKILL");
    rmSync(redisServer.dir, { recursive: true, force: true });
  }

  const window = samples.filter((s) => s.t >= WARMUP_S);
  const verdicts = (Object.keys(THRESHOLDS) as Series[]).map((s) =>
    judge(window, s, THRESHOLDS[s]),
  );
  const failed = verdicts.some((v) => !v.ok) || window.length < 6;
  const last = samples[samples.length - 1];
  const report = {
    at: new Date().toISOString(),
    minutes: MINUTES,
    activeJobs: ACTIVE_JOBS,
    concurrency: CONCURRENCY,
    warmupS: WARMUP_S,
    polls: last?.pollsTotal ?? 0,
    pollsPerS: last ? last.pollsTotal / last.t : 0,
    events: last?.eventsTotal ?? 0,
    verdicts,
    ok: !failed,
    samples,
  };
  process.stdout.write("\nseries              mean        growth  late    limit  verdict\n");
  for (const v of verdicts) {
    process.stdout.write(
      `${v.series.padEnd(18)} ${v.mean.toExponential(3).padStart(10)}  ${(v.growth * 100).toFixed(1).padStart(6)}% ${(v.lateGrowth * 100).toFixed(1).padStart(6)}% ${(v.threshold * 100).toFixed(0).padStart(5)}%  ${v.ok ? "bounded" : "GROWS"}\n`,
    );
  }
  process.stdout.write(
    `\n${report.polls} polls (${report.pollsPerS.toFixed(0)}/s), ${report.events} events; ${failed ? "FAIL" : "ok"}\n`,
  );
  const outDir = join(ROOT, "bench", "results");
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `soak-${report.at.replace(/[:.]/g, "-").slice(0, 19)}Z.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`written ${file}\n`);
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  },
);
