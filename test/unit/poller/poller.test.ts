import { describe, expect, it } from "vitest";
import { Poller, type PollerSettings } from "../../../src/poller/loop.js";
import { FakeApi, FakeClock, FakeStore, silentLogger, until } from "./fakes.js";

const settings: PollerSettings = {
  minIntervalMs: 2000,
  maxIntervalMs: 60_000,
  backoffFactor: 2,
  jitter: 0.2,
  notFoundGraceMs: 60_000,
  failureAlertAfter: 3,
  eventSource: "urn:test",
  concurrency: 4,
  leaseMs: 30_000,
  claimBatch: 8,
  intakeIntervalMs: 50,
  idleWakeMs: 5,
  authRetryMs: 60_000,
  shutdownTimeoutMs: 2000,
  reconcileIntervalMs: 60_000,
  circuitThreshold: 20,
  circuitMinCooldownMs: 1000,
  circuitMaxCooldownMs: 30_000,
  pollBudgetMs: 20_000,
};

describe("Poller", () => {
  it("on a 401 the gate closes and every job not polled is handed back exactly once", async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `job-${i}`);
    const store = new FakeStore(ids);
    const handedBack: string[] = [];
    const release = store.release.bind(store);
    store.release = async (items) => {
      handedBack.push(...items.map((i) => i.id));
      return release(items);
    };
    const api = new FakeApi();
    const clock = new FakeClock();
    const poller = new Poller({ store, api, settings, logger: silentLogger, clock: clock.now });
    poller.start();
    try {
      // Four polls out, more claimed and waiting for a slot.
      await until(() => api.polls.size === 4 && poller.leases > 4, "a full slot set and a queue");
      const polled = [...api.polls.keys()];
      const queued = poller.leases - 4;
      const [first, ...others] = polled as [string, ...string[]];
      api.answer(first, { kind: "auth", status: 401 });
      await until(() => handedBack.length === queued + 1, "the queue and the 401 job back");
      expect(poller.apiKeyAccepted).toBe(false);
      // The other polls were already out; they come back 401 too and are handed back.
      for (const id of others) api.answer(id, { kind: "auth", status: 401 });
      await until(() => poller.leases === 0, "no lease held");
      expect(handedBack).toHaveLength(new Set(handedBack).size);
      const claimed = ids.filter((id) => store.schedule.get(id) !== 0 || handedBack.includes(id));
      expect([...handedBack].sort()).toEqual(claimed.sort());
      expect(handedBack.length).toBeGreaterThan(4);
      // Nothing was decided or written for any of them, and no poll went out after the 401.
      expect(store.applyCalls).toEqual([]);
      expect(api.polls.size).toBe(0);
    } finally {
      await poller.stop();
    }
  });

  it("stops with every decision written and nothing left claimed", async () => {
    const ids = Array.from({ length: 12 }, (_, i) => `job-${i}`);
    const store = new FakeStore(ids);
    const api = new FakeApi();
    const clock = new FakeClock();
    const poller = new Poller({ store, api, settings, logger: silentLogger, clock: clock.now });
    poller.start();
    await until(() => api.polls.size === 4, "four polls out");
    const polled = [...api.polls.keys()];
    const stopped = poller.stop();
    for (const id of polled) api.answer(id, { kind: "not_found" });
    await stopped;
    expect(poller.leases).toBe(0);
    const written = store.applyCalls.flat().map((w) => w.id);
    expect(written.sort()).toEqual(polled.sort());
  });
});
