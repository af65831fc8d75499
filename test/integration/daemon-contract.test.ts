import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import type { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/index.js";
import { type Daemon, startDaemon } from "../../src/daemon/daemon.js";
import { type Simulator, startSimulator } from "../../src/sim/simulator.js";
import { keysFor } from "../../src/store/keys.js";
import { jobBody } from "../fixtures/job.js";
import { cleanPrefix, redisClient, TEST_REDIS_URL, testPrefix, waitFor } from "../helpers/redis.js";
import { readAll, readUntil, type StreamEvent } from "../helpers/streams.js";

/**
 * CONTRACT sections 1-4 end to end: the real daemon (in process), the real Redis and the
 * built-in simulator on port 0, with short intervals so lifecycles take a moment.
 */

const KEY = `key-${randomUUID()}`;
let sim: Simulator;
let redis: Redis;
let prefix: string;
let daemon: Daemon | null;
let logLines: string[];

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    IDUNOX_API_URL: sim.url,
    IDUNOX_API_KEY: KEY,
    REDIS_URL: TEST_REDIS_URL,
    POLLER_KEY_PREFIX: prefix,
    POLLER_MIN_INTERVAL_MS: "20",
    POLLER_MAX_INTERVAL_MS: "200",
    POLLER_INTAKE_INTERVAL_MS: "20",
    POLLER_IDLE_WAKE_MS: "20",
    POLLER_REQUEST_TIMEOUT_MS: "500",
    POLLER_LEASE_MS: "2000",
    POLLER_RETRIES: "1",
    POLLER_NOT_FOUND_GRACE_MS: "5000",
    POLLER_AUTH_RETRY_MS: "100",
    POLLER_HTTP_PORT: "0",
    LOG_LEVEL: "debug",
    ...extra,
  };
}

async function start(extra: Record<string, string> = {}): Promise<Daemon> {
  const sink = new Writable({
    write(chunk, _enc, done) {
      logLines.push(...String(chunk).split("\n").filter(Boolean));
      done();
    },
  });
  daemon = await startDaemon(loadConfig(env(extra)), { logDestination: sink });
  return daemon;
}

const keys = () => keysFor(prefix);
const of = (events: StreamEvent[], jobId: string) =>
  events.filter((e) => e.event.subject === jobId).map((e) => e.event);
const finalFor = (jobId: string, status: string) => (events: StreamEvent[]) =>
  of(events, jobId).some((e) => e.type === "idunox.job.status_changed" && e.data.status === status);

beforeEach(async () => {
  sim = await startSimulator({ apiKey: KEY, port: 0, host: "127.0.0.1", seed: 7 });
  redis = redisClient();
  prefix = testPrefix();
  daemon = null;
  logLines = [];
});

afterEach(async () => {
  await daemon?.stop();
  await sim.close();
  await cleanPrefix(redis, prefix);
  redis.disconnect();
});

