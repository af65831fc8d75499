import type { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BUDGET_TTL_MS, BudgetStore, type TakeRequest } from "../../src/store/budget.js";
import { keysFor } from "../../src/store/keys.js";
import { cleanPrefix, redisClient, testPrefix } from "../helpers/redis.js";

/**
 * The arithmetic of the shared budget (takePermits-1.lua) with the clock in the test's hands:
 * every call passes its own `now`.
 */

let redis: Redis;
let prefix: string;
let budget: BudgetStore;

beforeEach(() => {
  redis = redisClient();
  prefix = testPrefix();
  budget = new BudgetStore(redis, keysFor(prefix).budget);
});

afterEach(async () => {
  await cleanPrefix(redis, prefix);
  redis.disconnect();
});

const T0 = 1_700_000_000_000;

function req(now: number, want: number, more: Partial<TakeRequest> = {}): TakeRequest {
  return {
    now,
    want,
    limit: 0,
    burst: 1,
    ok: 0,
    sent: 0,
    throttled: false,
    pauseMs: 0,
    headerRate: 0,
    ...more,
  };
}

describe("takePermits: the bucket", () => {
  it("grants the burst at once, then one permit per 1/limit s, and says when the rest exist", async () => {
    const limits = { limit: 10, burst: 5 };
    const first = await budget.take(req(T0, 8, limits));
    // tat = T0 + 5 * 100; a batch is counted at no more than the bucket holds (5), and 5 more
    // fit once tat + 5 * 100 - 5 * 100 <= now: in 500 ms (sooner would be a round trip for a few).
    expect(first).toEqual({ granted: 5, waitMs: 500, rate: 10, pauseUntil: 0, readyAt: T0 });
    expect((await budget.take(req(T0 + 99, 1, limits))).granted).toBe(0);
    expect((await budget.take(req(T0 + 100, 1, limits))).granted).toBe(1);
    expect((await budget.take(req(T0 + 100, 1, limits))).granted).toBe(0);
  });

  it("never grants more than burst + rate x elapsed, however the calls fall", async () => {
    const limits = { limit: 50, burst: 10 };
    let granted = 0;
    let now = T0;
    // Three "replicas" asking for uneven batches every 7 ms for 4 s.
    for (let i = 0; now < T0 + 4000; i++, now += 7) {
      granted += (await budget.take(req(now, 1 + (i % 3) * 4, limits))).granted;
    }
    const bound = 10 + (50 * (now - 7 - T0)) / 1000;
    expect(granted).toBeLessThanOrEqual(bound);
    // It is a budget, not a wall: nearly all of it is handed out.
    expect(granted).toBeGreaterThanOrEqual(bound - 6);
  });

  it("reserves a batch beyond the bucket, usable only once the last of it conforms", async () => {
    const limits = { limit: 10, burst: 2, reserveMs: 300 };
    // Two from the bucket and three reserved: tat = T0 + 500; the last conforms at T0 + 300.
    expect(await budget.take(req(T0, 5, limits))).toMatchObject({ granted: 5, readyAt: T0 + 300 });
    // The next caller finds the reservation horizon used up until time moves on.
    expect(await budget.take(req(T0, 5, limits))).toMatchObject({ granted: 0, waitMs: 500 });
    expect(await budget.take(req(T0 + 100, 1, limits))).toMatchObject({
      granted: 1,
      readyAt: T0 + 400,
    });
  });

  it("holds the limit with reservations: permits usable by t never exceed burst + rate x t", async () => {
    const limits = { limit: 50, burst: 10, reserveMs: 100 };
    const usable: number[] = [];
    let now = T0;
    for (let i = 0; now < T0 + 4000; i++, now += 7) {
      const r = await budget.take(req(now, 1 + (i % 3) * 4, limits));
      for (let k = 0; k < r.granted; k++) usable.push(r.readyAt);
    }
    for (const t of [T0, T0 + 500, T0 + 1000, T0 + 2500, T0 + 3900]) {
      const byT = usable.filter((at) => at <= t).length;
      expect(byT).toBeLessThanOrEqual(10 + (50 * (t - T0)) / 1000 + 1);
    }
  });

  it("grants everything with no limit and no learned rate", async () => {
    expect(await budget.take(req(T0, 64))).toEqual({
      granted: 64,
      waitMs: 0,
      rate: null,
      pauseUntil: 0,
      readyAt: T0,
    });
  });

  it("forgets its state after the TTL of an idle hour", async () => {
    await budget.take(req(T0, 1, { limit: 10, burst: 5 }));
    const ttl = await redis.pttl(keysFor(prefix).budget);
    expect(ttl).toBeGreaterThan(BUDGET_TTL_MS - 60_000);
    expect(ttl).toBeLessThanOrEqual(BUDGET_TTL_MS);
  });

  it("cannot be jammed by a replica whose clock runs an hour ahead", async () => {
    const limits = { limit: 10, burst: 10 };
    expect((await budget.take(req(T0 + 3_600_000, 10, limits))).granted).toBe(10);
    // tat is pulled back to one bucket plus the longest reservation (1 s) ahead of the honest
    // clock, not an hour.
    const now = await budget.take(req(T0, 1, limits));
    expect(now.granted).toBe(0);
    expect(now.waitMs).toBeLessThanOrEqual(1100);
    expect((await budget.take(req(T0 + 1100, 1, limits))).granted).toBe(1);
  });

  it("counts a batch sized for a rate since cut at what the bucket holds now", async () => {
    // A replica sized its batch (64) with no rate in force; the reply brings a rate of 2.5/s.
    // The bucket holds 2.5 permits (a second of the rate): 2 are granted, and the next 2 exist
    // 600 ms later. Waiting until 64 fit would stall this replica for 25 s.
    const first = await budget.take(req(T0, 64, { headerRate: 2.5 }));
    expect(first).toMatchObject({ granted: 2, waitMs: 600, rate: 2.5 });
    expect((await budget.take(req(T0 + 599, 2))).granted).toBe(1);
    expect((await budget.take(req(T0 + 1000, 1))).granted).toBe(1);
  });
});

