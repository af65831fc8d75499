import type { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BATCH_MS, HOLD_MS, RequestBudget } from "../../src/poller/budget.js";
import { BudgetStore, type TakeRequest } from "../../src/store/budget.js";
import { keysFor } from "../../src/store/keys.js";
import { cleanPrefix, redisClient, testPrefix, waitFor } from "../helpers/redis.js";
import { type RedisServer, startRedisServer } from "../helpers/redis-server.js";

let redis: Redis;
let prefix: string;
const budgets: RequestBudget[] = [];

beforeEach(() => {
  redis = redisClient();
  prefix = testPrefix();
});

afterEach(async () => {
  for (const b of budgets.splice(0)) b.close();
  await cleanPrefix(redis, prefix);
  redis.disconnect();
});

function replica(limit: number, burst: number, client: Redis = redis): RequestBudget {
  const b = new RequestBudget({
    source: new BudgetStore(client, keysFor(prefix).budget),
    settings: { limit, burst },
  });
  budgets.push(b);
  return b;
}

/** Takes permits one after another until `untilMs` (wall clock); returns how many. */
async function drain(b: RequestBudget, untilMs: number): Promise<number> {
  let n = 0;
  const stop = AbortSignal.timeout(Math.max(1, untilMs - Date.now()));
  while (await b.acquire(stop)) n++;
  return n;
}

describe("RequestBudget", () => {
  it("holds the limit across three replicas drawing from one budget", async () => {
    const [a, b, c] = [replica(40, 4), replica(40, 4), replica(40, 4)];
    const started = Date.now();
    const until = started + 1500;
    const counts = await Promise.all([a, b, c].map((r) => drain(r as RequestBudget, until)));
    const total = counts.reduce((x, y) => x + y, 0);
    const elapsed = (Date.now() - started) / 1000;
    expect(total).toBeLessThanOrEqual(4 + 40 * elapsed + 1);
    // Each replica got a share, none was starved.
    for (const n of counts) expect(n).toBeGreaterThan(0);
  });

  it("a 429 seen by one replica stops the others until its Retry-After ends", async () => {
    const a = replica(1000, 50);
    const b = replica(1000, 50);
    expect(await b.acquire()).toBe(true);
    const at = Date.now();
    a.record({ status: 429, retryAfterMs: 700 });
    const pauseEnd = a.pausedUntil;
    expect(pauseEnd).toBeGreaterThanOrEqual(at + 700);
    // b may spend the permits it already held (they lapse HOLD_MS after their grant, which was
    // before the 429); after that it gets nothing until the pause ends.
    let t = Date.now();
    while (t < pauseEnd) {
      expect(await b.acquire()).toBe(true);
      t = Date.now();
      if (t < pauseEnd) expect(t - at).toBeLessThanOrEqual(HOLD_MS);
    }
    // The pause reached Redis a moment after a set it locally: it ends then, for both.
    expect(b.pausedUntil).toBeGreaterThanOrEqual(pauseEnd);
    expect(b.pausedUntil).toBe(a.pausedUntil);
  });

  it("a 429 without Retry-After pauses for one second", async () => {
    const a = replica(0, 1);
    const before = Date.now();
    a.record({ status: 429 });
    expect(a.pausedUntil - before).toBeGreaterThanOrEqual(1000);
    expect(await a.acquire()).toBe(true);
    expect(Date.now()).toBeGreaterThanOrEqual(before + 1000);
  });

  it("rate-limit headers set the rate every replica uses", async () => {
    const a = replica(0, 1);
    const b = replica(0, 1);
    expect(await a.acquire()).toBe(true);
    a.record({ status: 200, advice: { rate: 20 } });
    await waitFor(async () => {
      await b.acquire();
      return b.rate === 20;
    });
    expect(a.rate).toBe(20);
  });

  it("ends a wait with false when its signal aborts or the budget closes", async () => {
    const a = replica(1, 1);
    expect(await a.acquire()).toBe(true);
    const aborted = new AbortController();
    const waiting = a.acquire(aborted.signal);
    aborted.abort();
    expect(await waiting).toBe(false);
    const pending = a.acquire();
    a.close();
    expect(await pending).toBe(false);
  });

  it("with no rate in force, takes permits locally and reports them every BATCH_MS", async () => {
    const store = new BudgetStore(redis, keysFor(prefix).budget);
    const calls: TakeRequest[] = [];
    const a = new RequestBudget({
      source: {
        take: (r) => {
          calls.push(r);
          return store.take(r);
        },
      },
      settings: { limit: 0, burst: 1 },
    });
    budgets.push(a);
    const b = replica(0, 1);
    for (let i = 0; i < 1000; i++) expect(a.tryTake()).toBe(true);
    // A caller that gave up already gets none, though one is at hand.
    expect(await a.acquire(AbortSignal.abort())).toBe(false);
    expect(calls).toHaveLength(0);
    await waitFor(() => calls.length === 1, { what: "one report", timeoutMs: 20 * BATCH_MS });
    expect(calls[0]).toMatchObject({ want: 0, sent: 1000 });
    // A pause set through another replica reaches this one with its next report.
    b.record({ status: 429, retryAfterMs: 2000 });
    expect(await b.acquire(undefined, 100)).toBe(false);
    await waitFor(() => !a.tryTake(), { what: "the pause to reach the other replica" });
    expect(a.paused()).toBe(true);
    expect(a.pausedUntil).toBe(b.pausedUntil);
  });

  it("ends a wait with false at its timeout, and serves the next waiter all the same", async () => {
    const a = replica(2, 1);
    expect(await a.acquire()).toBe(true);
    // The next permit exists 500 ms later: a caller that cannot wait that long gets false.
    const before = Date.now();
    expect(await a.acquire(undefined, 100)).toBe(false);
    expect(Date.now() - before).toBeLessThan(500);
    expect(a.waiting).toBe(0);
    expect(await a.acquire(undefined, 2000)).toBe(true);
  });

  it("keeps waiters waiting while Redis is down and serves them once it is back", async () => {
    let server: RedisServer | undefined;
    try {
      server = await startRedisServer();
      const client = redisClient(server.url);
      client.on("error", () => {});
      let errors = 0;
      const a = new RequestBudget({
        source: new BudgetStore(client, keysFor(prefix).budget),
        settings: { limit: 100, burst: 1 },
        metrics: { redisErrors: { inc: () => errors++ } },
      });
      budgets.push(a);
      expect(await a.acquire()).toBe(true);
      await server.kill();
      let served = false;
      const waiting = a.acquire().then((ok) => {
        served = ok;
        return ok;
      });
      // Several failed calls and retries later, the waiter is still waiting: nothing was
      // granted without the budget.
      await waitFor(() => errors >= 3, { what: "three failed budget calls" });
      expect(served).toBe(false);
      await server.restart();
      expect(await waiting).toBe(true);
      client.disconnect();
    } finally {
      await server?.stop();
    }
  });
});
