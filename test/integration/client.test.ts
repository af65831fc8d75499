import { randomUUID } from "node:crypto";
import { Redis as IORedis, type Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  createClient,
  type JobEvent,
  type JobPollerClient,
  WaitTimeoutError,
} from "../../src/client/index.js";
import { buildEvent, entryFields, streamFields } from "../../src/events/cloudevents.js";
import { keysFor } from "../../src/store/keys.js";
import { Store } from "../../src/store/store.js";
import { jobBody } from "../fixtures/job.js";
import { allReached, answers, reached, simulatorPerTest } from "../helpers/daemon.js";
import { cleanPrefix, redisClient, TEST_REDIS_URL, testPrefix, waitFor } from "../helpers/redis.js";
import { readAll, readUntil } from "../helpers/streams.js";

/** CONTRACT §6: the client library against real Redis, the simulator and the daemon. */

const scope = simulatorPerTest(61);
const clients: JobPollerClient[] = [];

function clientOn(redis: Redis, prefix: string): JobPollerClient {
  const client = createClient({ redis, prefix });
  clients.push(client);
  return client;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

const doneAfter = (ms: number) =>
  scope.sim.addJob({
    steps: [
      { afterMs: 0, status: "running" },
      { afterMs: ms, status: "succeeded" },
    ],
  });

describe("track", () => {
  let redis: Redis;
  let prefix: string;
  beforeEach(() => {
    redis = redisClient();
    prefix = testPrefix();
  });
  afterEach(async () => {
    await cleanPrefix(redis, prefix);
    redis.disconnect();
  });

  it("counts added, already tracked and rejected ids, and writes only the valid ones", async () => {
    const client = clientOn(redis, prefix);
    const [a, b, c] = [randomUUID(), randomUUID().toUpperCase(), randomUUID()];
    const first = await client.track([a, b, "not-a-uuid", "", a, "../../etc/passwd", c]);
    expect(first).toEqual({
      added: 3,
      alreadyTracked: 1,
      rejected: [
        { id: "not-a-uuid", reason: "not a UUID" },
        { id: "", reason: "empty" },
        { id: "../../etc/passwd", reason: "contains path or URL characters" },
      ],
    });
    expect((await redis.smembers(`${prefix}pending`)).sort()).toEqual([a, b, c].sort());
    // The hint names each id once, in the order it was added.
    expect(await redis.lrange(`${prefix}intake:hints`, 0, -1)).toEqual([a, b, c]);

    const again = await client.track([c, randomUUID()]);
    expect(again).toEqual({ added: 1, alreadyTracked: 1, rejected: [] });
    expect(await redis.llen(`${prefix}intake:hints`)).toBe(4);
  });

  it("lets intake schedule a tracked id without a diff, once, while a plain SADD waits for the diff", async () => {
    const client = clientOn(redis, prefix);
    const store = new Store(redis, { prefix, streamMaxLen: 1000, stateTtlMs: 60_000 });
    const keys = keysFor(prefix);
    const upper = randomUUID().toUpperCase();
    const plain = randomUUID();
    await client.track([upper]);
    await redis.sadd(keys.pending, plain);

    // mayDiff false: only the hint can be used.
    const hinted = await store.intake(1000, false, false);
    expect(hinted).toMatchObject({ added: 1, diffed: false, remaining: 0 });
    expect(await redis.zscore(keys.schedule, upper.toLowerCase())).toBe("0");
    expect(await redis.zscore(keys.schedule, plain)).toBeNull();

    // Stale, repeated and hostile hints schedule nothing: already tracked, never pending,
    // not a job id (left to the diff, which rejects it).
    await redis.rpush(keys.hints, upper, randomUUID(), "not-a-uuid");
    expect(await store.intake(1000, false, false)).toMatchObject({ added: 0, invalid: [] });
    expect(await redis.llen(keys.hints)).toBe(0);
    expect(await redis.zcard(keys.schedule)).toBe(1);

    const diffed = await store.intake(1000, false, true);
    expect(diffed).toMatchObject({ added: 1, diffed: true });
    expect(await redis.zcard(keys.schedule)).toBe(2);
    expect((await redis.smembers(keys.tracked)).sort()).toEqual([upper, plain].sort());
  });

  it("closes only the connections it opened", async () => {
    const own = createClient({ redis: "redis://127.0.0.1:6379", prefix });
    await own.track([randomUUID()]);
    await own.close();
    await own.close();
    await expect(own.track([randomUUID()])).rejects.toMatchObject({ code: "CLOSED" });

    const borrowed = createClient({ redis, prefix });
    await borrowed.track([randomUUID()]);
    await borrowed.close();
    expect(await redis.ping()).toBe("PONG");
  });
});

describe("waitFor", () => {
  it("resolves at once with the final event of a job that finished before the call", async () => {
    const t = await scope.start();
    const client = clientOn(t.redis, t.prefix);
    const jobId = doneAfter(0);
    await client.track([jobId]);
    const events = await readUntil(t.redis, t.keys.events, reached(jobId, "succeeded"));
    const final = events.find(
      (e) => e.event.subject === jobId && e.event.type === "idunox.job.status_changed",
    );
    await t.daemon.stop();
    // Nothing more will be written: only the record of the finished job can answer.
    const event = await client.waitFor(jobId.toUpperCase(), { timeoutMs: 5000 });
    expect(event).toEqual(events.at(-1)?.event);
    expect(event.type).toBe("idunox.job.status_changed");
    expect(event.id).toBe(final?.event.id);
  });

  it("resolves with the final event of a job that finishes while it waits", async () => {
    const t = await scope.start();
    const client = clientOn(t.redis, t.prefix);
    const jobId = doneAfter(500);
    const waiting = client.waitFor(jobId, { timeoutMs: 15_000 });
    await client.track([jobId]);
    const event = await waiting;
    expect(event.type).toBe("idunox.job.status_changed");
    if (event.type !== "idunox.job.status_changed") return;
    expect(event.data.status).toBe("succeeded");
    const stream = await readAll(t.redis, t.keys.events);
    expect(stream.filter((e) => e.event.subject === jobId).at(-1)?.event).toEqual(event);
    // The first event (running) did not end the wait.
    expect(stream.filter((e) => e.event.subject === jobId)).toHaveLength(2);
  });

  it("resolves for a failed job whose last attempt ran out between polls, without a status event", async () => {
    const t = await scope.start();
    const client = clientOn(t.redis, t.prefix);
    const jobId = randomUUID();
    scope.sim.addJob({ jobId });
    scope.sim.script(
      jobId,
      answers(jobId, [
        { status: "failed", attempts: 1, maxAttempts: 2 },
        { status: "failed", attempts: 2, maxAttempts: 2 },
      ]),
    );
    const waiting = client.waitFor(jobId, { timeoutMs: 15_000 });
    await client.track([jobId]);
    const event = await waiting;
    expect(event.type).toBe("idunox.job.status_changed");
    if (event.type !== "idunox.job.status_changed") return;
    expect(event.data.status).toBe("failed");
    expect(await t.redis.sismember(t.keys.pending, jobId)).toBe(0);
  });

  it("resolves with not_found for a job the API does not know", async () => {
    const t = await scope.start({ env: { POLLER_NOT_FOUND_GRACE_MS: "200" } });
    const client = clientOn(t.redis, t.prefix);
    const missing = randomUUID();
    await client.track([missing]);
    const event = await client.waitFor(missing, { timeoutMs: 15_000 });
    expect(event.type).toBe("idunox.job.not_found");
    expect(event.subject).toBe(missing);
    // And again, after the fact, from the record.
    expect(await client.waitFor(missing, { timeoutMs: 1000 })).toEqual(event);
  });

  it("rejects with WaitTimeoutError, or with the abort reason, and leaves nothing open", async () => {
    const t = await scope.start();
    // A name of its own, so the count below sees only this test's connections.
    const name = `client-test-${randomUUID().slice(0, 8)}`;
    const mine = new IORedis(TEST_REDIS_URL, { connectionName: name });
    const client = clientOn(mine, t.prefix);
    const connections = async () =>
      String(await t.redis.client("LIST"))
        .split("\n")
        .filter((line) => line.includes(` name=${name}`)).length;
    expect(await connections()).toBe(1);
    const started = Date.now();
    const err = await client.waitFor(randomUUID(), { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WaitTimeoutError);
    expect(err).toMatchObject({ code: "WAIT_TIMEOUT", timeoutMs: 300 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);

    const controller = new AbortController();
    const aborted = client.waitFor(randomUUID(), { signal: controller.signal });
    setTimeout(() => controller.abort(new Error("caller gave up")), 100);
    await expect(aborted).rejects.toThrow("caller gave up");
    await expect(client.waitFor("nope")).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });

    const closing = client.waitFor(randomUUID());
    await waitFor(async () => (await connections()) === 2 || undefined, {
      what: "the wait's blocking connection",
    });
    await client.close();
    await expect(closing).rejects.toMatchObject({ code: "CLOSED" });
    // Every blocking connection a wait opened was closed with it.
    await waitFor(async () => (await connections()) === 1 || undefined, {
      what: "the waits' connections to close",
    });
    mine.disconnect();
  });
});

describe("subscribe", () => {
  it("hands every event to exactly one consumer of the group, once, in order per job", async () => {
    const t = await scope.start();
    const client = clientOn(t.redis, t.prefix);
    const handled: Array<{ consumer: string; event: JobEvent }> = [];
    const subs = ["c1", "c2"].map((consumer) =>
      client.subscribe({
        group: "billing",
        consumer,
        concurrency: 3,
        handler: (event) => {
          handled.push({ consumer, event });
        },
      }),
    );
    await Promise.all(subs.map((s) => s.ready));
    const jobs = Array.from({ length: 12 }, (_, i) => doneAfter(100 + i * 20));
    await client.track(jobs);
    const events = await readUntil(t.redis, t.keys.events, allReached(jobs, "succeeded"));
    await waitFor(() => handled.length >= events.length || undefined, {
      what: `${events.length} events handled`,
    });
    await Promise.all(subs.map((s) => s.close()));

    expect(handled.map((h) => h.event.id).sort()).toEqual(events.map((e) => e.event.id).sort());
    expect(new Set(handled.map((h) => h.consumer)).size).toBeGreaterThan(0);
    for (const jobId of jobs) {
      const seqs = handled.filter((h) => h.event.subject === jobId).map((h) => h.event.sequence);
      expect(seqs).toEqual([...seqs].sort());
    }
    const summary = (await t.redis.xpending(t.keys.events, "billing")) as [number];
    expect(summary[0]).toBe(0);
  });

  describe("with events written by hand", () => {
    let redis: Redis;
    let prefix: string;
    beforeEach(() => {
      redis = redisClient();
      prefix = testPrefix();
    });
    afterEach(async () => {
      await cleanPrefix(redis, prefix);
      redis.disconnect();
    });

    async function publish(subject: string, sequence: number): Promise<string> {
      const event = buildEvent({
        kind: "status_changed",
        source: "urn:test",
        subject,
        epoch: "e1",
        sequence,
        timeMs: Date.now(),
        data: {
          jobId: subject,
          previousStatus: null,
          status: "queued",
          job: jobBody({ jobId: subject, status: "queued" }),
        },
      });
      const [data, id, type, , time] = streamFields(event);
      return (await redis.xadd(
        `${prefix}events`,
        "*",
        "data",
        data,
        "id",
        id,
        "type",
        type,
        "subject",
        subject,
        "time",
        time,
      )) as string;
    }

    it("parks an event that keeps failing after maxDeliveries, with the reason, and acks it", async () => {
      const client = clientOn(redis, prefix);
      const poison = randomUUID();
      const fine = randomUUID();
      const calls = new Map<string, number>();
      const sub = client.subscribe({
        group: "g",
        consumer: "c1",
        minIdleMs: 100,
        maxDeliveries: 3,
        handler: (event) => {
          calls.set(event.subject, (calls.get(event.subject) ?? 0) + 1);
          if (event.subject === poison) throw new Error("cannot bill this");
        },
      });
      await sub.ready;
      const poisonEntry = await publish(poison, 1);
      await publish(fine, 1);
      await redis.xadd(`${prefix}events`, "*", "data", "{not json", "id", "x");
      const dead = `${prefix}events:dead-letter`;
      await waitFor(async () => (await redis.xlen(dead)) >= 2 || undefined, {
        what: "two parked entries",
      });
      await sub.close();

      expect(calls.get(poison)).toBe(3);
      expect(calls.get(fine)).toBe(1);
      const parked = (await redis.xrange(dead, "-", "+")).map(([, flat]) => entryFields(flat));
      const poisoned = parked.find((p) => p["subject"] === poison);
      expect(poisoned).toMatchObject({
        reason: "handler failed on delivery 3: Error: cannot bill this",
        stream: `${prefix}events`,
        group: "g",
        consumer: "c1",
        entryId: poisonEntry,
        deliveries: "3",
      });
      expect(JSON.parse(poisoned?.["data"] ?? "{}").subject).toBe(poison);
      expect(parked.find((p) => p["id"] === "x")?.["reason"]).toMatch(/^not a CloudEvent/);
      const summary = (await redis.xpending(`${prefix}events`, "g")) as [number];
      expect(summary[0]).toBe(0);
    });

    it("stops cleanly: close() waits for the handler under way, acks it, and reads no more", async () => {
      const client = clientOn(redis, prefix);
      let release: () => void = () => {};
      const gate = new Promise<void>((r) => {
        release = r;
      });
      const seen: string[] = [];
      const sub = client.subscribe({
        group: "g",
        consumer: "c1",
        handler: async (event) => {
          seen.push(event.subject);
          await gate;
        },
      });
      await sub.ready;
      const first = randomUUID();
      await publish(first, 1);
      await waitFor(() => seen.length === 1 || undefined, { what: "the handler to start" });
      let closed = false;
      const closing = sub.close().then(() => {
        closed = true;
      });
      await new Promise((r) => setTimeout(r, 50));
      expect(closed).toBe(false);
      release();
      await closing;
      await publish(randomUUID(), 1);
      const summary = (await redis.xpending(`${prefix}events`, "g")) as [number];
      expect(summary[0]).toBe(0);
      expect(seen).toEqual([first]);
      // The second entry is there for the group, unread.
      const groups = (await redis.xinfo("GROUPS", `${prefix}events`)) as unknown[][];
      const info = groups[0] ?? [];
      expect(info[info.indexOf("lag") + 1]).toBe(1);

      const controller = new AbortController();
      const again = client.subscribe({
        group: "g",
        consumer: "c1",
        signal: controller.signal,
        handler: (event) => {
          seen.push(event.subject);
          controller.abort();
        },
      });
      await again.ready;
      await waitFor(() => seen.length === 2 || undefined, { what: "the second event" });
      await again.close();
      expect(((await redis.xpending(`${prefix}events`, "g")) as [number])[0]).toBe(0);
    });
  });
});
