import { describe, expect, it } from "vitest";
import type { Job } from "../../src/api/schema.js";
import type { CloudEvent } from "../../src/events/types.js";
import { answers, eventsOf, reached, simulatorPerTest, transitions } from "../helpers/daemon.js";
import { waitFor } from "../helpers/redis.js";
import { readAll, readUntil } from "../helpers/streams.js";

/**
 * CONTRACT §3 and §4 against the real daemon: scripted answers make each lifecycle exact (one
 * answer per poll), so every status is observed and the expected events are known in full.
 */

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const ATTRIBUTES = [
  "data",
  "datacontenttype",
  "dataschema",
  "id",
  "sequence",
  "source",
  "specversion",
  "subject",
  "time",
  "type",
];

const scope = simulatorPerTest(11);

/** A job the simulator knows (it ends succeeded if ever polled past its script). */
function scriptedJob(steps: ReadonlyArray<Partial<Job>>): { jobId: string; bodies: Job[] } {
  const jobId = scope.sim.addJob({ steps: [{ afterMs: 0, status: "succeeded" }] });
  const scripted = answers(jobId, steps);
  scope.sim.script(jobId, scripted);
  return { jobId, bodies: scripted.map((a) => a.body as Job) };
}

describe("lifecycles", () => {
  it("emits pending→queued→running→succeeded in order, as CloudEvents, and only then leaves pending", async () => {
    const { jobId, bodies } = scriptedJob([
      { status: "pending", startedAt: null },
      { status: "queued", startedAt: null },
      { status: "running" },
      { status: "running" },
      { status: "succeeded", completedAt: "2026-04-20T09:00:05.000Z" },
    ]);
    const t = await scope.start({ beforeStart: (r, k) => r.sadd(k.pending, jobId) });
    const { redis, keys } = t;

    // Sampled while the daemon works: whenever the job is gone from pending, its final event
    // must already be in the stream (pending is read first, so a later stream read covers it).
    let samples = 0;
    const watched = waitFor(
      async () => {
        samples += 1;
        const stillPending = await redis.sismember(keys.pending, jobId);
        const events = await readAll(redis, keys.events);
        if (stillPending === 1) return false;
        return { finalInStream: reached(jobId, "succeeded")(events) };
      },
      { intervalMs: 5, what: "the job to leave pending" },
    );

    const events = await readUntil(redis, keys.events, reached(jobId, "succeeded"));
    expect(await redis.sismember(keys.pending, jobId)).toBe(0);
    expect(await watched).toEqual({ finalInStream: true });
    expect(samples).toBeGreaterThan(0);

    const mine = events.filter((e) => e.event.subject === jobId);
    expect(mine).toHaveLength(events.length);
    expect(transitions(events, jobId)).toEqual([
      "null>pending",
      "pending>queued",
      "queued>running",
      "running>succeeded",
    ]);
    expect(mine.map((e) => e.event.sequence)).toEqual([
      "0000000001",
      "0000000002",
      "0000000003",
      "0000000004",
    ]);
    expect(new Set(mine.map((e) => e.event.id)).size).toBe(4);

    // The body each event carries is the validated answer that showed the change.
    const shown = [bodies[0], bodies[1], bodies[2], bodies[4]];
    for (const [i, { fields, event }] of mine.entries()) {
      expect(Object.keys(event).sort()).toEqual(ATTRIBUTES);
      expect(event).toMatchObject({
        specversion: "1.0",
        source: "urn:idunox:job-poller",
        type: "idunox.job.status_changed",
        subject: jobId,
        datacontenttype: "application/json",
        dataschema: "urn:idunox:job-poller:schema:status_changed:1",
      });
      expect(event.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(event.time).toMatch(RFC3339);
      expect(event.sequence).toMatch(/^\d{10}$/);
      const data = (event as CloudEvent<"status_changed">).data;
      expect(Object.keys(data).sort()).toEqual(["job", "jobId", "previousStatus", "status"]);
      expect(data.jobId).toBe(jobId);
      expect(data.job).toEqual(shown[i]);
      // The entry: `data` is the whole event, the other fields repeat its attributes.
      expect(Object.keys(fields).sort()).toEqual(["data", "id", "subject", "time", "type"]);
      expect(JSON.parse(fields["data"] ?? "")).toEqual(event);
      expect(fields).toMatchObject({
        id: event.id,
        type: event.type,
        subject: event.subject,
        time: event.time,
      });
    }
    expect(await redis.xlen(keys.alerts)).toBe(0);
  });

  it("reports dead_letter twice: status_changed and dead_lettered, the alert with the same id", async () => {
    const { jobId } = scriptedJob([
      { status: "running", attempts: 1, maxAttempts: 2 },
      { status: "failed", attempts: 1, maxAttempts: 2, lastError: "first try failed" },
      { status: "queued", attempts: 1, maxAttempts: 2, lastError: "first try failed" },
      { status: "running", attempts: 2, maxAttempts: 2, lastError: "first try failed" },
      { status: "dead_letter", attempts: 2, maxAttempts: 2, lastError: "second try failed" },
    ]);
    const t = await scope.start();
    await t.redis.sadd(t.keys.pending, jobId);
    const events = await readUntil(t.redis, t.keys.events, (ev) =>
      eventsOf(ev, jobId).some((e) => e.type === "idunox.job.dead_lettered"),
    );
    expect(await t.redis.sismember(t.keys.pending, jobId)).toBe(0);

    const mine = eventsOf(events, jobId);
    expect(mine.map((e) => e.type.slice("idunox.job.".length))).toEqual([
      "status_changed",
      "status_changed",
      "status_changed",
      "status_changed",
      "status_changed",
      "dead_lettered",
    ]);
    expect(transitions(events, jobId)).toEqual([
      "null>running",
      "running>failed",
      "failed>queued",
      "queued>running",
      "running>dead_letter",
    ]);
    expect(mine.map((e) => Number(e.sequence))).toEqual([1, 2, 3, 4, 5, 6]);
    const dead = mine[5] as CloudEvent<"dead_lettered">;
    expect(dead.data).toMatchObject({
      jobId,
      attempts: 2,
      maxAttempts: 2,
      lastError: "second try failed",
    });
    expect(dead.data.job.status).toBe("dead_letter");

    const alerts = await readAll(t.redis, t.keys.alerts);
    expect(alerts.map((a) => a.event)).toEqual([dead]);
    expect(alerts[0]?.fields["id"]).toBe(dead.id);
  });

  it("keeps polling a failed job with attempts left, and reports its retry through to success", async () => {
    const { jobId } = scriptedJob([
      { status: "running", attempts: 1, maxAttempts: 3 },
      { status: "failed", attempts: 1, maxAttempts: 3, lastError: "flaky" },
      { status: "failed", attempts: 1, maxAttempts: 3, lastError: "flaky" },
      { status: "failed", attempts: 1, maxAttempts: 3, lastError: "flaky" },
      { status: "running", attempts: 2, maxAttempts: 3, lastError: "flaky" },
      { status: "succeeded", attempts: 2, maxAttempts: 3, lastError: "flaky" },
    ]);
    const t = await scope.start();
    await t.redis.sadd(t.keys.pending, jobId);
    const events = await readUntil(t.redis, t.keys.events, reached(jobId, "succeeded"));
    expect(transitions(events, jobId)).toEqual([
      "null>running",
      "running>failed",
      "failed>running",
      "running>succeeded",
    ]);
    // Every scripted answer was asked for: the failed job was polled on, not dropped.
    expect(scope.sim.stats().byJob.get(jobId)).toBe(6);
    expect(eventsOf(events, jobId).map((e) => Number(e.sequence))).toEqual([1, 2, 3, 4]);
    expect(await t.redis.sismember(t.keys.pending, jobId)).toBe(0);
    expect(await t.redis.xlen(t.keys.alerts)).toBe(0);
  });

  it("ignores a stale answer: an older updatedAt with an earlier status changes nothing", async () => {
    const jobId = scope.sim.addJob({ steps: [{ afterMs: 0, status: "succeeded" }] });
    const at = (s: number) => `2026-04-20T09:00:0${s}.000Z`;
    scope.sim.script(
      jobId,
      answers(jobId, [
        { status: "running", updatedAt: at(5) },
        { status: "queued", updatedAt: at(3) },
        { status: "pending", updatedAt: at(1) },
        { status: "running", updatedAt: at(5) },
        { status: "succeeded", updatedAt: at(7) },
      ]),
    );
    const t = await scope.start();
    await t.redis.sadd(t.keys.pending, jobId);
    const events = await readUntil(t.redis, t.keys.events, reached(jobId, "succeeded"));
    expect(transitions(events, jobId)).toEqual(["null>running", "running>succeeded"]);
    expect(eventsOf(events, jobId)).toHaveLength(2);
    expect(scope.sim.stats().byJob.get(jobId)).toBe(5);
  });
});

describe("SLA breaches", () => {
  it("reports a breach flagged by the API once, with detectedBy api", async () => {
    const { jobId } = scriptedJob([
      { status: "running" },
      { status: "running", slaBreached: true },
      { status: "running", slaBreached: true },
      { status: "succeeded", slaBreached: true },
    ]);
    const t = await scope.start();
    await t.redis.sadd(t.keys.pending, jobId);
    const events = await readUntil(t.redis, t.keys.events, reached(jobId, "succeeded"));
    const sla = eventsOf(events, jobId).filter((e) => e.type === "idunox.job.sla_breached");
    expect(sla).toHaveLength(1);
    const breach = sla[0] as CloudEvent<"sla_breached">;
    expect(breach.data).toMatchObject({ jobId, status: "running", detectedBy: "api" });
    expect(breach.sequence).toBe("0000000002");
    const alerts = await readAll(t.redis, t.keys.alerts);
    expect(alerts.map((a) => a.event)).toEqual([breach]);
  });

  it("reports a deadline that passes while the job runs once, with detectedBy deadline", async () => {
    // The API never sets its flag here: only the daemon's own clock can see the breach.
    const deadline = Date.now() + 300;
    const deadlineAt = new Date(deadline).toISOString();
    const running = { status: "running", slaDeadlineAt: deadlineAt, slaBreached: false } as const;
    const { jobId } = scriptedJob([
      ...Array.from({ length: 12 }, () => running),
      { ...running, status: "succeeded" },
    ]);
    const t = await scope.start({ env: { POLLER_MAX_INTERVAL_MS: "100" } });
    await t.redis.sadd(t.keys.pending, jobId);
    const events = await readUntil(t.redis, t.keys.events, reached(jobId, "succeeded"));
    const sla = eventsOf(events, jobId).filter((e) => e.type === "idunox.job.sla_breached");
    expect(sla).toHaveLength(1);
    const breach = sla[0] as CloudEvent<"sla_breached">;
    expect(breach.data).toMatchObject({
      jobId,
      status: "running",
      slaDeadlineAt: deadlineAt,
      detectedBy: "deadline",
    });
    // Seen by the daemon's clock at or after the deadline, never before it.
    expect(Date.parse(breach.time)).toBeGreaterThanOrEqual(deadline);
    expect(transitions(events, jobId)).toEqual(["null>running", "running>succeeded"]);
    const alerts = await readAll(t.redis, t.keys.alerts);
    expect(alerts.map((a) => a.event.id)).toEqual([breach.id]);
  });
});
