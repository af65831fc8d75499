import { describe, expect, it } from "vitest";
import { Claimer, type ClaimerSettings } from "../../../src/poller/claimer.js";
import { Lifecycle } from "../../../src/poller/lifecycle.js";
import { RedisHealth } from "../../../src/poller/redis-health.js";
import type { ClaimedJob } from "../../../src/store/store.js";
import { deferred, FakeClock, FakeStore, nextTurn, silentLogger, until } from "./fakes.js";

const ids = (n: number) => Array.from({ length: n }, (_, i) => `job-${i}`);

function claimerWith(opts: {
  jobs: number;
  settings?: Partial<ClaimerSettings>;
  work?: (job: ClaimedJob) => Promise<void>;
  gateOpen?: () => boolean;
}) {
  const clock = new FakeClock();
  const store = new FakeStore(ids(opts.jobs));
  const lifecycle = new Lifecycle(clock.now);
  const settings: ClaimerSettings = {
    concurrency: 4,
    leaseMs: 30_000,
    claimBatch: 8,
    idleWakeMs: 2,
    handBackBelowMs: 1000,
    ...opts.settings,
  };
  const handedBack: string[] = [];
  const worked: string[] = [];
  const polls: string[] = [];
  const claimer: Claimer = new Claimer({
    store,
    health: new RedisHealth(silentLogger),
    // A closed gate waits a turn per recover, as the real one sleeps or probes.
    gate: { open: opts.gateOpen ?? (() => true), recover: () => nextTurn() },
    lifecycle,
    settings,
    clock: clock.now,
    work: async (job) => {
      worked.push(job.id);
      await (opts.work ?? (async () => {}))(job);
    },
    writerFull: () => false,
    onSlotFreed: () => {},
    metrics: { polls: { inc: (l) => polls.push(l.outcome) } },
  });
  const release = store.release.bind(store);
  store.release = async (items) => {
    handedBack.push(...items.map((i) => i.id));
    return release(items);
  };
  return { clock, store, lifecycle, settings, claimer, handedBack, worked, polls };
}

describe("Claimer", () => {
  it("never holds more jobs than its concurrency plus its queue depth", async () => {
    const held: number[] = [];
    const slow = new Map<string, () => void>();
    const t = claimerWith({
      jobs: 400,
      work: (job) => {
        const d = deferred<void>();
        slow.set(job.id, () => d.resolve());
        return d.promise;
      },
    });
    const claim = t.store.claim.bind(t.store);
    t.store.claim = async (now, limit, leaseMs) => {
      // What it holds, plus what it asks for, at the moment it asks.
      held.push(t.claimer.queued + t.claimer.polling + limit);
      t.clock.advance(7);
      return claim(now, limit, leaseMs);
    };
    const run = t.claimer.run();
    // Finish polls one by one, so the pace (and with it the wanted queue depth) rises.
    while (t.worked.length < 400) {
      await until(() => slow.size > 0, "a poll in flight");
      const [id, finish] = [...slow.entries()][0] as [string, () => void];
      slow.delete(id);
      finish();
      t.clock.advance(1);
    }
    t.lifecycle.setDraining();
    t.claimer.wake();
    for (const finish of slow.values()) finish();
    await run;
    const c = t.settings.concurrency;
    expect(held.length).toBeGreaterThan(10);
    // The queue depth is at most two concurrencies, on top of the polls in flight.
    expect(Math.max(...held)).toBeLessThanOrEqual(3 * c);
    expect(new Set(t.worked).size).toBe(400);
    expect(t.worked).toHaveLength(400);
  });

  it("hands back, unpolled, a job with too little lease left for one poll", async () => {
    const t = claimerWith({ jobs: 3, settings: { leaseMs: 500, handBackBelowMs: 1000 } });
    const run = t.claimer.run();
    await until(() => t.handedBack.length === 3, "3 hand-backs");
    t.lifecycle.setDraining();
    t.claimer.wake();
    await run;
    expect(t.worked).toEqual([]);
    expect(t.polls).toEqual(["handed_back", "handed_back", "handed_back"]);
  });

  it("hands back what it claimed when the gate closed while the claim was out", async () => {
    let open = true;
    const t = claimerWith({ jobs: 5, gateOpen: () => open });
    const claim = t.store.claim.bind(t.store);
    t.store.claim = async (now, limit, leaseMs) => {
      const result = await claim(now, limit, leaseMs);
      open = false;
      return result;
    };
    const run = t.claimer.run();
    await until(() => t.handedBack.length === 5, "5 hand-backs");
    t.lifecycle.setDraining();
    t.claimer.wake();
    await run;
    expect(t.worked).toEqual([]);
    expect([...t.handedBack].sort()).toEqual(ids(5).sort());
  });

  it("hands back a claim that returns after stop began, and claims no more", async () => {
    const t = claimerWith({ jobs: 5 });
    const claim = t.store.claim.bind(t.store);
    t.store.claim = async (now, limit, leaseMs) => {
      const result = await claim(now, limit, leaseMs);
      t.lifecycle.setDraining();
      return result;
    };
    await t.claimer.run();
    expect(t.store.claimCalls).toBe(1);
    expect(t.worked).toEqual([]);
    expect(t.handedBack).toHaveLength(Math.min(5, t.settings.claimBatch));
  });
});
