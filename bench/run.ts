import { once } from "node:events";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { join, relative } from "node:path";
import { Redis } from "ioredis";
import { freePort } from "../src/lib/net.js";
import { ROOT, spawnHelper, waitUntil } from "./lib/children.js";
import { type SelfTime, topSelfTime, writeFoldedStacks } from "./lib/profile.js";
import { reportRedisErrors } from "./lib/redis.js";
import { round } from "./lib/stats.js";
import {
  API_KEY,
  BASELINE_ENTRY,
  type Context,
  type EventLatencyRow,
  eventLatency,
  type Plan,
  type ScaleRow,
  type SubjectKind,
  saturated,
  scale,
  type ThroughputRow,
} from "./scenarios.js";

/**
 * `npm run bench`: every scenario side by side in one run, printed as tables and written to
 * bench/results/<timestamp>.json and bench/results/latest.json.
 *
 *   BENCH_QUICK=1         ~1-minute smoke run (small sizes, short windows, concurrency 32 only)
 *   BENCH_SCALE=1m        also track 1,000,000 jobs (adds several minutes)
 *   BENCH_PROFILE=1       one more saturated daemon run under --cpu-prof, summarized
 *   BENCH_CONCURRENCY=8,32  the concurrencies of the saturated runs (default 8,32,128)
 *   BENCH_ONLY=a,b        run only these groups: ceiling, daemon, peers, scale, events, latency,
 *                         realapi (latency: the saturated daemon against a simulator answering
 *                         after BENCH_LATENCY_MS=100, at BENCH_LATENCY_CONCURRENCY=256,1024;
 *                         polls/s against the bound concurrency / latency)
 *                         (realapi: replicas against a quota and a latency, bench/realapi.ts;
 *                         REALAPI_* variables there; alone it is `npm run bench:realapi`)
 *   BENCH_REDIS_URL=...   default redis://127.0.0.1:6379
 *   BENCH_PRIVATE_REDIS=1 start a throwaway redis-server on a free port instead, so that other
 *                         clients of the shared Redis do not show up in its CPU and commandstats
 *   BENCH_WINDOW_MS=10000 length of the saturated windows (A/B comparisons of small changes
 *                         need longer windows than the quick run's 4 s to rise above the noise)
 *   BENCH_SATURATED_JOBS=100000  tracked jobs of the saturated runs (default 20,000; full runs)
 *   BENCH_BASELINE=/tmp/old/dist/cli/main.js  also run another build of the daemon as subject
 *                         "baseline", right before "daemon" at each concurrency (A/B in one run)
 *   BENCH_ROUNDS=3        repeat the saturated runs; with a baseline, the order of the pair
 *                         alternates each round and a table gives the daemon/baseline ratios
 *                         per pair (median, min, max): a loaded 2-core machine needs several
 *   BENCH_DAEMON_FLAGS="--max-semi-space-size=8"  extra node flags for the saturated daemon
 *                         runs, to measure a runtime tuning side by side with the defaults
 *   BENCH_BASELINE_FLAGS="..."  the baseline's extra flags (default: the daemon's); with
 *                         BENCH_BASELINE=dist/cli/main.js, two settings of one build side by side
 *   BENCH_SUBJECT_LOGS=/tmp/logs  also append each subject's output to <dir>/<subject>.log
 */

const env = process.env;
const quick = env["BENCH_QUICK"] === "1";
const rounds = Math.max(1, Number(env["BENCH_ROUNDS"] ?? 1));
const latencyMs = Number(env["BENCH_LATENCY_MS"] ?? 100);
const latencyConcurrencies = (env["BENCH_LATENCY_CONCURRENCY"] ?? "256,1024")
  .split(",")
  .map(Number);
const flagsOf = (name: string) => (env[name] ?? "").split(/\s+/).filter((f) => f !== "");
const daemonFlags = flagsOf("BENCH_DAEMON_FLAGS");
/** Flags of the baseline's runs; by default the daemon's. */
const baselineFlags =
  env["BENCH_BASELINE_FLAGS"] === undefined ? daemonFlags : flagsOf("BENCH_BASELINE_FLAGS");
