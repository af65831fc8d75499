import { randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { JOB_TYPES, type JobType } from "../src/api/schema.js";
import { MIN_SAMPLES } from "../src/poller/durations.js";
import { pipelineSpec } from "../src/sim/mix.js";
import { createRng } from "../src/sim/random.js";
import { type Simulator, startSimulator } from "../src/sim/simulator.js";
import { deleteKeysWithPrefix } from "../src/store/connection.js";
import { Store } from "../src/store/store.js";
import { ROOT, START_FLAGS, type Subject, sleep, spawnSubject, waitUntil } from "./lib/children.js";
import { reportRedisErrors } from "./lib/redis.js";
import { percentile, round } from "./lib/stats.js";

/**
 * `npm run bench:economy`: the same jobs under three schedules, side by side in one run.
 *
 * Each schedule gets its own daemon (a child process running dist/), its own simulator (in
 * this process, same seed, so the very same lifecycles) and its own key prefix; jobs arrive as
 * one Poisson stream, added to the three at the same instant. The pipeline mix
 * (src/sim/mix.ts) gives every job type its own log-normal queue and run times.
 *
 *   ECONOMY_JOBS=700        jobs per schedule
 *   ECONOMY_RATE=8          arrivals per second
 *   ECONOMY_SEED=11         seed of the lifecycles and arrivals
 *   ECONOMY_MIN_MS=200      POLLER_MIN_INTERVAL_MS of every schedule
 *   ECONOMY_MAX_MS=6000     POLLER_MAX_INTERVAL_MS of every schedule
 *   ECONOMY_FIXED_MS=1000   the fixed interval
 *   BENCH_REDIS_URL=...     default redis://127.0.0.1:6379
 *
 * Measured, per schedule:
 * - requests per job: the simulator's own count of GET /v1/jobs/{id} per job;
 * - detection delay: for every status change after the first observation, the event's `time`
 *   (when the daemon decided) minus the new state's `updatedAt`, which in the simulator is the
 *   instant the lifecycle really changed: ground truth, one clock;
 * - schedule lag: how late the most overdue job is (the store's statistic the daemon exports),
 *   sampled every 250 ms;
 * - cold start apart: a job is cold when fewer than MIN_SAMPLES jobs of its type had finished
 *   before it arrived, so its type could not have been learned yet.
 */

const env = process.env;
const num = (name: string, fallback: number) => {
  const v = env[name];
  return v === undefined || v === "" ? fallback : Number(v);
};
const JOBS = num("ECONOMY_JOBS", 700);
const RATE = num("ECONOMY_RATE", 8);
const SEED = num("ECONOMY_SEED", 11);
const MIN_MS = num("ECONOMY_MIN_MS", 200);
const MAX_MS = num("ECONOMY_MAX_MS", 6000);
const FIXED_MS = num("ECONOMY_FIXED_MS", 1000);
const REDIS_URL = env["BENCH_REDIS_URL"] ?? "redis://127.0.0.1:6379";
const API_KEY = "economy-key";

const log = (line: string) => process.stderr.write(`${line}\n`);

interface Mode {
  name: "backoff" | "fixed" | "predictive";
  label: string;
  env: Record<string, string>;
}

const MODES: Mode[] = [
  {
    name: "backoff",
    label: `backoff ${MIN_MS}-${MAX_MS} ms x2`,
    env: {
      POLLER_SCHEDULE: "backoff",
      POLLER_MIN_INTERVAL_MS: String(MIN_MS),
      POLLER_MAX_INTERVAL_MS: String(MAX_MS),
      POLLER_BACKOFF_FACTOR: "2",
      POLLER_JITTER: "0.2",
    },
  },
  {
    name: "fixed",
    label: `fixed ${FIXED_MS} ms`,
    env: {
      POLLER_SCHEDULE: "backoff",
      POLLER_MIN_INTERVAL_MS: String(FIXED_MS),
      POLLER_MAX_INTERVAL_MS: String(FIXED_MS),
      POLLER_BACKOFF_FACTOR: "1",
      POLLER_JITTER: "0",
    },
  },
  {
    name: "predictive",
    label: `predictive ${MIN_MS}-${MAX_MS} ms`,
    env: {
      POLLER_SCHEDULE: "predictive",
      POLLER_MIN_INTERVAL_MS: String(MIN_MS),
      POLLER_MAX_INTERVAL_MS: String(MAX_MS),
      POLLER_BACKOFF_FACTOR: "2",
      POLLER_JITTER: "0.2",
      // A short run: learn at the pace of the arrivals rather than every 5 s.
      POLLER_SCHEDULE_SYNC_MS: "1000",
    },
  },
];

interface PlannedJob {
  id: string;
  type: JobType;
  arriveAtMs: number;
  /** Arrival + the lifecycle's last step: when it is really done. */
  endAtMs: number;
  cold: boolean;
}

/** The jobs, their arrival offsets, and which of them arrive before their type is learnable. */
function plan(): { jobs: PlannedJob[]; specs: ReturnType<typeof pipelineSpec>[] } {
  const rng = createRng(SEED);
  const specs: ReturnType<typeof pipelineSpec>[] = [];
  const jobs: PlannedJob[] = [];
  let t = 0;
  for (let i = 0; i < JOBS; i++) {
    t += (-Math.log(1 - rng.next()) / RATE) * 1000;
    const spec = pipelineSpec(rng);
    specs.push(spec);
    const last = spec.steps[spec.steps.length - 1]?.afterMs ?? 0;
    jobs.push({ id: rng.uuid(), type: spec.type, arriveAtMs: t, endAtMs: t + last, cold: false });
  }
  for (const job of jobs) {
    const finishedBefore = jobs.filter((j) => j.type === job.type && j.endAtMs < job.arriveAtMs);
    job.cold = finishedBefore.length < MIN_SAMPLES;
  }
  return { jobs, specs };
}

interface Run {
  mode: Mode;
  prefix: string;
  sim: Simulator;
  daemon: Subject;
  store: Store;
  lagSamples: number[];
}

interface Result {
  schedule: Mode["name"];
  label: string;
  all: Row;
  warm: Row;
  cold: Row;
  warmByType: Row[];
  scheduleLagSeconds: { p50: number; p95: number; max: number };
}

interface Delay {
  id: string;
  type: JobType;
  ms: number;
}

interface Row {
  schedule: string;
  jobs: number;
  requestsPerJob: number;
  changes: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
}

function row(
  schedule: string,
  jobs: PlannedJob[],
  requests: Map<string, number>,
  delays: Delay[],
): Row {
  const ids = new Set(jobs.map((j) => j.id));
  const mine = delays.filter((d) => ids.has(d.id)).map((d) => d.ms);
  const total = jobs.reduce((n, j) => n + (requests.get(j.id) ?? 0), 0);
  return {
    schedule,
    jobs: jobs.length,
    requestsPerJob: round(total / Math.max(1, jobs.length), 2),
    changes: mine.length,
    p50Ms: Math.round(percentile(mine, 50)),
    p95Ms: Math.round(percentile(mine, 95)),
    p99Ms: Math.round(percentile(mine, 99)),
  };
}

async function delaysOf(redis: Redis, prefix: string): Promise<Delay[]> {
  const out: Delay[] = [];
  let from = "-";
  for (;;) {
    const entries = await redis.xrange(`${prefix}events`, from, "+", "COUNT", 2000);
    for (const [, flat] of entries) {
      const data = flat[flat.indexOf("data") + 1];
      if (data === undefined) continue;
      const event = JSON.parse(data) as {
        type: string;
        time: string;
        data: { previousStatus?: string | null; job?: { updatedAt: string; type: JobType } };
      };
      // The first observation measures intake, not the schedule.
      if (event.type !== "idunox.job.status_changed" || event.data.previousStatus == null) {
        continue;
      }
      const job = event.data.job;
      if (job === undefined) continue;
      out.push({
        id: flat[flat.indexOf("subject") + 1] as string,
        type: job.type,
        ms: Date.parse(event.time) - Date.parse(job.updatedAt),
      });
    }
    if (entries.length < 2000) break;
    from = `(${entries[entries.length - 1]?.[0]}`;
  }
  return out;
}

function table(headers: string[], rows: Array<Array<string | number>>): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => c.padStart(widths[i] ?? 0)).join("  ");
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...cells.slice(1).map(line)].join(
    "\n",
  );
}

