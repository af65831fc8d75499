import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { PollOutcome } from "../../../src/api/outcome.js";
import { JOB_STATUSES } from "../../../src/api/schema.js";
import type { AnyCloudEvent } from "../../../src/events/types.js";
import { decide } from "../../../src/poller/decide.js";
import { isFinal } from "../../../src/poller/rules.js";
import {
  decodeState,
  encodeState,
  initialState,
  type JobState,
} from "../../../src/poller/state.js";
import { decideSettings, T0, TEST_JOB_ID } from "../../fixtures/decide.js";
import { jobBody } from "../../fixtures/job.js";

const settings = decideSettings();
const jobId = TEST_JOB_ID;

type Outcome = Exclude<PollOutcome, { kind: "auth" }>;

function run(outcomes: Array<{ outcome: Outcome; now: number }>, state = initialState("e1")) {
  const events: AnyCloudEvent[] = [];
  let removed = false;
  for (const { outcome, now } of outcomes) {
    if (removed) break;
    const d = decide({ jobId, state, outcome, now, random: 0.5, settings });
    expect(d.state.version).toBe(state.version + 1);
    events.push(...d.events);
    state = decodeState(encodeState(d.state));
    removed = d.nextDueAt === null;
  }
  return { events, state, removed };
}

function ok(status: (typeof JOB_STATUSES)[number], updatedAtMs: number, extra = {}): Outcome {
  return {
    kind: "ok",
    job: jobBody({ jobId, status, updatedAt: new Date(updatedAtMs).toISOString(), ...extra }),
  };
}

