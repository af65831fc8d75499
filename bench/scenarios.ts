import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { Redis } from "ioredis";
import { trackIds } from "../src/client/track.js";
import { keysFor } from "../src/store/keys.js";
import {
  START_FLAGS,
  type Subject,
  type SubjectSample,
  sleep,
  spawnSubject,
  waitUntil,
} from "./lib/children.js";
import {
  benchPrefix,
  cleanPrefix,
  jobIds,
  memoryUsage,
  redisDelta,
  reportRedisErrors,
  seedPending,
  snapshotRedis,
} from "./lib/redis.js";
import { MiB, percentile, round } from "./lib/stats.js";

export const API_KEY = "bench-key";

export interface Plan {
  quick: boolean;
  warmupMs: number;
  windowMs: number;
  saturatedJobs: number;
  concurrencies: number[];
  scaleSizes: number[];
  pickupProbes: number;
  eventJobs: number;
  eventWindowMs: number;
  profile: boolean;
}

export interface Context {
  plan: Plan;
  redis: Redis;
  redisUrl: string;
  /** The fast-mode simulator every throughput scenario shares. */
  fastSimUrl: string;
  /** The normal-mode simulator (scripted lifecycles) of the event latency scenario. */
  normalSimUrl: string;
  log(line: string): void;
}

export type SubjectKind = "ceiling" | "daemon" | "baseline" | "naive" | "bullmq";

/**
 * BENCH_BASELINE: the `cli/main.js` of another build of the daemon (e.g. the last release built
 * into a temp dir). It runs as subject "baseline" right beside "daemon", same settings and
 * flags, so a change is measured side by side in one run on the same loaded machine.
 */
export const BASELINE_ENTRY = process.env["BENCH_BASELINE"];

/** One measured window of one subject. Per-poll figures divide by the simulator's count. */
export interface ThroughputRow {
  subject: SubjectKind;
  concurrency: number;
  trackedJobs: number;
  seconds: number;
  polls: number;
  pollsPerSec: number;
  /** Cores the subject kept busy (1.0 = one core all the time). */
  subjectCores: number;
  cpuUsPerPoll: number;
  redisCommandsPerPoll: number;
  roundTripsPerPoll: number;
  redisCpuUsPerPoll: number;
  /** The simulator's own CPU per poll: its share of the machine. */
  simCpuUsPerPoll: number;
  /** Cores busy on the whole machine during the window (Linux), every process included. */
  machineCores: number | null;
  /** Busy CPU of the whole machine per poll: what one poll costs the box, all parties together. */
  machineCpuUsPerPoll: number | null;
  rssMiB: number;
  /** The anonymous and file-backed parts of the RSS (see SubjectSample). */
  rssAnonMiB: number | null;
  rssFileMiB: number | null;
  /** V8 heap in use and reserved, and external memory, at the end of the window. */
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
  topRedisCommands: Array<[string, number]>;
}

export interface ScaleRow {
  trackedJobs: number;
  seedSeconds: number;
  firstSweepSeconds: number;
  sweepPollsPerSec: number;
  daemonRssMiB: number;
  /** Bytes per tracked job in the poller's own keys (tracked, schedule, state, aliases, expiry). */
  pollerBytesPerJob: number;
  pollerKeysBytes: Record<string, number>;
  pendingBytesPerJob: number;
  pickupProbes: number;
  pickupP50Ms: number;
  pickupP99Ms: number;
  pickupMaxMs: number;
  /** The same through the library's track(): the intake hint, no diff of the pending set. */
  trackPickupP50Ms: number;
  trackPickupP99Ms: number;
  trackPickupMaxMs: number;
  /** While nothing is due: what intake and claim polling cost at this size. */
  idleRedisCores: number;
  idleDaemonCores: number;
}

export interface EventLatencyRow {
  jobs: number;
  pollIntervalMs: number;
  events: number;
  pollsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  daemonCpuUsPerPoll: number;
}

// ---- subjects --------------------------------------------------------------------------------

interface SubjectSettings {
  kind: SubjectKind;
  prefix: string;
  concurrency: number;
  simUrl: string;
  minIntervalMs: number;
  maxIntervalMs: number;
  ceilingIds?: number;
  daemonEnv?: Record<string, string>;
  nodeFlags?: string[];
}

