import pino from "pino";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config/index.js";
import { pollerSettings } from "../../../src/daemon/daemon.js";
import { type JobsApi, Poller, type PollerStore } from "../../../src/poller/loop.js";
import { RedisHealth } from "../../../src/poller/redis-health.js";
import type { ClaimResult, IntakeResult } from "../../../src/store/store.js";

/** A promise whose settling the test decides. */
function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

describe("Poller: Redis health", () => {
  it("lets the call begun last decide: an older call's late reply does not undo a newer failure", async () => {
    // ioredis hands back a pipeline's replies only when the whole pipeline is done, so a claim
    // answered before a black hole can resolve after a newer intake call has timed out.
    const claims: Array<ReturnType<typeof deferred<ClaimResult>>> = [];
    const intakes: Array<ReturnType<typeof deferred<IntakeResult>>> = [];
    const store: PollerStore = {
      claim: () => {
        const d = deferred<ClaimResult>();
        claims.push(d);
        return d.promise;
      },
      intake: () => {
        const d = deferred<IntakeResult>();
        intakes.push(d);
        return d.promise;
      },
      expire: async () => 0,
      release: async () => 0,
      apply: async () => [],
      reject: async () => false,
    };
    const api: JobsApi = {
      poll: async () => ({ kind: "not_found" }),
      probeAuth: async () => "ok",
    };
    const config = loadConfig({
      IDUNOX_API_URL: "http://127.0.0.1:1",
      IDUNOX_API_KEY: "k",
      REDIS_URL: "redis://127.0.0.1:1",
      POLLER_INTAKE_INTERVAL_MS: "10",
      POLLER_IDLE_WAKE_MS: "10",
    });
    const poller = new Poller({
      store,
      api,
      settings: pollerSettings(config),
      logger: pino({ level: "silent" }),
    });
    poller.start();
    try {
      await nextTurn();
      // The claim began first, the intake after it.
      expect(claims).toHaveLength(1);
      expect(intakes).toHaveLength(1);
      intakes[0]?.reject(new Error("Command timed out"));
      await nextTurn();
      expect(poller.redisHealthy).toEqual({ ok: false, reason: "Command timed out" });

      // The older claim's reply arrives late: Redis still counts as down.
      claims[0]?.resolve({ jobs: [], nextDueAt: null });
      await nextTurn();
      expect(poller.redisHealthy.ok).toBe(false);

      // A call begun after the failure succeeds: Redis is up again.
      await expect.poll(() => intakes.length).toBeGreaterThan(1);
      intakes[1]?.resolve({ added: 0, invalid: [], remaining: 0, untracked: 0, diffed: false });
      await expect.poll(() => poller.redisHealthy.ok).toBe(true);
    } finally {
      for (const d of [...claims, ...intakes]) d.resolve(undefined as never);
      await poller.stop();
    }
  });
});

describe("RedisHealth: ACL refusals", () => {
  it("names the missing permission and the fix in readiness and in the one error line", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: "debug" }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const health = new RedisHealth(log);
    const refusal = new Error("NOPERM User consumer has no permissions to run the 'hset' command");
    await expect(health.run("apply", () => Promise.reject(refusal))).rejects.toBe(refusal);
    const { ok, reason } = health.state;
    expect(ok).toBe(false);
    expect(reason).toMatch(
      /^NOPERM User consumer .*'hset' command \(Redis refused the command HSET/,
    );
    expect(reason).toContain("idunox-poller acl");
    const failed = lines.filter((l) => l["msg"] === "redis call failed");
    expect(failed).toHaveLength(1);
    expect(failed[0]?.["fix"]).toMatch(/HSET .*idunox-poller acl/);
  });

  it("leaves other failures as Redis said them", async () => {
    const health = new RedisHealth(pino({ level: "silent" }));
    await expect(
      health.run("claim", () => Promise.reject(new Error("Connection is closed."))),
    ).rejects.toThrow();
    expect(health.state.reason).toBe("Connection is closed.");
  });
});
