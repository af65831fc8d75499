import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobStatus } from "../../src/api/schema.js";
import { ConfigError, loadConfig } from "../../src/config/index.js";
import { startDaemon } from "../../src/daemon/daemon.js";
import { buildEvent } from "../../src/events/cloudevents.js";
import { rejectedEvent } from "../../src/poller/rejected.js";
import { type SimJobSpec, startSimulator } from "../../src/sim/simulator.js";
import { connectRedis, type RedisClient } from "../../src/store/connection.js";
import { ApplyCode, Store } from "../../src/store/store.js";
import { checkExactlyOnce } from "../helpers/invariants.js";
import { type LocalRedisCluster, startRedisCluster } from "../helpers/redis-cluster.js";
import { readAll, readUntil } from "../helpers/streams.js";

const KEY = "cluster-test-key";

let cluster: LocalRedisCluster;
const clients: RedisClient[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster(3);
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await cluster?.close();
});

function clusterClient(): RedisClient {
  const client = connectRedis(cluster.url);
  client.on("error", () => {});
  clients.push(client);
  return client;
}

/** The stream helpers are typed for a standalone client; XRANGE/XREAD read the same on a Cluster. */
const asRedis = (c: RedisClient) => c as unknown as Redis;

const taggedPrefix = () => `{idunox-${randomUUID()}}:jobs:`;

