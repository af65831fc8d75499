import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "../../src/client/index.js";
import { loadConfig } from "../../src/config/index.js";
import { type Daemon, startDaemon } from "../../src/daemon/daemon.js";
import { type Simulator, startSimulator } from "../../src/sim/simulator.js";
import { type AclUser, renderAclFile } from "../../src/store/acl.js";
import { keysFor } from "../../src/store/keys.js";
import { allReached, type LogLine } from "../helpers/daemon.js";
import { runCli, runCliToEnd } from "../helpers/processes.js";
import { testPrefix, waitFor } from "../helpers/redis.js";
import { type RedisServer, startRedisServer } from "../helpers/redis-server.js";
import { readAll, readUntil } from "../helpers/streams.js";

/**
 * config/redis/users.acl in use: a private redis-server loads the generated file, and each
 * component runs under its own user. Each works, and each is refused what it must not do with
 * a NOPERM reply, which the components report instead of crashing.
 */

const KEY = `acl-${randomBytes(6).toString("hex")}`;
const prefix = testPrefix();
const keys = keysFor(prefix);
const passwords: Record<AclUser, string> = {
  poller: randomBytes(12).toString("hex"),
  producer: randomBytes(12).toString("hex"),
  consumer: randomBytes(12).toString("hex"),
};

let dir: string;
let server: RedisServer;
/** The default user, untouched by the file: the test's own view of Redis. */
let admin: Redis;
let sim: Simulator;
const clients: Redis[] = [];

const urlFor = (user: AclUser, password = passwords[user]) =>
  `redis://${user}:${password}@127.0.0.1:${server.port}`;

function connectAs(user: AclUser): Redis {
  const c = new Redis(urlFor(user), { maxRetriesPerRequest: 1, lazyConnect: false });
  clients.push(c);
  return c;
}

interface RunningDaemon {
  daemon: Daemon;
  logs: LogLine[];
}

async function daemonAs(url: string, extra: Record<string, string> = {}): Promise<RunningDaemon> {
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split("\n")) if (line !== "") logs.push(JSON.parse(line));
      done();
    },
  });
  const config = loadConfig({
    IDUNOX_API_URL: sim.url,
    IDUNOX_API_KEY: KEY,
    REDIS_URL: url,
    POLLER_KEY_PREFIX: prefix,
    POLLER_MIN_INTERVAL_MS: "50",
    POLLER_MAX_INTERVAL_MS: "200",
    POLLER_INTAKE_INTERVAL_MS: "50",
    POLLER_IDLE_WAKE_MS: "50",
    POLLER_HTTP_PORT: "0",
    LOG_LEVEL: "debug",
    ...extra,
  });
  return { daemon: await startDaemon(config, { logDestination: sink }), logs };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => null,
    (e: unknown) => e as Error,
  );
  expect(err, "the command was allowed").not.toBeNull();
  return err?.message ?? "";
}

/** How many commands of `user` Redis refused so far, from ACL LOG. */
async function refusalsOf(user: AclUser): Promise<number> {
  const entries = (await admin.call("ACL", "LOG", "128")) as unknown[][];
  let total = 0;
  for (const entry of entries) {
    const fields = new Map<unknown, unknown>();
    for (let i = 0; i + 1 < entry.length; i += 2) fields.set(entry[i], entry[i + 1]);
    if (fields.get("username") === user) total += Number(fields.get("count"));
  }
  return total;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "idunox-acl-"));
  const aclFile = join(dir, "users.acl");
  writeFileSync(aclFile, renderAclFile(prefix, { passwords }));
  server = await startRedisServer({ args: ["--aclfile", aclFile] });
  admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
  sim = await startSimulator({ apiKey: KEY, seed: 13 });
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  admin?.disconnect();
  await sim?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("each component under its own ACL user", () => {
  it("the daemon, track, tail and status all work", async () => {
    const jobs = [0, 1, 2].map(() =>
      sim.addJob({
        steps: [
          { afterMs: 0, status: "running" },
          { afterMs: 100, status: "succeeded" },
        ],
        slaDeadlineInMs: null,
      }),
    );
    const { daemon, logs } = await daemonAs(urlFor("poller"));
    try {
      const track = await runCliToEnd(["track", ...jobs, "not-a-uuid"], {
        REDIS_URL: urlFor("producer"),
        POLLER_KEY_PREFIX: prefix,
      });
      expect(track.stdout).toContain("added 3 new job id(s)");
      // The producer cannot read the pending set it writes; the daemon's intake sees the ids.
      await readUntil(admin, keys.events, allReached(jobs, "succeeded"));
      // A rejected member goes through rejectMember: every script has now run under `poller`.
      await admin.sadd(keys.pending, "not-a-job");
      await readUntil(admin, keys.events, (evs) =>
        evs.some((e) => e.event.type === "idunox.job.rejected"),
      );
      // Store statistics (XINFO GROUPS for the lag metric) under the poller user.
      expect(await daemon.metrics.registry.metrics()).toMatch(/^idunox_poller_tracked_jobs \d/m);
      expect(daemon.readiness().ready).toBe(true);
      expect(logs.filter((l) => /NOPERM|permission/i.test(JSON.stringify(l)))).toEqual([]);
    } finally {
      await daemon.stop();
    }

    const events = (await readAll(admin, keys.events)).map((e) => e.event);
    const consumerEnv = { REDIS_URL: urlFor("consumer"), POLLER_KEY_PREFIX: prefix };
    const tail = await runCliToEnd(
      ["tail", "--group", "acl-test", "--from", "0", "--count", String(events.length), "--json"],
      consumerEnv,
    );
    expect(tail.code, tail.stderr).toBe(0);
    expect(
      tail.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).id),
    ).toEqual(events.map((e) => e.id));
    const [pendingAcks] = (await admin.xpending(keys.events, "acl-test")) as [number];
    expect(pendingAcks).toBe(0);

    const status = await runCliToEnd(["status", "--json"], consumerEnv);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout).consumerGroups).toEqual([
      expect.objectContaining({ stream: "events", group: "acl-test", lag: 0, pending: 0 }),
    ]);
    const one = await runCliToEnd(["status", jobs[0]!, "--json"], consumerEnv);
    expect(one.code, one.stderr).toBe(0);
    expect(JSON.parse(one.stdout)).toMatchObject({ jobId: jobs[0], status: "succeeded" });

    // tail following the stream blocks in XREADGROUP under the consumer user until stopped.
    const follow = runCli(["tail", "--group", "acl-follow", "--from", "0", "--json"], consumerEnv);
    try {
      await follow.waitForLine(new RegExp(`"id":"${events[events.length - 1]?.id}"`));
      follow.child.kill("SIGTERM");
      expect(await follow.exited).toBe(0);
    } finally {
      if (follow.child.exitCode === null) follow.child.kill("SIGKILL");
    }
  });
});

