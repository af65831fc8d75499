import { describe, expect, it } from "vitest";
import { shutdownPhases } from "../../../src/config/budgets.js";
import { Lifecycle } from "../../../src/poller/lifecycle.js";
import { RedisHealth } from "../../../src/poller/redis-health.js";
import { initialState } from "../../../src/poller/state.js";
import { Writer } from "../../../src/poller/writer.js";
import { ApplyCode, type DecisionWrite } from "../../../src/store/store.js";
import { FakeClock, FakeStore, nextTurn, silentLogger, until } from "./fakes.js";

const SHUTDOWN_MS = 10_000;

function decision(id: string): DecisionWrite {
  return {
    id,
    lease: 1,
    expectedVersion: 0,
    state: initialState("e1"),
    nextDueAt: 5,
    events: [],
    alerts: [],
  };
}

function writerWith(limit = 8) {
  const clock = new FakeClock();
  const store = new FakeStore();
  const lifecycle = new Lifecycle(clock.now);
  const health = new RedisHealth(silentLogger);
  const writesMs = shutdownPhases(SHUTDOWN_MS).writesMs;
  const writer = new Writer({
    store,
    health,
    logger: silentLogger,
    clock: clock.now,
    limit,
    mayGiveUp: () => (lifecycle.stoppingFor() ?? 0) > writesMs,
    onSettled: () => {},
    // Retry delays pass in one turn: the test moves the clock itself.
    sleep: () => nextTurn(),
  });
  return { clock, store, lifecycle, health, writer, writesMs };
}

describe("Writer", () => {
  it("keeps retrying through a Redis outage and gives up only at the shutdown deadline", async () => {
    const t = writerWith();
    const codes: Array<ApplyCode | null> = [];
    t.store.outage = new Error("Connection is closed.");
    t.writer.write(decision("a"), (code) => codes.push(code));
    await until(() => t.store.applyCalls.length >= 20, "20 apply attempts");
    expect(codes).toEqual([]);
    expect(t.writer.pending).toBe(1);
    expect(t.health.state).toEqual({ ok: false, reason: "Connection is closed." });

    // Shutdown began: until its write deadline the writer still retries.
    t.lifecycle.setDraining();
    t.clock.advance(t.writesMs);
    const before = t.store.applyCalls.length;
    await until(() => t.store.applyCalls.length >= before + 20, "20 more attempts");
    expect(codes).toEqual([]);

    t.clock.advance(1);
    await until(() => codes.length > 0, "the write to be given up");
    expect(codes).toEqual([null]);
    expect(t.writer.pending).toBe(0);
    // Given up means given up: no call after it.
    const after = t.store.applyCalls.length;
    await nextTurn();
    await nextTurn();
    expect(t.store.applyCalls.length).toBe(after);
  });

  it("writes each decision once when Redis comes back, and counts it until then", async () => {
    const t = writerWith();
    const codes: Array<ApplyCode | null> = [];
    t.store.outage = new Error("Command timed out");
    t.writer.write(decision("a"), (code) => codes.push(code));
    t.writer.write(decision("b"), (code) => codes.push(code));
    await until(() => t.store.applyCalls.length >= 3, "3 failed attempts");
    expect(t.writer.pending).toBe(2);
    t.store.outage = null;
    await until(() => codes.length === 2, "both writes");
    expect(codes).toEqual([ApplyCode.Written, ApplyCode.Written]);
    expect(t.writer.pending).toBe(0);
    expect(t.health.state.ok).toBe(true);
    // Every attempt carried both decisions together; none went out alone or twice.
    for (const call of t.store.applyCalls) expect(call.map((w) => w.id)).toEqual(["a", "b"]);
  });

  it("sends the decisions of one turn together, at most 256 per call", async () => {
    const t = writerWith(1000);
    let done = 0;
    for (let i = 0; i < 300; i++) t.writer.write(decision(`j${i}`), () => done++);
    expect(t.store.applyCalls).toHaveLength(0);
    await until(() => done === 300, "all writes");
    expect(t.store.applyCalls.map((c) => c.length)).toEqual([256, 44]);
  });

  it("reports full at its limit of unwritten decisions, so polling holds back", async () => {
    const t = writerWith(2);
    t.store.outage = new Error("down");
    t.writer.write(decision("a"), () => {});
    expect(t.writer.full).toBe(false);
    t.writer.write(decision("b"), () => {});
    expect(t.writer.full).toBe(true);
    t.store.outage = null;
    await until(() => t.writer.pending === 0, "the writes");
    expect(t.writer.full).toBe(false);
  });

  it("a throwing callback does not keep the rest of its batch from being settled", async () => {
    const t = writerWith();
    const codes: Array<ApplyCode | null> = [];
    t.writer.write(decision("a"), () => {
      throw new Error("bug in reporting");
    });
    t.writer.write(decision("b"), (code) => codes.push(code));
    await until(() => t.writer.pending === 0, "the writes");
    expect(codes).toEqual([ApplyCode.Written]);
  });
});