describe("Redis Cluster", () => {
  it("runs every store script when the prefix carries a hash tag", async () => {
    const redis = clusterClient();
    const store = new Store(redis, {
      prefix: taggedPrefix(),
      streamMaxLen: 10_000,
      stateTtlMs: 60_000,
    });
    const a = randomUUID();
    const upper = randomUUID().toUpperCase();
    await redis.sadd(store.keys.pending, a, upper, "../etc/passwd");

    const intake = await store.intake(100, true);
    expect(intake.added).toBe(2);
    expect(intake.invalid.map((i) => i.member)).toEqual(["../etc/passwd"]);
    expect(
      await store.reject(
        "../etc/passwd",
        intake.invalid[0]?.lastSequence ?? 0,
        rejectedEvent("../etc/passwd", "path", "urn:t", 1),
      ),
    ).toBe(true);

    const now = Date.now();
    const claimed = await store.claim(now, 10, 30_000);
    expect(claimed.jobs.map((j) => j.id).sort()).toEqual([a, upper.toLowerCase()].sort());
    const job = claimed.jobs.find((j) => j.id === a);
    if (job === undefined) throw new Error("job a was not claimed");
    const event = buildEvent({
      kind: "not_found",
      source: "urn:t",
      subject: a,
      epoch: job.state.epoch,
      sequence: 1,
      timeMs: now,
      data: { jobId: a, firstNotFoundAt: new Date(now).toISOString() },
    });
    const write = {
      id: a,
      lease: job.lease,
      expectedVersion: job.state.version,
      state: { ...job.state, version: job.state.version + 1, sequence: 1 },
      nextDueAt: null,
      events: [event],
      alerts: [true],
    };
    expect(await store.apply([write], now)).toEqual([ApplyCode.Written]);
    // The same decision again is refused: the compare-and-set holds on a Cluster too.
    expect(await store.apply([write], now)).toEqual([ApplyCode.LeaseLost]);

    const stats = await store.stats(now);
    expect(stats.tracked).toBe(1);
    expect(stats.rejected).toBe(1);
    expect(await redis.sismember(store.keys.pending, a)).toBe(0);
    const events = await readAll(asRedis(redis), store.keys.events);
    expect(events.map((e) => e.event.type)).toEqual([
      "idunox.job.rejected",
      "idunox.job.not_found",
    ]);
    // The keys really are spread over a multi-node cluster, all in the tag's slot.
    const slot = await redis.call("CLUSTER", "KEYSLOT", store.keys.events);
    expect(await redis.call("CLUSTER", "KEYSLOT", store.keys.pending)).toBe(slot);
  });

  it("delivers each lifecycle's events exactly once through the whole daemon", async () => {
    const sim = await startSimulator({ apiKey: KEY, seed: 7 });
    const prefix = taggedPrefix();
    const specs: Array<SimJobSpec & { final: JobStatus }> = [
      {
        final: "succeeded",
        steps: [
          { afterMs: 0, status: "queued" },
          { afterMs: 300, status: "running" },
          { afterMs: 700, status: "succeeded" },
        ],
      },
      {
        final: "dead_letter",
        maxAttempts: 2,
        steps: [
          { afterMs: 0, status: "queued" },
          { afterMs: 200, status: "running" },
          { afterMs: 500, status: "failed" },
          { afterMs: 800, status: "queued" },
          { afterMs: 1000, status: "running" },
          { afterMs: 1300, status: "dead_letter" },
        ],
      },
      {
        final: "cancelled",
        steps: [
          { afterMs: 0, status: "queued" },
          { afterMs: 400, status: "cancelled" },
        ],
      },
      {
        final: "failed",
        maxAttempts: 1,
        steps: [
          { afterMs: 0, status: "running" },
          { afterMs: 500, status: "failed" },
        ],
      },
    ];
    const ids = specs.map((s) => sim.addJob({ ...s, slaDeadlineInMs: null }));
    const bad = "not-a-job-id";
    const config = loadConfig({
      IDUNOX_API_URL: sim.url,
      IDUNOX_API_KEY: KEY,
      REDIS_URL: cluster.url,
      POLLER_KEY_PREFIX: prefix,
      POLLER_MIN_INTERVAL_MS: "50",
      POLLER_MAX_INTERVAL_MS: "200",
      POLLER_REQUEST_TIMEOUT_MS: "2000",
      POLLER_LEASE_MS: "10000",
      POLLER_HTTP_PORT: "0",
      POLLER_INTAKE_INTERVAL_MS: "50",
      LOG_LEVEL: "silent",
    });
    const daemon = await startDaemon(config);
    const redis = clusterClient();
    try {
      // One member upper-cased: a producer may write ids in any case.
      await redis.sadd(
        `${prefix}pending`,
        ...ids.map((id, i) => (i === 0 ? id.toUpperCase() : id)),
        bad,
      );
      const seen = await readUntil(
        asRedis(redis),
        `${prefix}events`,
        (events) => {
          const reached = ids.map((id, i) =>
            events.some(
              ({ event: e }) =>
                e.subject === id &&
                e.type === "idunox.job.status_changed" &&
                e.data.status === specs[i]?.final,
            ),
          );
          return reached.every(Boolean) && events.some((e) => e.event.subject === bad);
        },
        30_000,
      );
      expect(seen.length).toBeGreaterThan(0);
      await daemon.stop();
      const events = (await readAll(asRedis(redis), `${prefix}events`)).map((e) => e.event);
      const alerts = (await readAll(asRedis(redis), `${prefix}alerts`)).map((e) => e.event);
      const report = checkExactlyOnce({
        events,
        alerts,
        finals: new Map(ids.map((id, i) => [id, specs[i]?.final as JobStatus])),
        pending: await redis.smembers(`${prefix}pending`),
      });
      expect(report.problems).toEqual([]);
      expect(report.finished).toBe(ids.length);
      for (const [i, id] of ids.entries()) {
        const statuses = events
          .filter((e) => e.subject === id && e.type === "idunox.job.status_changed")
          .map((e) => (e.type === "idunox.job.status_changed" ? e.data.status : ""));
        // Only statuses the job really had, in its order, ending in its final one.
        const lifecycle = specs[i]?.steps?.map((s) => s.status) ?? [];
        let at = 0;
        for (const s of statuses) {
          at = lifecycle.indexOf(s as never, at);
          expect(at, `${id}: ${statuses.join(",")}`).toBeGreaterThanOrEqual(0);
        }
        expect(statuses.at(-1)).toBe(specs[i]?.final);
      }
      const deadLetter = events.filter((e) => e.type === "idunox.job.dead_lettered");
      expect(deadLetter.map((e) => e.subject)).toEqual([ids[1]]);
      const rejected = events.filter((e) => e.type === "idunox.job.rejected");
      expect(rejected.map((e) => e.subject)).toEqual([bad]);
      expect(await redis.smembers(`${prefix}rejected`)).toEqual([bad]);
      // Final jobs and the rejected member have left the pending set.
      expect(await redis.scard(`${prefix}pending`)).toBe(0);
      expect(alerts.map((e) => e.id).sort()).toEqual(
        [...deadLetter, ...rejected].map((e) => e.id).sort(),
      );
    } finally {
      await daemon.stop();
      await sim.close();
    }
  }, 60_000);

  it("refuses a prefix without a hash tag at start, and the scripts would fail without it", async () => {
    const prefix = `idunox-${randomUUID()}:jobs:`;
    const env = {
      IDUNOX_API_URL: "http://127.0.0.1:9",
      IDUNOX_API_KEY: KEY,
      REDIS_URL: cluster.url,
      POLLER_KEY_PREFIX: prefix,
      POLLER_HTTP_PORT: "0",
    };
    expect(() => loadConfig(env)).toThrow(ConfigError);
    try {
      loadConfig(env);
    } catch (err) {
      expect((err as ConfigError).problems.join("\n")).toMatch(
        /POLLER_KEY_PREFIX: a Redis Cluster needs a hash tag/,
      );
    }
    // Why the check exists: the multi-key scripts cannot run across slots.
    const store = new Store(clusterClient(), {
      prefix,
      streamMaxLen: 10_000,
      stateTtlMs: 60_000,
    });
    await expect(store.intake(100, true)).rejects.toThrow(/CROSSSLOT|same slot/i);
    await expect(store.claim(Date.now(), 10, 30_000)).rejects.toThrow(/CROSSSLOT|same slot/i);
  }, 30_000);
});
