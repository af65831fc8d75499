import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/index.js";
import { startDaemon } from "../../src/daemon/daemon.js";
import type { AnyCloudEvent } from "../../src/events/types.js";
import { type Simulator, startSimulator } from "../../src/sim/simulator.js";
import { Store } from "../../src/store/store.js";
import { allReached } from "../helpers/daemon.js";
import { runCli, runCliToEnd } from "../helpers/processes.js";
import { cleanPrefix, redisClient, TEST_REDIS_URL, testPrefix } from "../helpers/redis.js";
import { readAll, readUntil } from "../helpers/streams.js";

const COMMANDS = ["run", "track", "status", "tail", "simulate", "demo"] as const;

describe("usage", () => {
  it("prints usage for --help of the CLI and of every command, exit 0", async () => {
    const results = await Promise.all(
      [["--help"], ...COMMANDS.map((c) => [c, "--help"])].map((args) => runCliToEnd(args)),
    );
    for (const [i, r] of results.entries()) {
      expect(r.code, `command ${i}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(/^Usage: idunox-poller/);
    }
    // Each command's own help, not the general one.
    for (const [i, c] of COMMANDS.entries()) {
      expect(results[i + 1]?.stdout).toContain(`idunox-poller ${c}`);
    }
  });

  it("exits 2 for an unknown command or option", async () => {
    const results = await Promise.all(
      [["frobnicate"], ...COMMANDS.map((c) => [c, "--no-such-option"])].map((args) =>
        runCliToEnd(args),
      ),
    );
    for (const r of results) expect(r.code, r.stderr).toBe(2);
    expect(results[0]?.stderr).toContain('unknown command "frobnicate"');
    expect(results[1]?.stderr).toContain("--no-such-option");
  });
});

describe("run with a bad configuration", () => {
  it("exits 78, names every bad variable and never prints the API key", async () => {
    const key = `secret-${randomUUID()}`;
    const r = await runCliToEnd(["run"], {
      IDUNOX_API_KEY: key,
      IDUNOX_API_URL: "ftp://api.example",
      REDIS_URL: "http://not-redis",
      LOG_LEVEL: "loud",
      POLLER_CONCURRENCY: "0",
      POLLER_JITTER: "2",
    });
    expect(r.code).toBe(78);
    for (const name of [
      "IDUNOX_API_URL",
      "REDIS_URL",
      "LOG_LEVEL",
      "POLLER_CONCURRENCY",
      "POLLER_JITTER",
    ]) {
      expect(r.stderr).toContain(`${name}:`);
    }
    expect(r.stderr).toContain("5 problems");
    expect(r.stdout + r.stderr).not.toContain(key);
  });

  it("exits 78 for an http:// API URL on a host that is not loopback, naming the override", async () => {
    const key = `secret-${randomUUID()}`;
    const r = await runCliToEnd(["run"], {
      IDUNOX_API_KEY: key,
      IDUNOX_API_URL: "http://api.example:8080",
      POLLER_HTTP_PORT: "0",
    });
    expect(r.code).toBe(78);
    expect(r.stderr).toContain(
      "IDUNOX_API_URL: an http:// URL would send the API key in clear text",
    );
    expect(r.stderr).toContain("POLLER_ALLOW_INSECURE_HTTP=true");
    expect(r.stdout + r.stderr).not.toContain(key);
  });

  it("exits 78 when no API key is set", async () => {
    const r = await runCliToEnd(["run"], { POLLER_HTTP_PORT: "0" });
    expect(r.code).toBe(78);
    expect(r.stderr).toContain("IDUNOX_API_KEY");
  });
});

describe("operator commands", () => {
  let redis: Redis;
  let prefix: string;
  let env: Record<string, string>;

  beforeEach(() => {
    redis = redisClient();
    prefix = testPrefix();
    env = { REDIS_URL: TEST_REDIS_URL, POLLER_KEY_PREFIX: prefix };
  });

  afterEach(async () => {
    await cleanPrefix(redis, prefix);
    redis.disconnect();
  });

  it("track adds job ids from arguments and from stdin", async () => {
    const [a, b, c, d] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const fromArgs = await runCliToEnd(["track", a, b.toUpperCase()], env);
    expect(fromArgs.code, fromArgs.stderr).toBe(0);
    expect(fromArgs.stdout).toContain("added 2 new job id(s)");
    const fromStdin = await runCliToEnd(["track", "-"], env, `${c}\n\n${d}\n${a}\n`);
    expect(fromStdin.code, fromStdin.stderr).toBe(0);
    expect(fromStdin.stdout).toContain("added 2 new job id(s)");
    expect(fromStdin.stdout).toContain("1 already pending");
    // Members are stored as written (the daemon compares case-insensitively).
    expect((await redis.smembers(`${prefix}pending`)).sort()).toEqual(
      [a, b.toUpperCase(), c, d].sort(),
    );
    // The same code as the library's track(): each new id leaves its intake hint, once.
    expect(await redis.lrange(`${prefix}intake:hints`, 0, -1)).toEqual([a, b.toUpperCase(), c, d]);
  });

  it("track refuses values that are not job ids with exit 1, still adding the valid ones", async () => {
    const good = randomUUID();
    const r = await runCliToEnd(["track", good, "not-a-uuid", "../../etc/passwd"], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("2 value(s) are not job ids");
    expect(await redis.smembers(`${prefix}pending`)).toEqual([good]);

    const onlyBad = await runCliToEnd(["track", "-"], env, "nope\n");
    expect(onlyBad.code).toBe(1);
    expect(await redis.scard(`${prefix}pending`)).toBe(1);
  });

  it("status reports an empty deployment, an unknown job, and a tracked job never polled", async () => {
    const empty = await runCliToEnd(["status", "--json"], env);
    expect(empty.code, empty.stderr).toBe(0);
    expect(JSON.parse(empty.stdout)).toMatchObject({
      pendingKey: `${prefix}pending`,
      tracked: 0,
      dueBacklog: 0,
      consumerGroups: [],
      replicas: [],
    });

    const id = randomUUID();
    const unknown = await runCliToEnd(["status", id], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("not known");

    await runCliToEnd(["track", id], env);
    // One intake pass, as the daemon's intake loop would do: the job is scheduled, due now.
    await new Store(redis, { prefix, streamMaxLen: 1000, stateTtlMs: 60_000 }).intake(100, true);
    const job = await runCliToEnd(["status", id], env);
    expect(job.code, job.stderr).toBe(0);
    expect(job.stdout).toMatch(/^pending\s+true$/m);
    expect(job.stdout).toMatch(/^nextPollAt\s+now \(never polled\)$/m);
    expect(job.stdout).toMatch(/^status\s+null$/m);

    const bad = await runCliToEnd(["status", "not-a-uuid"], env);
    expect(bad.code).toBe(2);
  });
});

describe("status and tail on a deployment the daemon has run", () => {
  const KEY = `sim-${randomUUID()}`;
  let redis: Redis;
  let prefix: string;
  let env: Record<string, string>;
  let sim: Simulator;
  let jobs: string[];
  let events: AnyCloudEvent[];

  beforeAll(async () => {
    redis = redisClient();
    prefix = testPrefix();
    env = { REDIS_URL: TEST_REDIS_URL, POLLER_KEY_PREFIX: prefix };
    sim = await startSimulator({ apiKey: KEY });
    jobs = [0, 1].map(() =>
      sim.addJob({
        steps: [
          { afterMs: 0, status: "running" },
          { afterMs: 150, status: "succeeded" },
        ],
        slaDeadlineInMs: null,
      }),
    );
    const daemon = await startDaemon(
      loadConfig({
        IDUNOX_API_URL: sim.url,
        IDUNOX_API_KEY: KEY,
        REDIS_URL: TEST_REDIS_URL,
        POLLER_KEY_PREFIX: prefix,
        POLLER_MIN_INTERVAL_MS: "100",
        POLLER_MAX_INTERVAL_MS: "200",
        POLLER_INTAKE_INTERVAL_MS: "50",
        POLLER_HTTP_PORT: "0",
        LOG_LEVEL: "silent",
      }),
    );
    try {
      await redis.sadd(`${prefix}pending`, ...jobs);
      await readUntil(redis, `${prefix}events`, allReached(jobs, "succeeded"));
    } finally {
      await daemon.stop();
    }
    events = (await readAll(redis, `${prefix}events`)).map((e) => e.event);
  });

  afterAll(async () => {
    await sim.close();
    await cleanPrefix(redis, prefix);
    redis.disconnect();
  });

  it("status <jobId> shows the stored final state", async () => {
    const id = jobs[0]!;
    const r = await runCliToEnd(["status", id, "--json"], env);
    expect(r.code, r.stderr).toBe(0);
    const lastSequence = events.filter((e) => e.subject === id).length;
    expect(JSON.parse(r.stdout)).toMatchObject({
      jobId: id,
      pending: false,
      status: "succeeded",
      final: true,
      lastSequence,
    });
  });

  it("tail --count N --from 0 prints one readable line per event, oldest first", async () => {
    const r = await runCliToEnd(["tail", "--from", "0", "--count", String(events.length)], env);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(events.length);
    for (const [i, e] of events.entries()) {
      expect(lines[i]).toContain(e.subject);
      expect(lines[i]).toContain(e.type.replace("idunox.job.", ""));
    }
    // "running -> succeeded", or "(new) -> succeeded" when a busy machine polled late.
    expect(lines.filter((l) => / -> succeeded$/.test(l))).toHaveLength(jobs.length);
    // The readable form leaves the job body (and its patient fields) out.
    expect(r.stdout).not.toContain("partnerSubjectId");
  });

  it("tail --json prints the CloudEvents as written", async () => {
    const r = await runCliToEnd(["tail", "--from", "0", "--count", "2", "--json"], env);
    expect(r.code, r.stderr).toBe(0);
    const printed = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as AnyCloudEvent);
    expect(printed).toEqual(events.slice(0, 2));
  });

  it("tail --group reads as a consumer group and acks what it printed", async () => {
    const n = events.length;
    const r = await runCliToEnd(
      ["tail", "--group", "ops", "--from", "0", "--count", String(n)],
      env,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n")).toHaveLength(n);
    const [pending] = (await redis.xpending(`${prefix}events`, "ops")) as [number];
    expect(pending).toBe(0);

    const status = await runCliToEnd(["status", "--json"], env);
    expect(JSON.parse(status.stdout).consumerGroups).toEqual([
      expect.objectContaining({ stream: "events", group: "ops", lag: 0, pending: 0 }),
    ]);
  });
  it("tail follows the stream until SIGTERM, then exits 0", async () => {
    const p = runCli(["tail", "--from", "0", "--json"], env);
    try {
      // The last event already in the stream is printed: tail is now blocked waiting for more.
      const lastId = events[events.length - 1]?.id ?? "";
      await p.waitForLine(new RegExp(`"id":"${lastId}"`));
      p.child.kill("SIGTERM");
      expect(await p.exited).toBe(0);
    } finally {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    }
  });
});

describe("simulate", () => {
  it("prints its URL and job ids as JSON, serves them, and exits 0 on SIGTERM", async () => {
    const p = runCli(["simulate", "--port", "0", "--json", "--jobs", "2"], { LOG_LEVEL: "warn" });
    try {
      const line = await p.waitForLine(/^\{"url"/);
      const { url, jobIds } = JSON.parse(line) as { url: string; jobIds: string[] };
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(jobIds).toHaveLength(2);
      const res = await fetch(`${url}/v1/jobs/${jobIds[0]}`, {
        headers: { "X-Api-Key": "sim-key" },
      });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { jobId: string }).jobId).toBe(jobIds[0]);
      p.child.kill("SIGTERM");
      expect(await p.exited).toBe(0);
    } finally {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    }
  });
});