describe("takePermits: the shared pause", () => {
  it("holds every caller until the pause ends, and takes the longer of two pauses", async () => {
    const limits = { limit: 100, burst: 100 };
    const set = await budget.take(req(T0, 0, { ...limits, throttled: true, pauseMs: 2000 }));
    expect(set.pauseUntil).toBe(T0 + 2000);
    const other = await budget.take(req(T0 + 500, 5, limits));
    expect(other).toMatchObject({ granted: 0, waitMs: 1500, pauseUntil: T0 + 2000 });
    await budget.take(req(T0 + 600, 0, { ...limits, pauseMs: 100 }));
    expect((await budget.take(req(T0 + 1999, 1, limits))).granted).toBe(0);
    expect((await budget.take(req(T0 + 2000, 5, limits))).granted).toBe(5);
  });

  it("pauses everyone on a 429 even with no limit at all", async () => {
    await budget.take(req(T0, 0, { throttled: true, pauseMs: 1000 }));
    expect(await budget.take(req(T0 + 10, 3))).toMatchObject({ granted: 0, waitMs: 990 });
  });

  it("bounds a pause at one hour", async () => {
    const r = await budget.take(req(T0, 0, { pauseMs: 10 * 3_600_000 }));
    expect(r.pauseUntil).toBe(T0 + 3_600_000);
  });
});