describe("daemon against the contract", () => {
  it("picks up jobs added while it was down and emits a lifecycle in order, exactly once", async () => {
    const jobId = sim.addJob({
      steps: [
        { afterMs: 0, status: "queued" },
        { afterMs: 150, status: "running" },
        { afterMs: 300, status: "succeeded" },
      ],
    });
    await redis.sadd(keys().pending, jobId);
    await start();
    const events = await readUntil(redis, keys().events, finalFor(jobId, "succeeded"));
    const mine = of(events, jobId);
    const changes = mine.filter((e) => e.type === "idunox.job.status_changed");
    expect(changes.map((e) => [e.data.previousStatus, e.data.status])).toEqual([
      [null, "queued"],
      ["queued", "running"],
      ["running", "succeeded"],
    ]);
    expect(mine.map((e) => e.sequence)).toEqual(["0000000001", "0000000002", "0000000003"]);
    const first = events.find((e) => e.event.subject === jobId);
    expect(first?.fields).toMatchObject({
      id: first?.event.id,
      type: "idunox.job.status_changed",
      subject: jobId,
      time: first?.event.time,
    });
    expect(first?.event).toMatchObject({
      specversion: "1.0",
      source: "urn:idunox:job-poller",
      datacontenttype: "application/json",
    });
    // Final: it left the pending set together with its last event.
    await waitFor(async () => (await redis.sismember(keys().pending, jobId)) === 0);
  });

  it("reports an SLA breach from the API flag, and one from the deadline by its own clock", async () => {
    const byFlag = sim.addJob({
      steps: [
        { afterMs: 0, status: "running", slaBreached: true },
        { afterMs: 400, status: "succeeded" },
      ],
    });
    const byDeadline = sim.addJob({
      steps: [
        { afterMs: 0, status: "running" },
        { afterMs: 400, status: "succeeded" },
      ],
    });
    // The API has not flagged the breach yet, but the deadline is already behind us.
    const past = new Date(Date.now() - 60_000).toISOString();
    sim.script(byDeadline, [
      {
        status: 200,
        body: jobBody({
          jobId: byDeadline,
          status: "running",
          slaDeadlineAt: past,
          slaBreached: false,
        }),
      },
    ]);
    await redis.sadd(keys().pending, byFlag, byDeadline);
    await start();
    const events = await readUntil(
      redis,
      keys().events,
      (ev) => finalFor(byFlag, "succeeded")(ev) && finalFor(byDeadline, "succeeded")(ev),
    );
    for (const [jobId, detectedBy] of [
      [byFlag, "api"],
      [byDeadline, "deadline"],
    ] as const) {
      const sla = of(events, jobId).filter((e) => e.type === "idunox.job.sla_breached");
      expect(sla).toHaveLength(1);
      expect((sla[0]?.data as { detectedBy: string } | undefined)?.detectedBy).toBe(detectedBy);
    }
    const alerts = await readAll(redis, keys().alerts);
    expect(alerts.filter((e) => e.event.type === "idunox.job.sla_breached")).toHaveLength(2);
  });

  it("waits out a 404 inside the grace, and reports not_found past it", async () => {
    const late = sim.addJob({
      visibleAfterMs: 300,
      steps: [
        { afterMs: 0, status: "queued" },
        { afterMs: 400, status: "succeeded" },
      ],
    });
    const missing = randomUUID();
    await redis.sadd(keys().pending, late, missing);
    await start({ POLLER_NOT_FOUND_GRACE_MS: "1500" });
    const events = await readUntil(
      redis,
      keys().events,
      (ev) =>
        finalFor(late, "succeeded")(ev) && ev.some((e) => e.event.type === "idunox.job.not_found"),
    );
    expect(of(events, late).some((e) => e.type === "idunox.job.not_found")).toBe(false);
    const notFound = of(events, missing);
    expect(notFound.map((e) => e.type)).toEqual(["idunox.job.not_found"]);
    const alerts = await readAll(redis, keys().alerts);
    expect(alerts.map((e) => e.event.id)).toContain(notFound[0]?.id);
    await waitFor(async () => (await redis.sismember(keys().pending, missing)) === 0);
  });

  it("ignores a stale answer: events never go backwards", async () => {
    const jobId = sim.addJob({ steps: [{ afterMs: 0, status: "succeeded" }] });
    const t = Date.now();
    const at = (ms: number) => new Date(t + ms).toISOString();
    sim.script(jobId, [
      { status: 200, body: jobBody({ jobId, status: "running", updatedAt: at(2000) }) },
      { status: 200, body: jobBody({ jobId, status: "queued", updatedAt: at(1000) }) },
      { status: 200, body: jobBody({ jobId, status: "succeeded", updatedAt: at(3000) }) },
    ]);
    await redis.sadd(keys().pending, jobId);
    await start();
    const events = await readUntil(redis, keys().events, finalFor(jobId, "succeeded"));
    expect(
      of(events, jobId).map((e) =>
        e.type === "idunox.job.status_changed" ? e.data.status : e.type,
      ),
    ).toEqual(["running", "succeeded"]);
  });

  it("emits nothing again for a finished job that is added again", async () => {
    const jobId = sim.addJob({
      steps: [
        { afterMs: 0, status: "running" },
        { afterMs: 100, status: "dead_letter", attempts: 3 },
      ],
      maxAttempts: 3,
    });
    await redis.sadd(keys().pending, jobId);
    await start();
    await readUntil(redis, keys().events, finalFor(jobId, "dead_letter"));
    await waitFor(async () => (await redis.sismember(keys().pending, jobId)) === 0);
    const before = (await readAll(redis, keys().events)).length;
    const requests = sim.stats().byJob.get(jobId) ?? 0;
    await redis.sadd(keys().pending, jobId);
    // It is polled again (the producer asked), found final with nothing new, and removed.
    await waitFor(() => (sim.stats().byJob.get(jobId) ?? 0) > requests);
    await waitFor(async () => (await redis.sismember(keys().pending, jobId)) === 0);
    expect(await readAll(redis, keys().events)).toHaveLength(before);
  });

  it("pauses on a rejected key, picks up a rotated key file, and resumes", async () => {
    const dir = await mkdtemp(join(tmpdir(), "poller-key-"));
    const keyFile = join(dir, "api-key");
    writeFileSync(keyFile, `${KEY}\n`);
    try {
      const jobId = sim.addJob({
        steps: [
          { afterMs: 0, status: "running" },
          { afterMs: 200, status: "succeeded" },
        ],
      });
      const newKey = `rotated-${randomUUID()}`;
      sim.setApiKey(newKey);
      await redis.sadd(keys().pending, jobId);
      const d = await start({ IDUNOX_API_KEY: "", IDUNOX_API_KEY_FILE: keyFile });
      await waitFor(() => d.readiness().checks["apiKey"]?.ok === false, {
        what: "the auth pause",
      });
      expect(d.readiness().ready).toBe(false);
      // Paused: no job removed, no event.
      expect(await redis.xlen(keys().events)).toBe(0);
      expect(await redis.sismember(keys().pending, jobId)).toBe(1);
      writeFileSync(keyFile, `${newKey}\n`);
      await waitFor(() => d.readiness().ready, { what: "readiness after rotation" });
      await readUntil(redis, keys().events, finalFor(jobId, "succeeded"));
      expect(logLines.some((l) => l.includes("API key file changed"))).toBe(true);
      expect(logLines.some((l) => l.includes(newKey) || l.includes(KEY))).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("serves /readyz and /metrics without job ids", async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const address = probe.address();
        probe.close(() => resolve(typeof address === "object" && address ? address.port : 0));
      });
    });
    const jobId = sim.addJob({ steps: [{ afterMs: 0, status: "succeeded" }] });
    await redis.sadd(keys().pending, jobId);
    await start({ POLLER_HTTP_PORT: String(port), POLLER_HTTP_HOST: "127.0.0.1" });
    await readUntil(redis, keys().events, finalFor(jobId, "succeeded"));
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(ready.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/idunox_poller_polls_total\{outcome="ok"\} [1-9]/);
    expect(metrics).toMatch(/idunox_poller_events_total\{type="status_changed"\} 1/);
    expect(metrics).not.toContain(jobId);
    expect(metrics).not.toContain(KEY);
  });
});
