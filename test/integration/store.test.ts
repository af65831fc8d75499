import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { buildEvent } from "../../src/events/cloudevents.js";
import { rejectedEvent } from "../../src/poller/rejected.js";
import { initialState } from "../../src/poller/state.js";
import { ApplyCode, type ClaimedJob, Store } from "../../src/store/store.js";
import { cleanPrefix, redisClient, testPrefix } from "../helpers/redis.js";
import { readAll } from "../helpers/streams.js";

let redis: Redis;
let prefix: string;
let store: Store;

beforeEach(() => {
  redis = redisClient();
  prefix = testPrefix();
  store = new Store(redis, { prefix, streamMaxLen: 10_000, stateTtlMs: 60_000 });
});

afterEach(async () => {
  await cleanPrefix(redis, prefix);
  redis.disconnect();
});

function statusEvent(id: string, seq: number) {
  return buildEvent({
    kind: "not_found",
    source: "urn:test",
    subject: id,
    epoch: "e",
    sequence: seq,
    timeMs: 0,
    data: { jobId: id, firstNotFoundAt: new Date(0).toISOString() },
  });
}

/** Adds `member` to pending, takes it in, and claims it at t=1000 with a 30 s lease. */
async function trackAndClaim(member: string): Promise<ClaimedJob> {
  await redis.sadd(store.keys.pending, member);
  await store.intake(100, false);
  const [job] = (await store.claim(1000, 10, 30_000)).jobs;
  if (!job) throw new Error("no job claimed");
  return job;
}

/** The first decision for a claimed job: version 1 with one event, due again at 5000. */
function firstWrite(id: string, lease: number) {
  return {
    id,
    lease,
    expectedVersion: 0,
    state: { ...initialState("e"), version: 1, sequence: 1 },
    nextDueAt: 5000,
    events: [statusEvent(id, 1)],
    alerts: [true],
  };
}

describe("store", () => {
  it("intake schedules new valid members once and reports invalid ones", async () => {
    const a = randomUUID();
    const upper = randomUUID().toUpperCase();
    await redis.sadd(store.keys.pending, a, upper, "../etc/passwd", "");
    const first = await store.intake(1000, false);
    expect(first.added).toBe(2);
    expect(first.invalid.map((i) => i.member).sort()).toEqual(["", "../etc/passwd"]);
    expect(await redis.zscore(store.keys.schedule, upper.toLowerCase())).toBe("0");
    // Unchanged sizes: nothing to do, O(1).
    await store.reject("", 0, rejectedEvent("", "empty", "urn:test", 1));
    await store.reject("../etc/passwd", 0, rejectedEvent("../etc/passwd", "path", "urn:test", 1));
    const second = await store.intake(1000, false);
    expect(second).toEqual({ added: 0, invalid: [], remaining: 0, untracked: 0, diffed: false });
    expect(await redis.smembers(store.keys.rejected)).toHaveLength(2);
    const alerts = await readAll(redis, store.keys.alerts);
    expect(alerts.map((e) => e.event.type)).toEqual(["idunox.job.rejected", "idunox.job.rejected"]);
  });

  it("hands out a large diff in batches", async () => {
    const ids = Array.from({ length: 2500 }, () => randomUUID());
    await redis.sadd(store.keys.pending, ...ids);
    let added = 0;
    let result = await store.intake(1000, false);
    added += result.added;
    while (result.remaining > 0) {
      result = await store.intake(1000, false);
      added += result.added;
    }
    expect(added).toBe(2500);
    expect(await redis.zcard(store.keys.schedule)).toBe(2500);
  });

  it("untracks members a producer removed", async () => {
    const a = randomUUID();
    await redis.sadd(store.keys.pending, a);
    await store.intake(100, false);
    await redis.srem(store.keys.pending, a);
    const r = await store.intake(100, false);
    expect(r.untracked).toBe(1);
    expect(await redis.zscore(store.keys.schedule, a)).toBeNull();
  });

  it("claims due jobs under a lease that other claims respect", async () => {
    const a = randomUUID();
    await redis.sadd(store.keys.pending, a);
    await store.intake(100, false);
    const c1 = await store.claim(1000, 10, 30_000);
    expect(c1.jobs.map((j) => j.id)).toEqual([a]);
    expect(c1.jobs[0]?.lease).toBe(31_000);
    const c2 = await store.claim(2000, 10, 30_000);
    expect(c2.jobs).toEqual([]);
    expect(c2.nextDueAt).toBe(31_000);
    // After the lease runs out the job is claimable again.
    const c3 = await store.claim(31_000, 10, 30_000);
    expect(c3.jobs.map((j) => j.id)).toEqual([a]);
  });

  it("writes a decision once, and drops it when the lease was lost", async () => {
    const a = randomUUID();
    const job = await trackAndClaim(a);
    const write = firstWrite(a, job.lease);
    expect(await store.apply([write], 1000)).toEqual([ApplyCode.Written]);
    // A resend of the same decision (reply lost, reconnect) changes nothing.
    expect((await store.apply([write], 1000))[0]).not.toBe(ApplyCode.Written);
    expect(await redis.xlen(store.keys.events)).toBe(1);
    expect(await redis.xlen(store.keys.alerts)).toBe(1);
    expect(await redis.zscore(store.keys.schedule, a)).toBe("5000");

    // A replica whose lease was taken over cannot write.
    const [again] = (await store.claim(6000, 10, 30_000)).jobs;
    const [other] = (await store.claim(40_000, 10, 30_000)).jobs;
    expect(other?.id).toBe(a);
    const late = {
      ...write,
      lease: again?.lease ?? 0,
      expectedVersion: 1,
      state: { ...write.state, version: 2 },
    };
    expect(await store.apply([late], 41_000)).toEqual([ApplyCode.LeaseLost]);
  });

  it("removes a finished job from pending only together with its events", async () => {
    const a = randomUUID().toUpperCase();
    const id = a.toLowerCase();
    const job = await trackAndClaim(a);
    const codes = await store.apply(
      [
        {
          id,
          lease: job.lease,
          expectedVersion: 0,
          state: { ...initialState("e"), version: 1, final: true },
          nextDueAt: null,
          events: [statusEvent(id, 1)],
          alerts: [true],
        },
      ],
      1000,
    );
    expect(codes).toEqual([ApplyCode.Written]);
    expect(await redis.sismember(store.keys.pending, a)).toBe(0);
    expect(await redis.scard(store.keys.tracked)).toBe(0);
    expect(await redis.zscore(store.keys.schedule, id)).toBeNull();
    expect(await redis.zscore(store.keys.expiry, id)).toBe(String(1000 + 60_000));
    // The state outlives the job until its TTL, then is dropped.
    expect(await store.expire(30_000, 100)).toBe(0);
    expect(await store.expire(61_000, 100)).toBe(1);
    expect(await redis.hget(store.keys.state, id)).toBeNull();
  });

  it("releases leases without touching state", async () => {
    const a = randomUUID();
    const job = await trackAndClaim(a);
    expect(await store.release([{ id: a, lease: job.lease, dueAt: 1500 }])).toBe(1);
    expect(await store.release([{ id: a, lease: job.lease, dueAt: 1500 }])).toBe(0);
    expect(await redis.zscore(store.keys.schedule, a)).toBe("1500");
    expect(await redis.hget(store.keys.state, a)).toBeNull();
  });

  it("survives SCRIPT FLUSH (NOSCRIPT is recovered)", async () => {
    const a = randomUUID();
    await redis.sadd(store.keys.pending, a);
    await redis.script("FLUSH");
    expect((await store.intake(100, false)).added).toBe(1);
  });

  it("reports stats", async () => {
    await redis.sadd(store.keys.pending, randomUUID(), randomUUID());
    await store.intake(100, false);
    await redis.xadd(store.keys.events, "*", "data", "{}");
    await redis.xgroup("CREATE", store.keys.events, "g1", "0");
    const stats = await store.stats(Date.now());
    expect(stats.tracked).toBe(2);
    expect(stats.dueBacklog).toBe(2);
    expect(stats.groups).toEqual([{ stream: "events", group: "g1", lag: 1, pending: 0 }]);
  });
});