const flagsFor = (kind: SubjectKind) =>
  kind === "baseline" ? baselineFlags : kind === "daemon" ? daemonFlags : [];
const only = new Set((env["BENCH_ONLY"] ?? "").split(",").filter((s) => s !== ""));
const wants = (group: string) => only.size === 0 || only.has(group);
const concurrencyOverride = env["BENCH_CONCURRENCY"]?.split(",").map(Number);
const windowOverride =
  env["BENCH_WINDOW_MS"] === undefined ? undefined : Number(env["BENCH_WINDOW_MS"]);

const plan: Plan = quick
  ? {
      quick,
      warmupMs: 1000,
      windowMs: windowOverride ?? 4000,
      saturatedJobs: 5000,
      concurrencies: concurrencyOverride ?? [32],
      scaleSizes: [10_000],
      pickupProbes: 50,
      eventJobs: 50,
      eventWindowMs: 4000,
      profile: env["BENCH_PROFILE"] === "1",
    }
  : {
      quick,
      warmupMs: 5000,
      windowMs: windowOverride ?? 15_000,
      saturatedJobs: Number(env["BENCH_SATURATED_JOBS"] ?? 20_000),
      concurrencies: concurrencyOverride ?? [8, 32, 128],
      scaleSizes: env["BENCH_SCALE"] === "1m" ? [100_000, 1_000_000] : [100_000],
      pickupProbes: 200,
      eventJobs: 200,
      eventWindowMs: 20_000,
      profile: env["BENCH_PROFILE"] === "1",
    };

const log = (line: string) => process.stderr.write(`${line}\n`);

async function privateRedis(): Promise<{ url: string; stop(): void }> {
  const port = await freePort();
  const { spawn } = await import("node:child_process");
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdio: "ignore" },
  );
  const url = `redis://127.0.0.1:${port}`;
  const probe = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  // Refused connections are expected until the server listens; waitUntil retries them.
  probe.on("error", () => {});
  await waitUntil(
    "the private redis-server answers",
    async () =>
      (await probe
        .connect()
        .then(() => probe.ping())
        .catch(() => null))
        ? true
        : undefined,
    10_000,
    100,
  );
  probe.disconnect();
  return { url, stop: () => child.kill("SIGTERM") };
}

function machine(redisInfo: string): Record<string, string | number> {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  return {
    cpus: availableParallelism(),
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown",
    node: process.version,
    redis: /^redis_version:(.+)$/m.exec(redisInfo)?.[1]?.trim() ?? "unknown",
  };
}