function startSubject(ctx: Context, s: SubjectSettings): Subject {
  if (s.kind === "daemon" || s.kind === "baseline") {
    if (s.kind === "baseline" && BASELINE_ENTRY === undefined) {
      throw new Error("the baseline subject needs BENCH_BASELINE");
    }
    return spawnSubject({
      name: s.kind,
      entry: s.kind === "baseline" ? (BASELINE_ENTRY as string) : "dist/cli/main.js",
      args: ["run"],
      nodeFlags: [...START_FLAGS, ...(s.nodeFlags ?? [])],
      env: {
        IDUNOX_API_URL: s.simUrl,
        IDUNOX_API_KEY: API_KEY,
        REDIS_URL: ctx.redisUrl,
        POLLER_KEY_PREFIX: s.prefix,
        POLLER_MIN_INTERVAL_MS: String(s.minIntervalMs),
        POLLER_MAX_INTERVAL_MS: String(s.maxIntervalMs),
        POLLER_BACKOFF_FACTOR: "1",
        POLLER_JITTER: "0",
        POLLER_CONCURRENCY: String(s.concurrency),
        POLLER_HTTP_PORT: "0",
        POLLER_REPLICA_ID: "bench",
        LOG_LEVEL: "info",
        ...s.daemonEnv,
      },
    });
  }
  const entry = s.kind === "ceiling" ? "bench/ceiling.ts" : `bench/peers/${s.kind}.ts`;
  return spawnSubject({
    name: s.kind,
    entry,
    tsx: true,
    env: {
      BENCH_SIM_URL: s.simUrl,
      BENCH_API_KEY: API_KEY,
      BENCH_CONCURRENCY: String(s.concurrency),
      BENCH_REDIS_URL: ctx.redisUrl,
      BENCH_PREFIX: s.prefix,
      BENCH_MIN_INTERVAL_MS: String(s.minIntervalMs),
      BENCH_MAX_INTERVAL_MS: String(s.maxIntervalMs),
      BENCH_IDS: String(s.ceilingIds ?? 0),
    },
  });
}

async function simStats(simUrl: string): Promise<{ requests: number; cpuUs: number }> {
  const res = await fetch(`${simUrl}/__sim/stats`, { headers: { "x-api-key": API_KEY } });
  if (!res.ok) throw new Error(`simulator stats: HTTP ${res.status}`);
  return (await res.json()) as { requests: number; cpuUs: number };
}

export async function simRequests(simUrl: string): Promise<number> {
  return (await simStats(simUrl)).requests;
}