// The file's beforeEach/afterEach give every test below its own prefix, store and clean-up.
describe("store intake without a diff", () => {
  it("does no O(N) diff when not allowed, and hands out what the last diff found", async () => {
    const ids = Array.from({ length: 5 }, () => randomUUID());
    await redis.sadd(store.keys.pending, ...ids);
    const skipped = await store.intake(2, false, false);
    expect(skipped).toMatchObject({ added: 0, diffed: false });
    const first = await store.intake(2, false, true);
    expect(first).toMatchObject({ added: 2, remaining: 3, diffed: true });
    // The rest comes from the scratch set, with no new diff.
    const rest = await store.intake(10, false, false);
    expect(rest).toMatchObject({ added: 3, remaining: 0, diffed: false });
  });
});

describe("store against keys of the wrong type", () => {
  it("refuses a decision before writing anything when a stream key is not a stream", async () => {
    const a = randomUUID();
    const job = await trackAndClaim(a);
    await redis.set(store.keys.alerts, "not a stream");
    const write = firstWrite(a, job.lease);
    await expect(store.apply([write], 1000)).rejects.toThrow(/WRONGTYPE/);
    // Nothing moved: no state, no event, the lease still held, so a retry can still land.
    expect(await redis.hget(store.keys.state, a)).toBeNull();
    expect(await redis.exists(store.keys.events)).toBe(0);
    await redis.del(store.keys.alerts);
    expect(await store.apply([write], 1000)).toEqual([ApplyCode.Written]);
  });

  it("gives the state of a job a producer removed an expiry", async () => {
    const a = randomUUID();
    await redis.sadd(store.keys.pending, a);
    await store.intake(10, false);
    await redis.srem(store.keys.pending, a);
    expect((await store.intake(10, false)).untracked).toBe(1);
    expect(await redis.zscore(store.keys.expiry, a)).not.toBeNull();
  });
});