describe("idunox-poller acl", () => {
  it("prints the file for a prefix, its usage with --help, and exits 2 on a bad prefix", async () => {
    const [file, help, bad] = await Promise.all([
      runCliToEnd(["acl", "--prefix", "{x}:jobs:"]),
      runCliToEnd(["acl", "--help"]),
      runCliToEnd(["acl", "--prefix", "has space"]),
    ]);
    expect(file.code, file.stderr).toBe(0);
    expect(file.stdout).toBe(renderAclFile("{x}:jobs:"));
    expect(help.stdout).toMatch(/^Usage: idunox-poller acl/);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--prefix");
  });
});

describe("the client library under the ACL users", () => {
  it("track() as the producer, waitFor() and subscribe() with parking as the consumer", async () => {
    const job = sim.addJob({ steps: [{ afterMs: 0, status: "succeeded" }], slaDeadlineInMs: null });
    const { daemon, logs } = await daemonAs(urlFor("poller"));
    const producer = createClient({ redis: urlFor("producer"), prefix });
    const reader = createClient({ redis: urlFor("consumer"), prefix });
    try {
      const waiting = reader.waitFor(job, { timeoutMs: 20_000 });
      expect(await producer.track([job, "not-a-uuid"])).toMatchObject({ added: 1 });
      const final = await waiting;
      expect(final).toMatchObject({ type: "idunox.job.status_changed", subject: job });
      // After the fact, from the record, still with read-only rights.
      expect(await reader.waitFor(job, { timeoutMs: 1000 })).toEqual(final);

      const handled: string[] = [];
      const sub = reader.subscribe({
        group: "acl-sub",
        consumer: "c1",
        startId: "0",
        minIdleMs: 100,
        maxDeliveries: 1,
        handler: (event) => {
          if (event.subject === job) throw new Error("refused on purpose");
          handled.push(event.id);
        },
      });
      await sub.ready;
      const dead = `${prefix}events:dead-letter`;
      await waitFor(async () => (await admin.xlen(dead)) >= 1 || undefined, {
        what: "the failed event parked under the consumer user",
      });
      await sub.close();
      const [pendingAcks] = (await admin.xpending(keys.events, "acl-sub")) as [number];
      expect(pendingAcks).toBe(0);
      expect(logs.filter((l) => /NOPERM|permission/i.test(JSON.stringify(l)))).toEqual([]);
    } finally {
      await producer.close();
      await reader.close();
      await daemon.stop();
    }
  });
});