/** Requests per job against p95 detection delay, one marker per schedule (filled: warm). */
function chart(points: Array<{ name: string; warm: Row; cold: Row }>): string {
  const W = 640;
  const H = 400;
  const m = { l: 70, r: 170, t: 40, b: 55 };
  const xs = points.flatMap((p) => [p.warm.requestsPerJob, p.cold.requestsPerJob]);
  const ys = points.flatMap((p) => [p.warm.p95Ms, p.cold.p95Ms].map((v) => v / 1000));
  const xMax = Math.ceil(Math.max(...xs, 1) * 1.15);
  const yMax = Math.ceil(Math.max(...ys, 1) * 1.15);
  const x = (v: number) => m.l + (v / xMax) * (W - m.l - m.r);
  const y = (v: number) => H - m.b - (v / yMax) * (H - m.t - m.b);
  const colors: Record<string, string> = {
    backoff: "#d62728",
    fixed: "#7f7f7f",
    predictive: "#1f77b4",
  };
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    "<title>Requests per job against p95 detection delay, per schedule, warm and cold start</title>",
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.l}" y="22" font-size="14">Economy: requests per job vs p95 detection delay (lower left is better)</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 15}" text-anchor="middle">requests per job</text>`,
    `<text transform="translate(18 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">p95 detection delay (s)</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const xv = (xMax * i) / 5;
    const yv = (yMax * i) / 5;
    parts.push(
      `<text x="${x(xv)}" y="${H - m.b + 16}" text-anchor="middle">${round(xv, 1)}</text>`,
      `<text x="${m.l - 8}" y="${y(yv) + 4}" text-anchor="end">${round(yv, 1)}</text>`,
      `<line x1="${m.l}" y1="${y(yv)}" x2="${W - m.r}" y2="${y(yv)}" stroke="#eee"/>`,
    );
  }
  let legendY = m.t + 10;
  for (const p of points) {
    const c = colors[p.name] ?? "black";
    const wx = x(p.warm.requestsPerJob);
    const wy = y(p.warm.p95Ms / 1000);
    const cx = x(p.cold.requestsPerJob);
    const cy = y(p.cold.p95Ms / 1000);
    parts.push(
      `<line x1="${cx}" y1="${cy}" x2="${wx}" y2="${wy}" stroke="${c}" stroke-dasharray="3 3"/>`,
      `<circle cx="${cx}" cy="${cy}" r="6" fill="white" stroke="${c}" stroke-width="2"/>`,
      `<circle cx="${wx}" cy="${wy}" r="7" fill="${c}"/>`,
      `<text x="${wx + 10}" y="${wy - 8}" fill="${c}">${p.name}</text>`,
      `<circle cx="${W - m.r + 20}" cy="${legendY}" r="6" fill="${c}"/>`,
      `<text x="${W - m.r + 32}" y="${legendY + 4}">${p.name}</text>`,
    );
    legendY += 20;
  }
  parts.push(
    `<circle cx="${W - m.r + 20}" cy="${legendY + 10}" r="6" fill="#444"/>`,
    `<text x="${W - m.r + 32}" y="${legendY + 14}">warm</text>`,
    `<circle cx="${W - m.r + 20}" cy="${legendY + 30}" r="6" fill="white" stroke="#444" stroke-width="2"/>`,
    `<text x="${W - m.r + 32}" y="${legendY + 34}">cold start</text>`,
    "</svg>",
  );
  return `${parts.join("\n")}\n`;
}