describe("decide", () => {
  it("reports the first observation as a transition from null", () => {
    const { events } = run([{ outcome: ok("queued", T0), now: T0 }]);
    expect(events.map((e) => e.type)).toEqual(["idunox.job.status_changed"]);
    const e = events[0] as AnyCloudEvent & { type: "idunox.job.status_changed" };
    expect(e.data.previousStatus).toBeNull();
    expect(e.data.status).toBe("queued");
    expect(e.sequence).toBe("0000000001");
    expect(e.subject).toBe(jobId);
  });

  it("emits nothing for an unchanged poll and backs off", () => {
    const first = decide({
      jobId,
      state: initialState("e"),
      outcome: ok("running", T0),
      now: T0,
      random: 0,
      settings,
    });
    const second = decide({
      jobId,
      state: first.state,
      outcome: ok("running", T0),
      now: T0 + 2000,
      random: 0,
      settings,
    });
    expect(second.events).toEqual([]);
    expect(second.state.intervalMs).toBe(4000);
    expect(second.nextDueAt).toBe(T0 + 2000 + 4000);
  });

  it("emits dead_lettered besides status_changed and removes the job", () => {
    const { events, removed } = run([
      { outcome: ok("running", T0), now: T0 },
      {
        outcome: ok("dead_letter", T0 + 10, { attempts: 3, maxAttempts: 3, lastError: "boom" }),
        now: T0 + 10,
      },
    ]);
    expect(events.map((e) => e.type)).toEqual([
      "idunox.job.status_changed",
      "idunox.job.status_changed",
      "idunox.job.dead_lettered",
    ]);
    expect(removed).toBe(true);
  });

  it("keeps polling a failed job with attempts left", () => {
    const { removed, events } = run([
      { outcome: ok("failed", T0, { attempts: 1, maxAttempts: 3 }), now: T0 },
      { outcome: ok("queued", T0 + 5, { attempts: 1, maxAttempts: 3 }), now: T0 + 5 },
    ]);
    expect(removed).toBe(false);
    expect(events.map((e) => (e.data as { status?: string }).status)).toEqual(["failed", "queued"]);
  });

  it("ignores a stale answer", () => {
    const { events, state } = run([
      { outcome: ok("running", T0 + 100), now: T0 },
      { outcome: ok("queued", T0 + 50), now: T0 + 200 },
    ]);
    expect(events).toHaveLength(1);
    expect(state.status).toBe("running");
  });

  it("reports an SLA breach by deadline once, and by API flag", () => {
    const deadline = new Date(T0 + 1000).toISOString();
    const first = decide({
      jobId,
      state: initialState("e"),
      outcome: ok("running", T0, { slaDeadlineAt: deadline }),
      now: T0,
      random: 0,
      settings,
    });
    // Polled no later than the deadline.
    expect(first.nextDueAt).toBe(T0 + 1000);
    const { events } = run([
      { outcome: ok("running", T0, { slaDeadlineAt: deadline }), now: T0 + 1000 },
      {
        outcome: ok("running", T0, { slaDeadlineAt: deadline, slaBreached: true }),
        now: T0 + 3000,
      },
    ]);
    const sla = events.filter((e) => e.type === "idunox.job.sla_breached");
    expect(sla).toHaveLength(1);
    expect((sla[0]?.data as { detectedBy: string } | undefined)?.detectedBy).toBe("deadline");
    const byApi = run([{ outcome: ok("running", T0, { slaBreached: true }), now: T0 }]).events;
    expect(byApi.map((e) => e.type)).toContain("idunox.job.sla_breached");
  });

  it("waits out the 404 grace, then emits not_found and removes the job", () => {
    const inGrace = run([
      { outcome: { kind: "not_found" }, now: T0 },
      { outcome: { kind: "not_found" }, now: T0 + 59_999 },
    ]);
    expect(inGrace.events).toEqual([]);
    expect(inGrace.removed).toBe(false);
    const past = run([
      { outcome: { kind: "not_found" }, now: T0 },
      { outcome: { kind: "not_found" }, now: T0 + 60_000 },
    ]);
    expect(past.events.map((e) => e.type)).toEqual(["idunox.job.not_found"]);
    expect((past.events[0]?.data as { firstNotFoundAt: string } | undefined)?.firstNotFoundAt).toBe(
      new Date(T0).toISOString(),
    );
    expect(past.removed).toBe(true);
  });

  it("a job that appears within the grace is tracked normally", () => {
    const { events, state } = run([
      { outcome: { kind: "not_found" }, now: T0 },
      { outcome: ok("queued", T0 + 5), now: T0 + 5000 },
    ]);
    expect(events.map((e) => e.type)).toEqual(["idunox.job.status_changed"]);
    expect(state.firstNotFoundAtMs).toBeNull();
  });

  it("emits poll_failed once per streak of failures, with no body values", () => {
    const fail: Outcome = { kind: "invalid", reason: "schema: status: invalid_value" };
    const { events } = run([
      { outcome: fail, now: T0 },
      { outcome: fail, now: T0 + 1 },
      { outcome: fail, now: T0 + 2 },
      { outcome: fail, now: T0 + 3 },
      { outcome: ok("running", T0), now: T0 + 4 },
      { outcome: fail, now: T0 + 5 },
      { outcome: fail, now: T0 + 6 },
      { outcome: fail, now: T0 + 7 },
    ]);
    const failed = events.filter((e) => e.type === "idunox.job.poll_failed");
    expect(failed).toHaveLength(2);
    expect(failed[0]?.data).toEqual({
      jobId,
      consecutiveFailures: 3,
      reason: "schema: status: invalid_value",
    });
  });

  it("obeys Retry-After when rescheduling", () => {
    const d = decide({
      jobId,
      state: initialState("e"),
      outcome: { kind: "transient", reason: "429", retryAfterMs: 120_000 },
      now: T0,
      random: 0,
      settings,
    });
    expect(d.nextDueAt).toBe(T0 + 120_000);
  });

  it("gives the same ids to the same logical events", () => {
    const a = run([{ outcome: ok("queued", T0), now: T0 }]).events;
    const b = run([{ outcome: ok("queued", T0), now: T0 + 999 }]).events;
    expect(a[0]?.id).toBe(b[0]?.id);
    const other = run([{ outcome: ok("queued", T0), now: T0 }], initialState("e2")).events;
    expect(other[0]?.id).not.toBe(a[0]?.id);
  });

  it("holds its invariants for any sequence of outcomes", () => {
    const statusArb = fc.constantFrom(...JOB_STATUSES);
    const outcomeArb: fc.Arbitrary<{ outcome: Outcome; dt: number }> = fc.record({
      dt: fc.integer({ min: 0, max: 120_000 }),
      outcome: fc.oneof(
        fc
          .record({
            kind: fc.constant("ok" as const),
            status: statusArb,
            age: fc.integer({ min: -5000, max: 5000 }),
            attempts: fc.integer({ min: 0, max: 4 }),
            slaBreached: fc.boolean(),
          })
          .map(({ status, age, attempts, slaBreached }) =>
            ok(status, T0 + age, { attempts, maxAttempts: 3, slaBreached }),
          ),
        fc.constant({ kind: "not_found" as const }),
        fc.constant({ kind: "invalid" as const, reason: "bad" }),
        fc.constant({ kind: "transient" as const, reason: "503" }),
      ),
    });
    fc.assert(
      fc.property(fc.array(outcomeArb, { maxLength: 40 }), (steps) => {
        let now = T0;
        let state: JobState = initialState("p");
        const events: AnyCloudEvent[] = [];
        let lastUpdated = -Infinity;
        for (const { outcome, dt } of steps) {
          now += dt;
          const d = decide({ jobId, state, outcome, now, random: 0.3, settings });
          events.push(...d.events);
          if (outcome.kind === "ok" && d.verdict !== "stale") {
            const u = Date.parse(outcome.job.updatedAt);
            expect(u).toBeGreaterThanOrEqual(lastUpdated);
            lastUpdated = u;
          }
          if (d.nextDueAt === null) {
            // Removed only when final or proven missing.
            const final = outcome.kind === "ok" && isFinal(outcome.job);
            expect(final || outcome.kind === "not_found").toBe(true);
            break;
          }
          expect(d.nextDueAt).toBeGreaterThan(now);
          state = d.state;
        }
        // Sequence has no gaps; ids are unique.
        for (const [i, e] of events.entries())
          expect(e.sequence).toBe(String(i + 1).padStart(10, "0"));
        expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
        // Each status_changed really changes the status, chaining previous -> status.
        let prev: string | null = null;
        for (const e of events) {
          if (e.type === "idunox.job.status_changed") {
            expect(e.data.previousStatus).toBe(prev);
            expect(e.data.status).not.toBe(prev);
            prev = e.data.status;
          }
          if (e.type === "idunox.job.dead_lettered") expect(prev).toBe("dead_letter");
        }
        expect(
          events.filter((e) => e.type === "idunox.job.sla_breached").length,
        ).toBeLessThanOrEqual(1);
      }),
      { numRuns: 300 },
    );
  });
});

describe("state encoding", () => {
  it("round-trips and starts with the version", () => {
    const s: JobState = {
      ...initialState("abc"),
      version: 7,
      status: "running",
      sequence: 4,
      updatedAtMs: T0,
      slaDeadlineMs: T0 + 1,
      slaReported: true,
    };
    const raw = encodeState(s);
    expect(raw.startsWith("7|")).toBe(true);
    expect(decodeState(raw)).toEqual(s);
  });
});

describe("a finished job added again", () => {
  it("leaves quietly on a 404 instead of raising not_found", () => {
    const state = {
      ...initialState("e"),
      version: 3,
      sequence: 2,
      status: "succeeded" as const,
      final: true,
    };
    const d = decide({
      jobId,
      state,
      outcome: { kind: "not_found" },
      now: T0,
      random: 0,
      settings,
    });
    expect(d.events).toEqual([]);
    expect(d.nextDueAt).toBeNull();
  });
});
