import type { Redis } from "ioredis";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { JOB_TYPES } from "../../src/api/schema.js";
import { DurationStats } from "../../src/poller/duration-stats.js";
import {
  BUCKETS,
  decodeHistogram,
  emptyHistogram,
  MIN_SAMPLES,
  mergeSamples,
} from "../../src/poller/durations.js";
import type { DurationSample } from "../../src/poller/schedule.js";
import { createRng } from "../../src/sim/random.js";
import { DurationStore, SampleBatch } from "../../src/store/durations.js";
import { keysFor } from "../../src/store/keys.js";
import { cleanPrefix, redisClient, testPrefix } from "../helpers/redis.js";

let redis: Redis;
let prefix: string;
const silent = pino({ level: "silent" });

beforeEach(() => {
  redis = redisClient();
  prefix = testPrefix();
});

afterEach(async () => {
  await cleanPrefix(redis, prefix);
  redis.disconnect();
});

const run = (ms: number): DurationSample => ({ type: "pipeline.run_inference", phase: "run", ms });

describe("DurationStore (mergeDurations-1.lua)", () => {
  it("merges batches with the same decay arithmetic as the pure model", async () => {
    const store = new DurationStore(redis, keysFor(prefix).durations);
    const rng = createRng(7);
    let expected = emptyHistogram();
    for (let b = 0; b < 12; b++) {
      const samples = Array.from({ length: 40 + b }, () => Math.floor(rng.next() * 60_000));
      const batch = new SampleBatch();
      batch.add(samples.map(run));
      await store.mergeAndRead(batch, 1000 + b);
      expected = mergeSamples(expected, samples, 1000 + b);
    }
    const raw = await redis.hget(keysFor(prefix).durations, "pipeline.run_inference|run");
    const stored = decodeHistogram(raw ?? "");
    expect(stored).not.toBeNull();
    expect(stored?.samples).toBe(expected.samples);
    expect(stored?.updatedAtMs).toBe(1011);
    for (let i = 0; i < BUCKETS; i++) {
      expect(stored?.weights[i]).toBeCloseTo(expected.weights[i] as number, 3);
    }
    const snap = await store.read();
    expect(snap.get("pipeline.run_inference", "run")?.samples).toBe(expected.samples);
  });

  it("keeps one bounded field per type and phase, and restarts a field it cannot read", async () => {
    const key = keysFor(prefix).durations;
    await redis.hset(key, "pipeline.deidentify|queue", "garbage");
    const store = new DurationStore(redis, key);
    const batch = new SampleBatch();
    for (const type of JOB_TYPES) {
      for (let i = 0; i < 1000; i++) {
        batch.add([
          { type, phase: "queue", ms: i },
          { type, phase: "run", ms: i * 10 },
        ]);
      }
    }
    const snap = await store.mergeAndRead(batch, 5);
    expect(await redis.hlen(key)).toBe(JOB_TYPES.length * 2);
    expect(snap.entries()).toHaveLength(JOB_TYPES.length * 2);
    expect(snap.get("pipeline.deidentify", "queue")?.samples).toBe(1000);
    // Every value stays a few hundred bytes, whatever the traffic.
    for (const raw of Object.values(await redis.hgetall(key))) {
      expect(raw.length).toBeLessThan(BUCKETS * 12);
    }
  });
});

describe("DurationStats", () => {
  it("shares what two replicas learned, in one round trip each", async () => {
    const other = redisClient();
    try {
      const key = keysFor(prefix).durations;
      const a = new DurationStats({
        store: new DurationStore(redis, key),
        syncIntervalMs: 60_000,
        logger: silent,
      });
      const b = new DurationStats({
        store: new DurationStore(other, key),
        syncIntervalMs: 60_000,
        logger: silent,
      });
      a.record(Array.from({ length: MIN_SAMPLES }, (_, i) => run(1000 + i)));
      b.record(Array.from({ length: MIN_SAMPLES }, (_, i) => run(3000 + i)));
      expect(a.buffered).toBe(MIN_SAMPLES);
      expect(a.snapshot().usable("pipeline.run_inference", "run")).toBeUndefined();
      await a.sync();
      await b.sync();
      expect(a.buffered).toBe(0);
      // b's sync brought back a's samples too; a sees b's at its next sync.
      expect(b.snapshot().get("pipeline.run_inference", "run")?.samples).toBe(2 * MIN_SAMPLES);
      await a.sync();
      const d = a.snapshot().usable("pipeline.run_inference", "run");
      expect(d?.samples).toBe(2 * MIN_SAMPLES);
      const p50 = d?.quantile(0.5) ?? 0;
      expect(p50).toBeGreaterThan(1000);
      expect(p50).toBeLessThan(3100);
      expect(await redis.hlen(key)).toBe(1);
    } finally {
      other.disconnect();
    }
  });

  it("keeps its samples while Redis fails and publishes them once it answers", async () => {
    const key = keysFor(prefix).durations;
    let failing = true;
    const real = new DurationStore(redis, key);
    const stats = new DurationStats({
      store: {
        mergeAndRead: (batch: SampleBatch, now: number) =>
          failing ? Promise.reject(new Error("connection lost")) : real.mergeAndRead(batch, now),
      },
      syncIntervalMs: 60_000,
      logger: silent,
    });
    stats.record([run(10), run(20)]);
    expect(await stats.sync()).toBe(false);
    stats.record([run(30)]);
    expect(stats.buffered).toBe(3);
    failing = false;
    expect(await stats.sync()).toBe(true);
    expect(stats.snapshot().get("pipeline.run_inference", "run")?.samples).toBe(3);
  });

  it("reads what was learned before at start, and flushes what is left at stop", async () => {
    const key = keysFor(prefix).durations;
    const first = new DurationStats({
      store: new DurationStore(redis, key),
      syncIntervalMs: 60_000,
      logger: silent,
    });
    first.start();
    first.record(Array.from({ length: 25 }, () => run(500)));
    await first.stop();
    // A new instance (a restarted daemon) starts from Redis, not from nothing.
    const second = new DurationStats({
      store: new DurationStore(redis, key),
      syncIntervalMs: 60_000,
      logger: silent,
    });
    second.start();
    await second.stop();
    expect(second.snapshot().usable("pipeline.run_inference", "run")?.samples).toBe(25);
  });
});