async function main(): Promise<void> {
  const started = Date.now();
  const loadAtStart = loadavg().map((l) => round(l, 2));
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 });
  reportRedisErrors(redis, REDIS_URL, "economy");
  const { jobs, specs } = plan();
  log(
    `economy: ${JOBS} jobs at ${RATE}/s (seed ${SEED}), min ${MIN_MS} ms, max ${MAX_MS} ms, fixed ${FIXED_MS} ms; ${jobs.filter((j) => j.cold).length} cold`,
  );
  const runs: Run[] = [];
  try {
    for (const mode of MODES) {
      const prefix = `bench:economy:${mode.name}:${randomUUID()}:`;
      const sim = await startSimulator({ apiKey: API_KEY, seed: SEED });
      const daemon = spawnSubject({
        name: `daemon-${mode.name}`,
        entry: "dist/cli/main.js",
        args: ["run"],
        nodeFlags: START_FLAGS,
        env: {
          IDUNOX_API_URL: sim.url,
          IDUNOX_API_KEY: API_KEY,
          REDIS_URL,
          POLLER_KEY_PREFIX: prefix,
          POLLER_HTTP_PORT: "0",
          POLLER_INTAKE_INTERVAL_MS: "100",
          POLLER_REPLICA_ID: `economy-${mode.name}`,
          LOG_LEVEL: "warn",
          ...mode.env,
        },
      });
      const store = new Store(redis, { prefix, streamMaxLen: 1_000_000, stateTtlMs: 60_000 });
      runs.push({ mode, prefix, sim, daemon, store, lagSamples: [] });
    }

    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const r of runs) {
          const stats = await r.store.stats(Date.now()).catch(() => null);
          if (stats !== null && stats.tracked > 0) r.lagSamples.push(stats.scheduleLagSeconds);
        }
        await sleep(250);
      }
    })();

    const t0 = performance.now();
    for (const [i, job] of jobs.entries()) {
      const wait = job.arriveAtMs - (performance.now() - t0);
      if (wait > 0) await sleep(wait);
      const spec = specs[i];
      for (const r of runs) {
        r.sim.addJob({ ...spec, jobId: job.id });
        await redis.sadd(`${r.prefix}pending`, job.id);
      }
    }
    log(`economy: all ${JOBS} jobs added after ${round((performance.now() - t0) / 1000)} s`);
    for (const r of runs) {
      await waitUntil(
        `every job of ${r.mode.name} is final`,
        async () => ((await redis.scard(`${r.prefix}pending`)) === 0 ? true : undefined),
        10 * 60_000,
        500,
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}\n${r.daemon.tail()}`);
      });
    }
    sampling = false;
    await sampler;

    const results: Result[] = [];
    for (const r of runs) {
      const requests = r.sim.stats().byJob;
      const delays = await delaysOf(redis, r.prefix);
      const warm = jobs.filter((j) => !j.cold);
      const cold = jobs.filter((j) => j.cold);
      const byType = JOB_TYPES.map((type) =>
        row(
          type.replace("pipeline.", ""),
          warm.filter((j) => j.type === type),
          requests,
          delays,
        ),
      );
      results.push({
        schedule: r.mode.name,
        label: r.mode.label,
        all: row("all", jobs, requests, delays),
        warm: row("warm", warm, requests, delays),
        cold: row("cold", cold, requests, delays),
        warmByType: byType,
        scheduleLagSeconds: {
          p50: round(percentile(r.lagSamples, 50), 2),
          p95: round(percentile(r.lagSamples, 95), 2),
          max: round(Math.max(0, ...r.lagSamples), 2),
        },
      });
    }

    const backoff = results.find((r) => r.schedule === "backoff");
    const predictive = results.find((r) => r.schedule === "predictive");
    const reqRatio =
      backoff && predictive ? predictive.warm.requestsPerJob / backoff.warm.requestsPerJob : NaN;
    const p95Ratio = backoff && predictive ? predictive.warm.p95Ms / backoff.warm.p95Ms : NaN;
    const targets = [
      {
        target: "predictive requests/job <= 0.7 x backoff (warm)",
        measured: round(reqRatio, 2),
        status: reqRatio <= 0.7 ? "PASS" : "MISS",
      },
      {
        target: "predictive p95 delay <= 0.5 x backoff (warm)",
        measured: round(p95Ratio, 2),
        status: p95Ratio <= 0.5 ? "PASS" : "MISS",
      },
    ];

    const rows = results.flatMap((r) =>
      [r.warm, r.cold, r.all].map((x) => [
        r.label,
        x.schedule,
        x.jobs,
        x.requestsPerJob,
        x.changes,
        x.p50Ms,
        x.p95Ms,
        x.p99Ms,
        x.schedule === "all" ? `${r.scheduleLagSeconds.p95} / ${r.scheduleLagSeconds.max}` : "",
      ]),
    );
    const out = [
      "",
      `Economy (${JOBS} jobs, pipeline mix, seed ${SEED}; delays in ms from the simulator's ground truth)`,
      table(
        [
          "schedule",
          "jobs",
          "n",
          "requests/job",
          "changes",
          "p50",
          "p95",
          "p99",
          "lag p95 / max s",
        ],
        rows,
      ),
      "",
      "Warm jobs by type (requests/job, p95 ms)",
      table(
        ["type", ...results.map((r) => r.schedule)],
        JOB_TYPES.map((type, i) => [
          type.replace("pipeline.", ""),
          ...results.map((r) => {
            const t = r.warmByType[i];
            return t ? `${t.requestsPerJob} / ${t.p95Ms}` : "-";
          }),
        ]),
      ),
      "",
      table(
        ["target", "measured", "status"],
        targets.map((t) => [t.target, t.measured, t.status]),
      ),
    ];
    process.stdout.write(`${out.join("\n")}\n`);

    const result = {
      date: new Date(started).toISOString(),
      durationSeconds: Math.round((Date.now() - started) / 1000),
      settings: {
        jobs: JOBS,
        rate: RATE,
        seed: SEED,
        minMs: MIN_MS,
        maxMs: MAX_MS,
        fixedMs: FIXED_MS,
      },
      machine: {
        loadAverageAtStart: loadAtStart,
        loadAverageAtEnd: loadavg().map((l) => round(l, 2)),
      },
      results,
      targets,
    };
    const dir = join(ROOT, "bench", "results");
    mkdirSync(dir, { recursive: true });
    const stamp = result.date.replace(/:/g, "-").replace(/\.\d+Z$/, "Z");
    writeFileSync(join(dir, `economy-${stamp}.json`), `${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(join(dir, "economy-latest.json"), `${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(
      join(ROOT, "docs", "economy.svg"),
      chart(results.map((r) => ({ name: r.schedule, warm: r.warm, cold: r.cold }))),
    );
    log(`results written to bench/results/economy-${stamp}.json; chart to docs/economy.svg`);
  } finally {
    for (const r of runs) {
      await r.daemon.stop();
      await r.sim.close();
      await deleteKeysWithPrefix(redis, r.prefix);
    }
    redis.disconnect();
  }
}

main().catch((err: unknown) => {
  log(`economy bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
});