/** The daemon under test is the production build; refuse to measure a stale one. */
function checkBuild(): void {
  const entry = join(ROOT, "dist", "cli", "main.js");
  if (!existsSync(entry)) throw new Error("dist/ is missing: run `npm run build` first");
  const newestSource = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce((newest, e) => {
      const path = join(dir, e.name);
      return Math.max(newest, e.isDirectory() ? newestSource(path) : statSync(path).mtimeMs);
    }, 0);
  if (newestSource(join(ROOT, "src")) > statSync(entry).mtimeMs) {
    log("warning: src/ is newer than dist/: the daemon measured may not be the current code");
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

interface Target {
  target: string;
  measured: string;
  status: "PASS" | "MISS" | "NOT RUN";
}

function targets(
  throughput: ThroughputRow[],
  scaleRows: ScaleRow[],
  events: EventLatencyRow | null,
): Target[] {
  const at32 = (s: SubjectKind) => throughput.find((r) => r.subject === s && r.concurrency === 32);
  const daemon = at32("daemon");
  const ceiling = at32("ceiling");
  const out: Target[] = [];
  const check = (target: string, measured: string | null, ok: boolean) =>
    out.push({
      target,
      measured: measured ?? "-",
      status: measured === null ? "NOT RUN" : ok ? "PASS" : "MISS",
    });
  const ratio = daemon && ceiling ? daemon.pollsPerSec / ceiling.pollsPerSec : null;
  check(
    "polls/s >= 0.7 x ceiling (c=32)",
    ratio === null ? null : ratio.toFixed(2),
    (ratio ?? 0) >= 0.7,
  );
  check(
    "<= 2 Redis round trips per poll",
    daemon ? String(daemon.roundTripsPerPoll) : null,
    (daemon?.roundTripsPerPoll ?? 99) <= 2,
  );
  check(
    "Redis CPU <= 25 us per poll",
    daemon ? `${daemon.redisCpuUsPerPoll} us` : null,
    (daemon?.redisCpuUsPerPoll ?? 999) <= 25,
  );
  const biggest = scaleRows.at(-1);
  const million = scaleRows.find((r) => r.trackedJobs >= 1_000_000);
  const rssRow = million ?? biggest;
  check(
    `daemon RSS < 150 MiB at 1M${million ? "" : ` (1M not run: at ${biggest?.trackedJobs ?? "-"})`}`,
    rssRow ? `${rssRow.daemonRssMiB} MiB` : null,
    (rssRow?.daemonRssMiB ?? 999) < 150,
  );
  const at100k = scaleRows.find((r) => r.trackedJobs === 100_000) ?? biggest;
  check(
    `pickup p99 < 1 s at 100k${at100k?.trackedJobs === 100_000 ? "" : ` (at ${at100k?.trackedJobs ?? "-"})`}`,
    at100k ? `${at100k.pickupP99Ms} ms` : null,
    (at100k?.pickupP99Ms ?? 1e9) < 1000,
  );
  const trackRow = million ?? biggest;
  check(
    `track() pickup p99 < 200 ms at 1M${million ? "" : ` (1M not run: at ${biggest?.trackedJobs ?? "-"})`}`,
    trackRow ? `${trackRow.trackPickupP99Ms} ms` : null,
    (trackRow?.trackPickupP99Ms ?? 1e9) < 200,
  );
  check(
    "event latency p99 < 10 ms (not saturated)",
    events ? `${events.p99Ms} ms` : null,
    (events?.p99Ms ?? 1e9) < 10,
  );
  return out;
}

async function profileDaemon(
  ctx: Context,
): Promise<{ file: string; folded: string; top: SelfTime[] } | null> {
  const dir = join(ROOT, "bench", "results", "profiles");
  mkdirSync(dir, { recursive: true });
  const before = new Set(readdirSync(dir));
  await saturated(ctx, "daemon", 32, [...daemonFlags, "--cpu-prof", "--cpu-prof-dir", dir]);
  const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile") && !before.has(f));
  if (file === undefined) return null;
  const path = join(dir, file);
  return {
    file: relative(ROOT, path),
    folded: relative(ROOT, writeFoldedStacks(path)),
    top: topSelfTime(path),
  };
}

/**
 * The real API scenario runs as its own process (bench/realapi.ts: its replicas, simulator and
 * Redis figures are its own); its tables join this report.
 */
interface AbRow {
  concurrency: number;
  pairs: number;
  /** polls/s, CPU/poll, Redis CPU/poll and RSS, each daemon/baseline per pair. */
  ratios: number[][];
}

/**
 * Daemon against baseline, pair by pair: the i-th run of each at a concurrency. Ratios within a
 * pair share the machine's state of the moment, so they vary far less than the absolute figures.
 */
function abPairs(rows: readonly ThroughputRow[]): AbRow[] {
  const out: AbRow[] = [];
  for (const c of new Set(rows.map((r) => r.concurrency))) {
    const of = (s: SubjectKind) => rows.filter((r) => r.subject === s && r.concurrency === c);
    const [base, ours] = [of("baseline"), of("daemon")];
    const n = Math.min(base.length, ours.length);
    if (n === 0) continue;
    const pick = (f: (r: ThroughputRow) => number) =>
      Array.from(
        { length: n },
        (_, i) => f(ours[i] as ThroughputRow) / f(base[i] as ThroughputRow),
      );
    out.push({
      concurrency: c,
      pairs: n,
      ratios: [
        pick((r) => r.pollsPerSec),
        pick((r) => r.cpuUsPerPoll),
        pick((r) => r.redisCpuUsPerPoll),
        pick((r) => r.rssMiB),
      ],
    });
  }
  return out;
}

function spread(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median =
    sorted.length % 2 === 1
      ? (sorted[mid] as number)
      : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  const f = (x: number) => x.toFixed(2);
  return sorted.length === 1
    ? f(median)
    : `${f(median)} (${f(sorted[0] as number)}-${f(sorted.at(-1) as number)})`;
}

async function runRealApi(): Promise<string> {
  const { spawn } = await import("node:child_process");
  const child = spawn(process.execPath, ["--import", "tsx", "bench/realapi.ts"], {
    cwd: ROOT,
    env: process.env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  let text = "";
  child.stdout.on("data", (chunk: Buffer) => {
    text += chunk.toString("utf8");
  });
  const [code] = (await once(child, "exit")) as [number | null];
  if (code !== 0) throw new Error(`bench/realapi.ts exited with ${code}`);
  return text;
}

// ---- main ------------------------------------------------------------------------------------

async function main(): Promise<void> {
  checkBuild();
  const started = Date.now();
  const loadAtStart = loadavg().map((l) => round(l, 2));
  const ownRedis = env["BENCH_PRIVATE_REDIS"] === "1" ? await privateRedis() : null;
  const redisUrl = ownRedis?.url ?? env["BENCH_REDIS_URL"] ?? "redis://127.0.0.1:6379";
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 3 });
  reportRedisErrors(redis, redisUrl, "bench");
  const simEnv = { LOG_LEVEL: "warn" };
  const simArgs = ["simulate", "--port", "0", "--json", "--api-key", API_KEY];
  const fastSim = await spawnHelper("dist/cli/main.js", [...simArgs, "--fast"], simEnv);
  const normalSim = await spawnHelper("dist/cli/main.js", simArgs, simEnv);
  const ctx: Context = {
    plan,
    redis,
    redisUrl,
    fastSimUrl: (JSON.parse(fastSim.firstLine) as { url: string }).url,
    normalSimUrl: (JSON.parse(normalSim.firstLine) as { url: string }).url,
    log,
  };
  const info = machine(await redis.info("server"));
  log(
    `bench (${quick ? "quick" : "full"}) on ${info["cpus"]} x ${info["cpuModel"]}, node ${info["node"]}, redis ${info["redis"]} at ${redisUrl}`,
  );

  const throughput: ThroughputRow[] = [];
  const atLatency: ThroughputRow[] = [];
  const scaleRows: ScaleRow[] = [];
  let events: EventLatencyRow | null = null;
  let profile: Awaited<ReturnType<typeof profileDaemon>> = null;
  let realApi: string | null = null;
  try {
    const run = async (kind: SubjectKind, c: number) => {
      log(`saturated: ${kind} at concurrency ${c} ...`);
      const row = await saturated(ctx, kind, c, flagsFor(kind));
      log(`  ${row.pollsPerSec} polls/s, ${row.cpuUsPerPoll} us CPU/poll`);
      throughput.push(row);
    };
    for (let round = 0; round < rounds; round++) {
      for (const c of plan.concurrencies) {
        if (wants("ceiling")) await run("ceiling", c);
        if (!wants("daemon")) continue;
        const pair: SubjectKind[] =
          BASELINE_ENTRY === undefined ? ["daemon"] : ["baseline", "daemon"];
        for (const kind of round % 2 === 0 ? pair : pair.reverse()) await run(kind, c);
      }
    }
    if (wants("latency")) {
      const slowSim = await spawnHelper(
        "dist/cli/main.js",
        [...simArgs, "--fast", "--latency", String(latencyMs)],
        simEnv,
      );
      try {
        const url = (JSON.parse(slowSim.firstLine) as { url: string }).url;
        for (const c of latencyConcurrencies) {
          for (const kind of BASELINE_ENTRY === undefined
            ? ["daemon" as const]
            : (["baseline", "daemon"] as const)) {
            log(`${latencyMs} ms answers: ${kind} at concurrency ${c} ...`);
            const row = await saturated(ctx, kind, c, flagsFor(kind), url);
            log(`  ${row.pollsPerSec} polls/s, RSS ${row.rssMiB} MiB`);
            atLatency.push(row);
          }
        }
      } finally {
        await slowSim.stop();
      }
    }
    if (wants("peers")) {
      await run("naive", 32);
      await run("bullmq", 32);
    }
    if (wants("scale")) {
      for (const n of plan.scaleSizes) {
        log(`scale: ${n} tracked jobs ...`);
        scaleRows.push(await scale(ctx, n));
      }
    }
    if (wants("events")) {
      log("event latency ...");
      events = await eventLatency(ctx);
    }
    if (plan.profile) {
      log("profiling the saturated daemon ...");
      profile = await profileDaemon(ctx);
    }
    if (wants("realapi")) realApi = await runRealApi();
  } finally {
    await fastSim.stop();
    await normalSim.stop();
    redis.disconnect();
    ownRedis?.stop();
  }

  const ceilingAt = (c: number) =>
    throughput.find((r) => r.subject === "ceiling" && r.concurrency === c)?.pollsPerSec;
  const checks = targets(throughput, scaleRows, events);
  const ab = abPairs(throughput);
  const out = [
    ...(realApi === null ? [] : [realApi.trimEnd()]),
    "",
    `Saturated (${plan.saturatedJobs} tracked jobs, intervals 10 ms, window ${plan.windowMs / 1000} s)`,
    table(
      [
        "subject",
        "conc",
        "polls/s",
        "x ceiling",
        "cores",
        "CPU us/poll",
        "redis cmds/poll",
        "round trips/poll",
        "redis CPU us/poll",
        "sim CPU us/poll",
        "machine cores",
        "machine CPU us/poll",
        "RSS MiB",
        "anon/file MiB",
        "heap used/total MiB",
        "external MiB",
      ],
      throughput.map((r) => {
        const ceiling = ceilingAt(r.concurrency);
        return [
          r.subject,
          r.concurrency,
          r.pollsPerSec,
          ceiling ? (r.pollsPerSec / ceiling).toFixed(2) : "-",
          r.subjectCores,
          r.cpuUsPerPoll,
          r.redisCommandsPerPoll,
          r.roundTripsPerPoll,
          r.redisCpuUsPerPoll,
          r.simCpuUsPerPoll,
          r.machineCores ?? "-",
          r.machineCpuUsPerPoll ?? "-",
          r.rssMiB,
          r.rssAnonMiB === null ? "-" : `${r.rssAnonMiB}/${r.rssFileMiB}`,
          `${r.heapUsedMiB}/${r.heapTotalMiB}`,
          r.externalMiB,
        ];
      }),
    ),
    ...(ab.length === 0
      ? []
      : [
          "",
          "A/B: daemon / baseline, each pair measured back to back (median, min-max)",
          table(
            ["conc", "pairs", "polls/s", "CPU us/poll", "redis CPU us/poll", "RSS"],
            ab.map((r) => [r.concurrency, r.pairs, ...r.ratios.map(spread)]),
          ),
        ]),
    ...(atLatency.length === 0
      ? []
      : [
          "",
          `Concurrency at ${latencyMs} ms answers (bound: concurrency x 1000 / ${latencyMs} polls/s)`,
          table(
            [
              "subject",
              "conc",
              "polls/s",
              "x bound",
              "cores",
              "CPU us/poll",
              "RSS MiB",
              "anon/file MiB",
              "heap used/total MiB",
            ],
            atLatency.map((r) => [
              r.subject,
              r.concurrency,
              r.pollsPerSec,
              ((r.pollsPerSec * latencyMs) / (r.concurrency * 1000)).toFixed(2),
              r.subjectCores,
              r.cpuUsPerPoll,
              r.rssMiB,
              r.rssAnonMiB === null ? "-" : `${r.rssAnonMiB}/${r.rssFileMiB}`,
              `${r.heapUsedMiB}/${r.heapTotalMiB}`,
            ]),
          ),
        ]),
    "",
    "Scale (daemon, concurrency 32, intervals 10 min)",
    table(
      [
        "tracked",
        "first sweep s",
        "sweep polls/s",
        "RSS MiB",
        "poller B/job",
        "pending B/job",
        "SADD pickup p50 ms",
        "SADD pickup p99 ms",
        "track() pickup p50 ms",
        "track() pickup p99 ms",
        "idle redis cores",
        "idle daemon cores",
      ],
      scaleRows.map((r) => [
        r.trackedJobs,
        r.firstSweepSeconds,
        r.sweepPollsPerSec,
        r.daemonRssMiB,
        r.pollerBytesPerJob,
        r.pendingBytesPerJob,
        r.pickupP50Ms,
        r.pickupP99Ms,
        r.trackPickupP50Ms,
        r.trackPickupP99Ms,
        r.idleRedisCores,
        r.idleDaemonCores,
      ]),
    ),
    "",
    "Event latency (response decided -> readable by XREAD BLOCK)",
    table(
      [
        "jobs",
        "interval ms",
        "polls/s",
        "events",
        "p50 ms",
        "p99 ms",
        "max ms",
        "daemon CPU us/poll",
      ],
      events
        ? [
            [
              events.jobs,
              events.pollIntervalMs,
              events.pollsPerSec,
              events.events,
              events.p50Ms,
              events.p99Ms,
              events.maxMs,
              events.daemonCpuUsPerPoll,
            ],
          ]
        : [],
    ),
    "",
    "Targets",
    table(
      ["target", "measured", "status"],
      checks.map((t) => [t.target, t.measured, t.status]),
    ),
  ];
  if (profile !== null) {
    out.push(
      "",
      `Daemon CPU profile, top self time (${profile.file}; flame graph input: ${profile.folded})`,
      table(
        ["self ms", "%", "function", "where"],
        profile.top.map((t) => [t.ms, t.percent, t.fn, t.where]),
      ),
    );
  }
  process.stdout.write(`${out.join("\n")}\n`);

  const result = {
    date: new Date(started).toISOString(),
    durationSeconds: Math.round((Date.now() - started) / 1000),
    mode: quick ? "quick" : "full",
    machine: {
      ...info,
      redisUrl: ownRedis ? "private redis-server" : redisUrl,
      // Other work on the machine competes for the same cores; the figures are only as quiet
      // as these.
      loadAverageAtStart: loadAtStart,
      loadAverageAtEnd: loadavg().map((l) => round(l, 2)),
    },
    plan,
    daemonFlags,
    baselineFlags,
    throughput,
    atLatency: { latencyMs, rows: atLatency },
    scale: scaleRows,
    eventLatency: events,
    targets: checks,
    profile,
  };
  const dir = join(ROOT, "bench", "results");
  mkdirSync(dir, { recursive: true });
  const stamp = result.date.replace(/:/g, "-").replace(/\.\d+Z$/, "Z");
  const text = `${JSON.stringify(result, null, 2)}\n`;
  writeFileSync(join(dir, `${stamp}${quick ? "-quick" : ""}.json`), text);
  writeFileSync(join(dir, "latest.json"), text);
  log(`results written to bench/results/${stamp}${quick ? "-quick" : ""}.json and latest.json`);
}

main().catch((err: unknown) => {
  log(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
});
