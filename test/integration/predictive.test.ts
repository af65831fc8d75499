import type { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { JobType } from "../../src/api/schema.js";
import { loadConfig } from "../../src/config/index.js";
import { type Daemon, startDaemon } from "../../src/daemon/daemon.js";
import type { DurationStats } from "../../src/poller/duration-stats.js";
import { MIN_SAMPLES } from "../../src/poller/durations.js";
import { createRng } from "../../src/sim/random.js";
import { type Simulator, startSimulator } from "../../src/sim/simulator.js";
import { DurationStore, SampleBatch } from "../../src/store/durations.js";
import {
  allReached,
  reached,
  startTestDaemon,
  TEST_API_KEY,
  type TestDaemon,
} from "../helpers/daemon.js";
import { runCliToEnd } from "../helpers/processes.js";
import { cleanPrefix, redisClient, TEST_REDIS_URL, testPrefix, waitFor } from "../helpers/redis.js";
import { readUntil } from "../helpers/streams.js";

let sim: Simulator;
const rng = createRng(2026);

beforeEach(async () => {
  sim = await startSimulator({ apiKey: TEST_API_KEY, seed: 5 });
});
afterEach(async () => {
  await sim.close();
});

/** A first-attempt job: queued at 20 ms, running at 60 ms, succeeded after `runMs`. */
function addJob(type: JobType, runMs = rng.int(150, 450)): string {
  return sim.addJob({
    type,
    steps: [
      { afterMs: 0, status: "pending" },
      { afterMs: 20, status: "queued" },
      { afterMs: 60, status: "running" },
      { afterMs: 60 + runMs, status: "succeeded" },
    ],
    slaDeadlineInMs: null,
  });
}

/** The daemon's learned durations (it always has them: it gives the poller a store). */
function stats(d: Daemon): DurationStats {
  if (d.durations === null) throw new Error("the daemon has no duration statistics");
  return d.durations;
}

async function scheduled(d: Daemon, schedule: "predictive" | "backoff"): Promise<number> {
  const m = await d.metrics.scheduled.get();
  return m.values.find((v) => v.labels["schedule"] === schedule)?.value ?? 0;
}

async function finish(redis: Redis, prefix: string, ids: string[]): Promise<void> {
  await redis.sadd(`${prefix}pending`, ...ids);
  await readUntil(redis, `${prefix}events`, allReached(ids, "succeeded"), 60_000);
}

const ENV = {
  POLLER_MIN_INTERVAL_MS: "50",
  POLLER_MAX_INTERVAL_MS: "800",
  POLLER_SCHEDULE_SYNC_MS: "200",
};

describe("predictive schedule in the daemon", () => {
  it("shares what two replicas learned through Redis", async () => {
    const redis = redisClient();
    const prefix = testPrefix();
    const config = (replica: string) =>
      loadConfig({
        IDUNOX_API_URL: sim.url,
        IDUNOX_API_KEY: TEST_API_KEY,
        REDIS_URL: TEST_REDIS_URL,
        POLLER_KEY_PREFIX: prefix,
        POLLER_INTAKE_INTERVAL_MS: "50",
        POLLER_IDLE_WAKE_MS: "50",
        POLLER_REQUEST_TIMEOUT_MS: "400",
        POLLER_LEASE_MS: "1000",
        POLLER_HTTP_PORT: "0",
        POLLER_REPLICA_ID: replica,
        LOG_LEVEL: "silent",
        ...ENV,
      });
    const a = await startDaemon(config("a"));
    const b = await startDaemon(config("b"));
    try {
      const ids = Array.from({ length: 30 }, () => addJob("pipeline.deidentify"));
      await finish(redis, prefix, ids);
      // Every job left the queue and finished its run once: one sample per phase per job,
      // learned by whichever replica wrote the change.
      await waitFor(() => stats(a).recorded + stats(b).recorded === 2 * ids.length, {
        what: "both phases of every job learned",
      });
      await stats(a).sync();
      await stats(b).sync();
      await stats(a).sync();
      for (const d of [a, b]) {
        const snap = stats(d).snapshot();
        expect(snap.get("pipeline.deidentify", "queue")?.samples).toBe(ids.length);
        expect(snap.get("pipeline.deidentify", "run")?.samples).toBe(ids.length);
      }
      // At least one replica schedules from samples it never saw itself.
      expect(Math.min(stats(a).recorded, stats(b).recorded)).toBeLessThan(2 * ids.length);
      const run = stats(b).snapshot().get("pipeline.deidentify", "run");
      expect(run?.quantile(0.5)).toBeGreaterThan(100);
      expect(run?.quantile(0.5)).toBeLessThan(600);
    } finally {
      await a.stop();
      await b.stop();
      await cleanPrefix(redis, prefix);
      redis.disconnect();
    }
  });

  describe("with one daemon", () => {
    let t: TestDaemon;
    afterEach(async () => {
      await t.stop();
    });

    it("keeps what it learned across a restart, and a type never seen stays on the backoff", async () => {
      t = await startTestDaemon({ sim, env: { ...ENV, LOG_LEVEL: "silent" } });
      const warm = Array.from({ length: MIN_SAMPLES + 5 }, () => addJob("pipeline.run_inference"));
      await finish(t.redis, t.prefix, warm);
      await waitFor(() => stats(t.daemon).recorded === 2 * warm.length, {
        what: "every job learned",
      });

      // The new daemon holds nothing in memory: what it schedules from comes from Redis.
      const daemon = await t.restart();
      await waitFor(() => stats(daemon).snapshot().usable("pipeline.run_inference", "run"), {
        what: "the restarted daemon reads the learned durations",
      });
      expect(await scheduled(daemon, "predictive")).toBe(0);

      const unseen = addJob("pipeline.deidentify", 1200);
      await finish(t.redis, t.prefix, [unseen]);
      expect(await scheduled(daemon, "backoff")).toBeGreaterThan(0);
      expect(await scheduled(daemon, "predictive")).toBe(0);

      const known = addJob("pipeline.run_inference", 1200);
      await t.redis.sadd(t.keys.pending, known);
      await readUntil(t.redis, t.keys.events, reached(known, "succeeded"), 60_000);
      expect(await scheduled(daemon, "predictive")).toBeGreaterThan(0);

      // Each change after the first observation is measured once its write is acknowledged
      // (a moment after the event is readable); same clock here, so never below 0.
      const delays = await waitFor(
        async () => {
          const values = (await daemon.metrics.detectionDelay.get()).values.filter(
            (v) => v.labels["type"] === "pipeline.run_inference",
          );
          const count = values.find((v) => v.metricName?.endsWith("_count"))?.value ?? 0;
          const sum = values.find((v) => v.metricName?.endsWith("_sum"))?.value ?? -1;
          return count >= 1 ? { count, sum } : undefined;
        },
        { what: "a detection delay observed" },
      );
      expect(delays.sum).toBeGreaterThanOrEqual(0);

      // status: what was learned, and why a running job is polled when it is.
      await waitFor(
        async () =>
          (await new DurationStore(t.redis, t.keys.durations).read()).get(
            "pipeline.run_inference",
            "run",
          )?.samples ===
          warm.length + 1,
        { what: "the last run merged" },
      );
      const cli = { REDIS_URL: TEST_REDIS_URL, POLLER_KEY_PREFIX: t.prefix, ...ENV };
      const overview = await runCliToEnd(["status", "--json"], cli);
      expect(overview.code, overview.stderr).toBe(0);
      const rows = JSON.parse(overview.stdout).learnedDurations as Array<Record<string, unknown>>;
      const run = rows.find((r) => r["type"] === "pipeline.run_inference" && r["phase"] === "run");
      expect(run?.["samples"]).toBe(warm.length + 1);
      expect(run?.["p50Seconds"]).toBeGreaterThan(0.1);
      expect(run?.["p90Seconds"]).toBeGreaterThanOrEqual(run?.["p50Seconds"] as number);

      const long = addJob("pipeline.run_inference", 60_000);
      await t.redis.sadd(t.keys.pending, long);
      await readUntil(t.redis, t.keys.events, reached(long, "running"), 60_000);
      const one = await runCliToEnd(["status", long, "--json"], cli);
      expect(one.code, one.stderr).toBe(0);
      expect(JSON.parse(one.stdout).whyThen).toMatch(
        /^(predictive: pipeline\.run_inference run for .* samples\)|backoff: pipeline\.run_inference has been in run longer than nearly all)/,
      );
      const backoff = await runCliToEnd(["status", long, "--json"], {
        ...cli,
        POLLER_SCHEDULE: "backoff",
      });
      expect(JSON.parse(backoff.stdout).whyThen).toBe("backoff: POLLER_SCHEDULE=backoff");
    });

    it("POLLER_SCHEDULE=backoff never schedules from what was learned, yet keeps learning", async () => {
      t = await startTestDaemon({
        sim,
        env: { ...ENV, POLLER_SCHEDULE: "backoff", LOG_LEVEL: "silent" },
        beforeStart: async (redis, keys) => {
          // A warm history for the very type polled below.
          const batch = new SampleBatch();
          for (let i = 0; i < 100; i++) {
            batch.add([
              { type: "pipeline.map_to_fhir", phase: "queue", ms: 40 },
              { type: "pipeline.map_to_fhir", phase: "run", ms: 300 + i },
            ]);
          }
          await new DurationStore(redis, keys.durations).mergeAndRead(batch, Date.now());
        },
      });
      await waitFor(() => stats(t.daemon).snapshot().usable("pipeline.map_to_fhir", "run"), {
        what: "the daemon reads the history",
      });
      const ids = Array.from({ length: 5 }, () => addJob("pipeline.map_to_fhir"));
      await finish(t.redis, t.prefix, ids);
      expect(await scheduled(t.daemon, "backoff")).toBeGreaterThan(0);
      expect(await scheduled(t.daemon, "predictive")).toBe(0);
      await waitFor(() => stats(t.daemon).recorded === 2 * ids.length, {
        what: "the jobs learned",
      });
      await waitFor(
        async () =>
          (await new DurationStore(t.redis, t.keys.durations).read()).get(
            "pipeline.map_to_fhir",
            "run",
          )?.samples ===
          100 + ids.length,
        { what: "the samples merged" },
      );
    });
  });
});