describe("what each user is refused", () => {
  it("a producer can neither read the events nor write the daemon's state", async () => {
    const producer = connectAs("producer");
    expect(await producer.sadd(keys.pending, "3d1c3c52-9a36-4c0e-8c7f-0d7d1a0c5b11")).toBe(1);
    expect(await refusal(producer.xrange(keys.events, "-", "+"))).toMatch(/^NOPERM .*'xrange'/);
    expect(
      await refusal(producer.xreadgroup("GROUP", "g", "c", "STREAMS", keys.events, ">")),
    ).toMatch(/^NOPERM/);
    expect(await refusal(producer.hset(keys.state, "x", "y"))).toMatch(/^NOPERM .*'hset'/);
    // SADD is allowed, but only on the pending set.
    expect(await refusal(producer.sadd(keys.tracked, "x"))).toMatch(/^NOPERM .*keys/);
    expect(await refusal(producer.smembers(keys.pending))).toMatch(/^NOPERM/);
    // The client library's intake hint: RPUSH on that list only. The file shares one prefix,
    // and an earlier test's hints may still wait for an intake that never came: start empty.
    await admin.del(`${prefix}intake:hints`);
    expect(await producer.rpush(`${prefix}intake:hints`, "x")).toBe(1);
    expect(await refusal(producer.rpush(keys.events, "x"))).toMatch(/^NOPERM/);
    expect(await admin.exists(keys.tracked)).toBe(0);
  });

  it("a consumer cannot write state, nor add or delete events", async () => {
    const consumer = connectAs("consumer");
    expect(await refusal(consumer.hset(keys.state, "x", "y"))).toMatch(/^NOPERM .*'hset'/);
    expect(await refusal(consumer.zadd(keys.schedule, 0, "x"))).toMatch(/^NOPERM/);
    expect(await refusal(consumer.xadd(keys.events, "*", "forged", "1"))).toMatch(/^NOPERM/);
    expect(await refusal(consumer.xdel(keys.events, "0-1"))).toMatch(/^NOPERM/);
    // subscribe() parks failing entries in a dead-letter stream, in a MULTI with the XACK.
    const parked = await consumer
      .multi()
      .xadd(`${keys.events}:dead-letter`, "*", "reason", "test")
      .xack(keys.events, "nogroup", "0-1")
      .exec();
    expect(parked?.[0]?.[0]).toBeNull();
    expect(await refusal(consumer.xadd(`${prefix}other:dead-letter`, "*", "x", "1"))).toMatch(
      /^NOPERM/,
    );
    expect(await refusal(consumer.sadd(keys.pending, "x"))).toMatch(/^NOPERM/);
    // Group bookkeeping only on the two streams: read-only everywhere else under the prefix.
    expect(await refusal(consumer.xgroup("CREATE", keys.state, "g", "0", "MKSTREAM"))).toMatch(
      /^NOPERM .*keys/,
    );
    expect(await consumer.hgetall(keys.replicas)).toEqual({});
  });

  it("the poller cannot touch a key outside its prefix, directly or from a script", async () => {
    const poller = connectAs("poller");
    const outside = `other:${randomBytes(4).toString("hex")}`;
    expect(await refusal(poller.hset(outside, "x", "y"))).toMatch(/^NOPERM .*keys/);
    expect(await refusal(poller.hget(outside, "x"))).toMatch(/^NOPERM .*keys/);
    expect(
      await refusal(poller.eval("return redis.call('hset', KEYS[1], 'x', 'y')", 1, outside)),
    ).toMatch(/^NOPERM .*keys/);
    // A key the script did not declare is checked too.
    expect(
      await refusal(
        poller.eval("return redis.call('hset', ARGV[1], 'x', 'y')", 1, keys.state, outside),
      ),
    ).toMatch(/can't access|NOPERM/);
    expect(await refusal(poller.flushall())).toMatch(/^NOPERM .*'flushall'/);
    expect(await refusal(poller.call("CONFIG", "GET", "aclfile"))).toMatch(/^NOPERM/);
    expect(await admin.exists(outside)).toBe(0);
  });

  it("a refused command is a clear one-line error: track exits 1, the daemon stays up and says why", async () => {
    // track as the consumer: SADD on pending is not the consumer's to run.
    const track = await runCliToEnd(["track", "3d1c3c52-9a36-4c0e-8c7f-0d7d1a0c5b12"], {
      REDIS_URL: urlFor("consumer"),
      POLLER_KEY_PREFIX: prefix,
    });
    expect(track.code).toBe(1);
    expect(track.stderr).toMatch(/NOPERM.*'sadd'/);
    expect(track.stderr.trim().split("\n")).toHaveLength(1);
    expect(track.stderr).not.toContain(passwords.consumer);

    // The daemon given the producer's credentials: no script may run. It keeps running,
    // reports not ready with the refusal as the reason, and logs it once, not per attempt.
    const { daemon, logs } = await daemonAs(urlFor("producer"));
    try {
      await waitFor(() => daemon.readiness().ready === false && daemon.readiness(), {
        what: "readiness to report the refusal",
      });
      // Let the loops retry a while (Redis's ACL LOG counts the refusals): a refusal must not
      // turn into a log line per attempt.
      await waitFor(async () => (await refusalsOf("producer")) >= 10, {
        what: "the daemon to retry under the producer user",
      });
      expect(daemon.readiness().checks["redis"]).toMatchObject({ ok: false });
      const failures = logs.filter((l) => l["msg"] === "redis call failed");
      expect(failures).toHaveLength(1);
      expect(JSON.stringify(failures[0])).toMatch(/NOPERM/);
      expect(JSON.stringify(logs)).not.toContain(passwords.producer);
    } finally {
      await daemon.stop();
    }
  });
});
