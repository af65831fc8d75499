import { describe, expect, it } from "vitest";
import { Gate, type GateInput, type GateSettings } from "../../../src/poller/gate.js";
import { FakeApi, FakeClock, silentLogger } from "./fakes.js";

const settings: GateSettings = {
  authRetryMs: 1,
  circuitThreshold: 3,
  circuitMinCooldownMs: 1000,
  circuitMaxCooldownMs: 4000,
};

function gateWith(extra: ConstructorParameters<typeof Gate>[1] = []) {
  const clock = new FakeClock();
  const api = new FakeApi();
  const gauges = { authOk: [] as number[], circuitOpen: [] as number[] };
  let keyRereads = 0;
  const gate = new Gate(
    {
      api,
      settings,
      logger: silentLogger,
      clock: clock.now,
      metrics: {
        authOk: { set: (v) => gauges.authOk.push(v) },
        circuitOpen: { set: (v) => gauges.circuitOpen.push(v) },
      },
      onAuthRetry: () => {
        keyRereads += 1;
      },
    },
    extra,
  );
  let closings = 0;
  gate.onClose(() => {
    closings += 1;
  });
  return { gate, clock, api, gauges, closings: () => closings, keyRereads: () => keyRereads };
}

const stopped = () => AbortSignal.abort();
const running = () => new AbortController().signal;

describe("Gate", () => {
  it("closes on a 401/403, tells its listeners once, and reopens when a probe accepts the key", async () => {
    const t = gateWith();
    expect(t.gate.open()).toBe(true);
    t.gate.observe({ kind: "auth", status: 401 });
    t.gate.observe({ kind: "auth", status: 403 });
    expect(t.gate.open()).toBe(false);
    expect(t.gate.apiKeyAccepted).toBe(false);
    expect(t.closings()).toBe(1);
    expect(t.gauges.authOk).toEqual([0]);

    t.api.probes.push("auth", "ok");
    await t.gate.recover(running());
    expect(t.gate.open()).toBe(false);
    await t.gate.recover(running());
    expect(t.gate.open()).toBe(true);
    expect(t.api.probeCount).toBe(2);
    // The key file is re-read before each probe, so a rotated key is picked up.
    expect(t.keyRereads()).toBe(2);
    expect(t.gauges.authOk).toEqual([0, 1]);
  });

  it("sends no auth probe once shutdown began", async () => {
    const t = gateWith();
    t.gate.observe({ kind: "auth", status: 401 });
    await t.gate.recover(stopped());
    expect(t.api.probeCount).toBe(0);
    expect(t.gate.open()).toBe(false);
  });

  it("opens the circuit on a streak of transient outcomes; any answer breaks the streak", () => {
    const t = gateWith();
    const transient = { kind: "transient", reason: "timeout" } as const;
    t.gate.observe(transient);
    t.gate.observe(transient);
    t.gate.observe({ kind: "not_found" });
    t.gate.observe(transient);
    t.gate.observe(transient);
    expect(t.gate.open()).toBe(true);
    t.gate.observe(transient);
    expect(t.gate.open()).toBe(false);
    expect(t.gate.circuitOpen).toBe(true);
    expect(t.gate.apiKeyAccepted).toBe(true);
    expect(t.closings()).toBe(1);
    expect(t.gauges.circuitOpen).toEqual([1]);
  });

  it("probes the open circuit only when its cooldown is over on the clock, doubling it on failure", async () => {
    const t = gateWith();
    for (let i = 0; i < 3; i++) t.gate.observe({ kind: "transient", reason: "http 503" });
    // Within the cooldown recover only waits (a stopped signal ends the wait at once).
    await t.gate.recover(stopped());
    expect(t.api.probeCount).toBe(0);

    t.clock.advance(1000);
    t.api.probes.push("down");
    await t.gate.recover(running());
    expect(t.api.probeCount).toBe(1);
    expect(t.gate.open()).toBe(false);

    // The failed probe doubled the cooldown: 1 s later is still too early.
    t.clock.advance(1000);
    await t.gate.recover(stopped());
    expect(t.api.probeCount).toBe(1);

    t.clock.advance(1000);
    t.api.probes.push("ok");
    await t.gate.recover(running());
    expect(t.api.probeCount).toBe(2);
    expect(t.gate.open()).toBe(true);
    expect(t.gauges.circuitOpen).toEqual([1, 0]);
  });

  it("a circuit probe that finds the key rejected closes the circuit and opens the auth pause", async () => {
    const t = gateWith();
    for (let i = 0; i < 3; i++) t.gate.observe({ kind: "transient", reason: "timeout" });
    t.clock.advance(1000);
    t.api.probes.push("auth");
    await t.gate.recover(running());
    expect(t.gate.circuitOpen).toBe(false);
    expect(t.gate.apiKeyAccepted).toBe(false);
    expect(t.gate.open()).toBe(false);
    expect(t.closings()).toBe(2);
  });

  it("composes one more input: closed while it says so, and its own recover runs", async () => {
    let closedUntil = 0;
    let recovered = 0;
    let notify: () => void = () => {};
    const budget = (n: () => void): GateInput => {
      notify = n;
      return {
        name: "budget",
        closed: (now) => now < closedUntil,
        recover: async () => {
          recovered += 1;
        },
      };
    };
    const t = gateWith([budget]);
    expect(t.gate.open()).toBe(true);
    closedUntil = t.clock.t + 500;
    notify();
    expect(t.gate.open()).toBe(false);
    expect(t.closings()).toBe(1);
    await t.gate.recover(running());
    expect(recovered).toBe(1);
    expect(t.api.probeCount).toBe(0);
    t.clock.advance(500);
    expect(t.gate.open()).toBe(true);
  });
});