/** Busy CPU time of the whole machine in µs (Linux /proc/stat), or null elsewhere. */
async function machineBusyUs(): Promise<number | null> {
  try {
    const line = (await readFile("/proc/stat", "utf8")).split("\n")[0] ?? "";
    const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    const busy = ticks.reduce((a, b) => a + b, 0) - (ticks[3] ?? 0) - (ticks[4] ?? 0);
    return busy * (1e6 / 100); // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}

interface Window {
  seconds: number;
  polls: number;
  simCpuUs: number;
  /** Cores the whole machine kept busy in the window (every process), when known. */
  machineCores: number | null;
  start: SubjectSample;
  end: SubjectSample;
  redis: ReturnType<typeof redisDelta>;
}

/** Samples the subject, the simulator and Redis at both ends of a window of `ms`. */
async function measure(
  ctx: Context,
  subject: Subject,
  simUrl: string,
  ms: number,
): Promise<Window> {
  const [start, q0, r0, m0] = await Promise.all([
    subject.sample(),
    simStats(simUrl),
    snapshotRedis(ctx.redis),
    machineBusyUs(),
  ]);
  await sleep(ms);
  const [end, q1, r1, m1] = await Promise.all([
    subject.sample(),
    simStats(simUrl),
    snapshotRedis(ctx.redis),
    machineBusyUs(),
  ]);
  const seconds = (end.at - start.at) / 1000;
  return {
    seconds,
    polls: q1.requests - q0.requests,
    simCpuUs: q1.cpuUs - q0.cpuUs,
    machineCores: m0 !== null && m1 !== null ? (m1 - m0) / (seconds * 1e6) : null,
    start,
    end,
    redis: redisDelta(r0, r1),
  };
}

// ---- saturated throughput --------------------------------------------------------------------

export async function saturated(
  ctx: Context,
  kind: SubjectKind,
  concurrency: number,
  nodeFlags: string[] = [],
  /** A fast-mode simulator; another one than the shared, e.g. one with a latency. */
  simUrl = ctx.fastSimUrl,
): Promise<ThroughputRow> {
  const { plan } = ctx;
  const n = plan.saturatedJobs;
  const prefix = benchPrefix(`sat-${kind}`);
  if (kind !== "ceiling") await seedPending(ctx.redis, `${prefix}pending`, jobIds(n));
  const before = await simRequests(simUrl);
  // The smallest intervals the config allows: every job is always due, so the subject and not
  // the schedule sets the pace.
  const subject = startSubject(ctx, {
    kind,
    prefix,
    concurrency,
    simUrl,
    minIntervalMs: 10,
    maxIntervalMs: 10,
    ceilingIds: n,
    nodeFlags,
  });
  try {
    // The first sweep emits one event per job (null -> running); the window starts after it.
    await waitUntil(
      `${kind} polled all ${n} jobs once`,
      async () => ((await simRequests(simUrl)) - before >= n ? true : undefined),
      180_000,
      200,
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${subject.tail()}`);
    });
    await sleep(plan.warmupMs);
    const w = await measure(ctx, subject, simUrl, plan.windowMs);
    const polls = Math.max(1, w.polls);
    const cpuUs = w.end.cpuUs - w.start.cpuUs;
    return {
      subject: kind,
      concurrency,
      trackedJobs: n,
      seconds: round(w.seconds, 2),
      polls: w.polls,
      pollsPerSec: round(w.polls / w.seconds, 0),
      subjectCores: round(cpuUs / (w.seconds * 1e6), 2),
      cpuUsPerPoll: round(cpuUs / polls),
      redisCommandsPerPoll: round(w.redis.commands / polls, 2),
      roundTripsPerPoll: round((w.end.redisCommandsSent - w.start.redisCommandsSent) / polls, 3),
      redisCpuUsPerPoll: round(w.redis.cpuUs / polls),
      simCpuUsPerPoll: round(w.simCpuUs / polls),
      machineCores: w.machineCores === null ? null : round(w.machineCores, 2),
      machineCpuUsPerPoll:
        w.machineCores === null ? null : round((w.machineCores * w.seconds * 1e6) / polls),
      rssMiB: round(w.end.rssBytes / MiB),
      rssAnonMiB: w.end.rssAnonBytes === null ? null : round(w.end.rssAnonBytes / MiB),
      rssFileMiB: w.end.rssFileBytes === null ? null : round(w.end.rssFileBytes / MiB),
      heapUsedMiB: round(w.end.heapUsedBytes / MiB),
      heapTotalMiB: round(w.end.heapTotalBytes / MiB),
      externalMiB: round(w.end.externalBytes / MiB),
      topRedisCommands: w.redis.top.map(([name, calls]) => [name, round(calls / polls, 3)]),
    };
  } finally {
    const code = await subject.stop();
    if (code !== 0 && (kind === "daemon" || kind === "baseline"))
      ctx.log(`daemon exited with ${code}:\n${subject.tail()}`);
    await cleanPrefix(ctx.redis, prefix);
  }
}

// ---- scale -----------------------------------------------------------------------------------

/** The last entry id of a stream, so a reader started now misses nothing appended after. */
async function lastEntryId(redis: Redis, stream: string): Promise<string> {
  const last = (await redis.xrevrange(stream, "+", "-", "COUNT", 1)) as Array<[string, string[]]>;
  return last[0]?.[0] ?? "0-0";
}

/**
 * Follows `stream` with XREAD BLOCK on its own connection and reports every entry with the
 * moment it was read. `stop()` ends the loop within one block timeout.
 */
function followStream(
  redis: Redis,
  stream: string,
  fromId: string,
  onEntry: (fields: Record<string, string>, readAt: number) => void,
): { stop(): Promise<void> } {
  const reader = redis.duplicate();
  reportRedisErrors(
    reader,
    `redis://${reader.options.host}:${reader.options.port}`,
    "stream reader",
  );
  let running = true;
  const loop = (async () => {
    let lastId = fromId;
    while (running) {
      const reply = (await reader.xread(
        "COUNT",
        1000,
        "BLOCK",
        200,
        "STREAMS",
        stream,
        lastId,
      )) as Array<[string, Array<[string, string[]]>]> | null;
      const readAt = Date.now();
      for (const [, entries] of reply ?? []) {
        for (const [id, flat] of entries) {
          lastId = id;
          const fields: Record<string, string> = {};
          for (let i = 0; i + 1 < flat.length; i += 2)
            fields[flat[i] as string] = flat[i + 1] as string;
          onEntry(fields, readAt);
        }
      }
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      reader.disconnect();
    },
  };
}

export async function scale(ctx: Context, n: number): Promise<ScaleRow> {
  const prefix = benchPrefix(`scale-${n}`);
  const keys = {
    pending: `${prefix}pending`,
    tracked: `${prefix}tracked`,
    schedule: `${prefix}schedule`,
    state: `${prefix}state`,
    aliases: `${prefix}aliases`,
    expiry: `${prefix}expiry`,
    events: `${prefix}events`,
  };
  const seedStart = performance.now();
  await seedPending(ctx.redis, keys.pending, jobIds(n));
  const seedSeconds = (performance.now() - seedStart) / 1000;
  ctx.log(`  seeded ${n} in ${round(seedSeconds)} s`);

  const sweepStart = performance.now();
  const before = await simRequests(ctx.fastSimUrl);
  // Ten minutes between polls of a job: nothing is polled twice while the first sweep runs,
  // so "every job has a state" marks its end. The stream is capped: events are not the subject.
  const daemon = startSubject(ctx, {
    kind: "daemon",
    prefix,
    concurrency: 32,
    simUrl: ctx.fastSimUrl,
    minIntervalMs: 600_000,
    maxIntervalMs: 600_000,
    daemonEnv: { POLLER_STREAM_MAXLEN: "1000" },
  });
  try {
    await waitUntil(
      `the daemon polled all ${n} jobs once`,
      async () => ((await ctx.redis.hlen(keys.state)) >= n ? true : undefined),
      120_000 + n * 2,
      250,
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${daemon.tail()}`);
    });
    const firstSweepSeconds = (performance.now() - sweepStart) / 1000;
    const sweepPolls = (await simRequests(ctx.fastSimUrl)) - before;
    ctx.log(`  first sweep of ${n}: ${round(firstSweepSeconds)} s`);

    const pollerKeysBytes: Record<string, number> = {};
    for (const name of ["tracked", "schedule", "state", "aliases", "expiry"] as const) {
      pollerKeysBytes[name] = await memoryUsage(ctx.redis, keys[name]);
    }
    const pollerBytes = Object.values(pollerKeysBytes).reduce((a, b) => a + b, 0);
    const pendingBytes = await memoryUsage(ctx.redis, keys.pending);

    // Pickup: time from the add (SADD, or track()) until the daemon observed the job's first
    // response (the `time` of its first event, which the daemon sets when it decides on it).
    const added = new Map<string, number>();
    const pickups: number[] = [];
    const follower = followStream(
      ctx.redis,
      keys.events,
      await lastEntryId(ctx.redis, keys.events),
      (fields) => {
        const addedAt = fields["subject"] === undefined ? undefined : added.get(fields["subject"]);
        if (addedAt === undefined || fields["time"] === undefined) return;
        pickups.push(Date.parse(fields["time"]) - addedAt);
        added.delete(fields["subject"] as string);
      },
    );
    const idle0 = await Promise.all([daemon.sample(), snapshotRedis(ctx.redis)]);
    const probes = ctx.plan.pickupProbes;
    /** Adds `probes` fresh ids one by one with `add`, spread out; waits for every pickup. */
    const probe = async (add: (id: string) => Promise<unknown>): Promise<number[]> => {
      pickups.length = 0;
      for (let i = 0; i < probes; i++) {
        const id = randomUUID();
        added.set(id, Date.now());
        await add(id);
        // Spread over a few intake periods, so the figure is not one lucky or unlucky batch.
        await sleep(20 + Math.floor(Math.random() * 40));
      }
      await waitUntil(
        "every probe job was picked up",
        async () => (pickups.length >= probes ? true : undefined),
        60_000,
        50,
      );
      return [...pickups];
    };
    // A plain SADD: found by the diff of the pending set, whose cost grows with it.
    const plain = await probe((id) => ctx.redis.sadd(keys.pending, id));
    // The library's track(): the intake hint is read before any diff.
    const tracked = await probe((id) => trackIds(ctx.redis, keysFor(prefix), [id]));
    const idle1 = await Promise.all([daemon.sample(), snapshotRedis(ctx.redis)]);
    await follower.stop();
    const idleSeconds = (idle1[0].at - idle0[0].at) / 1000;

    return {
      trackedJobs: n,
      seedSeconds: round(seedSeconds),
      firstSweepSeconds: round(firstSweepSeconds),
      sweepPollsPerSec: round(sweepPolls / firstSweepSeconds, 0),
      daemonRssMiB: round(idle1[0].rssBytes / MiB),
      pollerBytesPerJob: round(pollerBytes / n),
      pollerKeysBytes,
      pendingBytesPerJob: round(pendingBytes / n),
      pickupProbes: probes,
      pickupP50Ms: percentile(plain, 50),
      pickupP99Ms: percentile(plain, 99),
      pickupMaxMs: Math.max(...plain),
      trackPickupP50Ms: percentile(tracked, 50),
      trackPickupP99Ms: percentile(tracked, 99),
      trackPickupMaxMs: Math.max(...tracked),
      idleRedisCores: round(redisDelta(idle0[1], idle1[1]).cpuUs / (idleSeconds * 1e6), 3),
      idleDaemonCores: round((idle1[0].cpuUs - idle0[0].cpuUs) / (idleSeconds * 1e6), 3),
    };
  } finally {
    await daemon.stop();
    await cleanPrefix(ctx.redis, prefix);
  }
}

// ---- event latency ---------------------------------------------------------------------------

/** A job that alternates between queued and running every `everyMs`, for `totalMs`. */
function flappingJob(everyMs: number, totalMs: number): object {
  const steps = [];
  for (let at = 0, i = 0; at <= totalMs; at += everyMs, i++) {
    steps.push({ afterMs: at, status: i % 2 === 0 ? "queued" : "running" });
  }
  return { steps, maxAttempts: 1_000_000, slaDeadlineInMs: null };
}

export async function eventLatency(ctx: Context): Promise<EventLatencyRow> {
  const { plan } = ctx;
  const pollIntervalMs = 250;
  const prefix = benchPrefix("events");
  const lifetimeMs = plan.warmupMs + plan.eventWindowMs + 30_000;
  const ids: string[] = [];
  for (let i = 0; i < plan.eventJobs; i++) {
    const res = await fetch(`${ctx.normalSimUrl}/__sim/jobs`, {
      method: "POST",
      headers: { "x-api-key": API_KEY, "content-type": "application/json" },
      // Changes every two polls: about half the polls emit an event.
      body: JSON.stringify(flappingJob(pollIntervalMs * 2, lifetimeMs)),
    });
    if (!res.ok) throw new Error(`simulator refused a job: HTTP ${res.status}`);
    ids.push(...((await res.json()) as { jobIds: string[] }).jobIds);
  }
  await seedPending(ctx.redis, `${prefix}pending`, ids);

  const latencies: number[] = [];
  let recording = false;
  const follower = followStream(ctx.redis, `${prefix}events`, "0-0", (fields, readAt) => {
    if (recording && fields["time"] !== undefined)
      latencies.push(readAt - Date.parse(fields["time"]));
  });
  const daemon = startSubject(ctx, {
    kind: "daemon",
    prefix,
    concurrency: 32,
    simUrl: ctx.normalSimUrl,
    minIntervalMs: pollIntervalMs,
    maxIntervalMs: pollIntervalMs,
  });
  try {
    await waitUntil(
      "the daemon polled every flapping job",
      async () => ((await ctx.redis.hlen(`${prefix}state`)) >= ids.length ? true : undefined),
      60_000,
      100,
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${daemon.tail()}`);
    });
    await sleep(plan.warmupMs);
    recording = true;
    const w = await measure(ctx, daemon, ctx.normalSimUrl, plan.eventWindowMs);
    recording = false;
    return {
      jobs: ids.length,
      pollIntervalMs,
      events: latencies.length,
      pollsPerSec: round(w.polls / w.seconds, 0),
      p50Ms: percentile(latencies, 50),
      p99Ms: percentile(latencies, 99),
      maxMs: Math.max(...latencies),
      daemonCpuUsPerPoll: round((w.end.cpuUs - w.start.cpuUs) / Math.max(1, w.polls)),
    };
  } finally {
    await follower.stop();
    await daemon.stop();
    await cleanPrefix(ctx.redis, prefix);
  }
}