describe("takePermits: the adaptive rate", () => {
  /** One second of answers at `okPerSec`, reported every 100 ms, each call wanting `want`. */
  async function second(from: number, okPerSec: number, want: number, limit = 0) {
    let last = await budget.take(req(from, want, { limit, burst: 1, ok: 0 }));
    for (let t = 100; t <= 1000; t += 100) {
      const n = okPerSec / 10;
      last = await budget.take(req(from + t, want, { limit, burst: 1, ok: n, sent: n }));
    }
    return last;
  }

  it("cuts to 0.8 of what got through on the first 429 with no rate in force", async () => {
    await second(T0, 200, 1);
    await second(T0 + 1000, 200, 1);
    const cut = await budget.take(req(T0 + 2050, 0, { throttled: true, pauseMs: 1000, ok: 10 }));
    expect(cut.rate).toBeCloseTo(160, 0);
    // The rest of the burst of 429s (until the pause plus a second) cuts nothing more.
    const again = await budget.take(req(T0 + 2500, 0, { throttled: true, pauseMs: 1000 }));
    expect(again.rate).toBeCloseTo(160, 0);
  });

  it("sets no rate from a trickle: a 429 among a few requests only pauses", async () => {
    // A quiet daemon (3 requests/s) meets a stray 429: cutting to 0.8 of that trickle would
    // starve its own demand, and the additive increase would take minutes to undo it.
    await second(T0, 3, 1);
    await second(T0 + 1000, 3, 1);
    const hit = await budget.take(req(T0 + 2050, 1, { throttled: true, pauseMs: 500, ok: 1 }));
    expect(hit.rate).toBeNull();
    expect(hit.granted).toBe(0);
    expect(hit.pauseUntil).toBe(T0 + 2550);
    // After the pause, permits flow with no rate in force.
    const after = await budget.take(req(T0 + 2600, 5));
    expect(after.granted).toBe(5);
    expect(after.rate).toBeNull();
  });

  it("counts the requests sent, not the permits granted, as evidence for a first cut", async () => {
    // No rate in force: every call is granted a whole batch of 64, of which this quiet daemon
    // spends 3 a second; the rest lapse. Those grants are no measure of the load.
    for (let t = 0; t <= 2000; t += 100) {
      const n = t % 300 === 0 ? 1 : 0;
      expect((await budget.take(req(T0 + t, 64, { ok: n, sent: n }))).granted).toBe(64);
    }
    const hit = await budget.take(req(T0 + 2050, 64, { throttled: true, pauseMs: 0 }));
    expect(hit.rate).toBeNull();
    expect(hit.granted).toBe(64);
  });

  it("cuts a rate in force by 0.8 per burst of 429s, never below 0.1/s", async () => {
    await budget.take(req(T0, 0, { headerRate: 100 }));
    const first = await budget.take(req(T0 + 10, 0, { throttled: true, pauseMs: 0 }));
    expect(first.rate).toBeCloseTo(80, 3);
    const second = await budget.take(req(T0 + 1020, 0, { throttled: true, pauseMs: 0 }));
    expect(second.rate).toBeCloseTo(64, 3);
    let now = T0 + 2040;
    for (let i = 0; i < 60; i++, now += 1010) {
      await budget.take(req(now, 0, { throttled: true }));
    }
    expect((await budget.take(req(now, 0))).rate).toBe(0.1);
  });

  it("grows by 2% of the cut rate per second while demand exceeds it and nothing is refused", async () => {
    await budget.take(req(T0, 0, { headerRate: 125 }));
    const cut = await budget.take(req(T0 + 10, 0, { throttled: true }));
    expect(cut.rate).toBeCloseTo(100, 3);
    // After the guard (1 s), ten seconds of starved demand with every answer ok.
    let last = cut;
    for (let t = 1100; t <= 11_100; t += 100) {
      last = await budget.take(req(T0 + t, 50, { ok: 10, burst: 1 }));
    }
    expect(last.rate).toBeGreaterThan(119);
    expect(last.rate).toBeLessThan(121);
  });

  it("grows by at least one request/s per second after a cut to a low rate", async () => {
    await budget.take(req(T0, 0, { headerRate: 5 }));
    const cut = await budget.take(req(T0 + 10, 0, { throttled: true }));
    expect(cut.rate).toBeCloseTo(4, 3);
    // 2% of 4/s a second would take 12 s to win back a single request/s.
    let last = cut;
    for (let t = 1100; t <= 11_100; t += 100) {
      last = await budget.take(req(T0 + t, 50, { ok: 10, sent: 10, burst: 1 }));
    }
    expect(last.rate).toBeGreaterThan(13);
    expect(last.rate).toBeLessThan(15.5);
  });

  it("does not grow while demand stays under the rate", async () => {
    await budget.take(req(T0, 0, { headerRate: 125 }));
    await budget.take(req(T0 + 10, 0, { throttled: true }));
    let last = await budget.take(req(T0 + 1100, 0));
    for (let t = 1200; t <= 5000; t += 100) {
      last = await budget.take(req(T0 + t, 1, { ok: 1, burst: 100 }));
    }
    expect(last.rate).toBeCloseTo(100, 3);
  });

  it("never grows past the limit, nor lets headers set more than it", async () => {
    const limit = { limit: 50, burst: 1 };
    const cut = await budget.take(req(T0, 0, { ...limit, throttled: true }));
    expect(cut.rate).toBeCloseTo(40, 3);
    let last = cut;
    for (let t = 1100; t <= 60_000; t += 100) {
      last = await budget.take(req(T0 + t, 50, { ...limit, ok: 5 }));
    }
    expect(last.rate).toBe(50);
    const headers = await budget.take(req(T0 + 61_000, 0, { ...limit, headerRate: 500 }));
    expect(headers.rate).toBe(50);
  });

  it("lets the API's headers set the rate directly", async () => {
    expect((await budget.take(req(T0, 0, { headerRate: 33.5 }))).rate).toBe(33.5);
    const r = await budget.take(req(T0 + 1, 10, { headerRate: 20, burst: 1 }));
    // With no limit the bucket holds one second of the rate: 10 of 20 fit at once.
    expect(r).toMatchObject({ granted: 10, rate: 20 });
  });
});
