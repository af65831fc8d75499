import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { JobStatus } from "../../src/api/schema.js";
import type { CloudEvent } from "../../src/events/types.js";
import { jobBody } from "../fixtures/job.js";
import { answers, eventsOf, reached, simulatorPerTest, transitions } from "../helpers/daemon.js";
import { checkExactlyOnce } from "../helpers/invariants.js";
import { readAll, readUntil } from "../helpers/streams.js";

/**
 * CONTRACT §2 under a misbehaving API: transient failures are retried and never cost an event
 * or duplicate one; invalid answers emit no transition and, after a streak, one poll_failed.
 */

const scope = simulatorPerTest(13);

// A request timeout well under the hang below, and under half the smallest lease.
const FAULT_ENV = { POLLER_REQUEST_TIMEOUT_MS: "200", POLLER_LEASE_MS: "1000" };

describe("transient failures", () => {
  it("rides out 429 with Retry-After, 5xx, a hang and connection resets, with each event once", async () => {
    const jobId = scope.sim.addJob({ steps: [{ afterMs: 0, status: "succeeded" }] });
    const [queued, running, succeeded] = answers(jobId, [
      { status: "queued", startedAt: null },
      { status: "running" },
      { status: "succeeded" },
    ]);
    scope.sim.script(jobId, [
      { status: 429, body: { error: "rate_limited" }, headers: { "retry-after": "1" } },
      { status: 500, body: { error: "boom" } },
      { status: 503, body: { error: "unavailable" } },
      queued!,
      { status: 200, reset: true },
      // Answers long after the request timeout: the client must give up and try again.
      { ...running!, delayMs: 5_000 },
      { status: 502, body: "<html>bad gateway</html>" },
      running!,
      { status: 200, reset: true },
      succeeded!,
    ]);
    const t = await scope.start({ env: FAULT_ENV });
    await t.redis.sadd(t.keys.pending, jobId);
    const events = await readUntil(t.redis, t.keys.events, reached(jobId, "succeeded"));

    expect(transitions(events, jobId)).toEqual([
      "null>queued",
      "queued>running",
      "running>succeeded",
    ]);
    const mine = eventsOf(events, jobId);
    expect(mine.map((e) => e.sequence)).toEqual(["0000000001", "0000000002", "0000000003"]);
    expect(new Set(mine.map((e) => e.id)).size).toBe(3);
    // Every scripted answer was consumed in order (one per attempt), and nothing after the end.
    expect(scope.sim.stats().byJob.get(jobId)).toBe(10);
    expect(await t.redis.sismember(t.keys.pending, jobId)).toBe(0);
    expect(await t.redis.xlen(t.keys.alerts)).toBe(0);
    const failures = t.logs.filter((l) => l["jobId"] === jobId && l["msg"] === "jobs api attempt");
    expect(failures.map((l) => l["status"])).toEqual(expect.arrayContaining([429, 500, 503, 502]));
    expect(failures.some((l) => l["reason"] === "timeout")).toBe(true);
  });

  it("keeps exactly-once over real lifecycles with random faults on every job", async () => {
    const finals = new Map<string, JobStatus>();
    for (let i = 0; i < 6; i++) {
      const deadLetter = i % 3 === 0;
      const jobId = scope.sim.addJob({
        maxAttempts: 2,
        steps: [
          { afterMs: 0, status: "queued" },
          { afterMs: 150 + i * 20, status: "running" },
          { afterMs: 450 + i * 20, status: deadLetter ? "dead_letter" : "succeeded" },
        ],
      });
      finals.set(jobId, deadLetter ? "dead_letter" : "succeeded");
    }
    scope.sim.setFaults({
      error5xx: 0.15,
      status5xx: 500,
      rateLimit: 0.03,
      retryAfterS: 1,
      reset: 0.1,
      hang: 0.05,
      malformed: 0.05,
      schemaBreak: 0.05,
      wrongJobId: 0.05,
    });
    const t = await scope.start({ env: { ...FAULT_ENV, POLLER_FAILURE_ALERT_AFTER: "3" } });
    await t.redis.sadd(t.keys.pending, ...finals.keys());
    await readUntil(t.redis, t.keys.events, (ev) =>
      [...finals].every(([jobId, status]) => reached(jobId, status)(ev)),
    );
    const events = await readAll(t.redis, t.keys.events);
    const alerts = await readAll(t.redis, t.keys.alerts);
    const report = checkExactlyOnce({
      events: events.map((e) => e.event),
      alerts: alerts.map((e) => e.event),
      finals,
      pending: await t.redis.smembers(t.keys.pending),
    });
    expect(report.problems).toEqual([]);
    expect(report.finished).toBe(finals.size);
    expect(await t.redis.scard(t.keys.pending)).toBe(0);
    // The faults did happen: some attempts failed.
    expect(
      t.logs.filter((l) => l["msg"] === "jobs api attempt" && l["level"] === 40).length,
    ).toBeGreaterThan(0);
  });
});

describe("invalid answers", () => {
  it("emits no transition from a broken answer, and one poll_failed without body values", async () => {
    const SECRET = `SENTINEL-${randomUUID()}`;
    const jobId = scope.sim.addJob({ steps: [{ afterMs: 0, status: "succeeded" }] });
    const broken = (over: Record<string, unknown>) => ({
      status: 200,
      body: { ...jobBody({ jobId, partnerSubjectId: SECRET, lastError: SECRET }), ...over },
    });
    scope.sim.script(jobId, [
      { status: 200, body: `{"jobId":"${jobId}","status":"${SECRET}` },
      broken({ status: SECRET }),
      broken({ jobId: randomUUID(), status: "succeeded" }),
      broken({ attempts: -1, typeLabel: SECRET }),
      ...answers(jobId, [{ status: "running" }, { status: "running" }, { status: "succeeded" }]),
    ]);
    const t = await scope.start({ env: { POLLER_FAILURE_ALERT_AFTER: "3" } });
    await t.redis.sadd(t.keys.pending, jobId);
    const events = await readUntil(t.redis, t.keys.events, reached(jobId, "succeeded"));

    const mine = eventsOf(events, jobId);
    expect(mine.map((e) => e.type)).toEqual([
      "idunox.job.poll_failed",
      "idunox.job.status_changed",
      "idunox.job.status_changed",
    ]);
    expect(transitions(events, jobId)).toEqual(["null>running", "running>succeeded"]);
    const failed = mine[0] as CloudEvent<"poll_failed">;
    expect(Object.keys(failed.data).sort()).toEqual(["consecutiveFailures", "jobId", "reason"]);
    expect(failed.data.consecutiveFailures).toBe(3);
    expect(failed.data.reason).not.toBe("");
    expect(failed.data.reason).not.toContain(SECRET);
    expect(failed.data.reason).not.toContain("succeeded");
    expect(mine.map((e) => Number(e.sequence))).toEqual([1, 2, 3]);
    // The fourth broken answer continued the streak without a second alert; polling went on.
    expect(scope.sim.stats().byJob.get(jobId)).toBe(7);
    const alerts = await readAll(t.redis, t.keys.alerts);
    expect(alerts.map((a) => a.event)).toEqual([failed]);

    // The schema issues are logged, the values never.
    const invalid = t.logs.filter((l) => l["msg"] === "invalid API response");
    expect(invalid.length).toBe(4);
    expect(JSON.stringify(t.logs)).not.toContain(SECRET);
  });
});
