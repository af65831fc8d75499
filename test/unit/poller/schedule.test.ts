import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { PollOutcome } from "../../../src/api/outcome.js";
import { JOB_STATUSES, JOB_TYPES, type Job } from "../../../src/api/schema.js";
import { type DecideSettings, decide } from "../../../src/poller/decide.js";
import {
  BUCKETS,
  bucketOf,
  type DurationHistogram,
  DurationSnapshot,
  distributionKey,
  emptyHistogram,
  MIN_SAMPLES,
  mergeSamples,
  PhaseDistribution,
} from "../../../src/poller/durations.js";
import {
  choosePredictive,
  explainSchedule,
  phaseOf,
  phaseSamples,
  phaseStartOf,
  pollWorthMs,
  predictiveInterval,
} from "../../../src/poller/schedule.js";
import { initialState, type JobState } from "../../../src/poller/state.js";
import { jobBody } from "../../fixtures/job.js";

const T0 = Date.parse("2026-04-20T09:00:00.000Z");
const jobId = "3c90c3cc-0d44-4b50-8888-8dd25736052a";
const iso = (ms: number) => new Date(ms).toISOString();

const settingsArb = fc
  .record({
    minIntervalMs: fc.integer({ min: 10, max: 20_000 }),
    spread: fc.integer({ min: 0, max: 200_000 }),
    backoffFactor: fc.double({ min: 1, max: 10, noNaN: true }),
    jitter: fc.double({ min: 0, max: 1, noNaN: true }),
  })
  .map(
    ({ minIntervalMs, spread, backoffFactor, jitter }): DecideSettings => ({
      minIntervalMs,
      maxIntervalMs: minIntervalMs + spread,
      backoffFactor,
      jitter,
      notFoundGraceMs: 60_000,
      failureAlertAfter: 3,
      eventSource: "urn:test",
    }),
  );

const weightsArb = (maxWeight: number) =>
  fc.array(fc.double({ min: 0, max: maxWeight, noNaN: true }), {
    minLength: BUCKETS,
    maxLength: BUCKETS,
  });

/** Any learned history for every type and phase: dense, sparse or a single spike. */
const historyArb = fc
  .oneof(
    weightsArb(50),
    fc
      .tuple(fc.integer({ min: 0, max: BUCKETS - 1 }), fc.double({ min: 0, max: 600, noNaN: true }))
      .map(([i, w]) => Array.from({ length: BUCKETS }, (_, j) => (j === i ? w : 0))),
  )
  .map((weights): DurationHistogram => ({ weights, samples: 100, updatedAtMs: T0 }));

function snapshotOf(h: DurationHistogram): DurationSnapshot {
  const map = new Map<string, DurationHistogram>();
  for (const type of JOB_TYPES) {
    map.set(distributionKey(type, "queue"), h);
    map.set(distributionKey(type, "run"), h);
  }
  return new DurationSnapshot(map);
}

const offset = fc.integer({ min: 0, max: 10_000_000 });
const jobArb = fc
  .record({
    status: fc.constantFrom(...JOB_STATUSES),
    type: fc.constantFrom(...JOB_TYPES),
    attempts: fc.integer({ min: 0, max: 3 }),
    queuedAgo: fc.option(offset),
    startedAgo: fc.option(offset),
    updatedAgo: offset,
    sla: fc.option(fc.integer({ min: -1_000_000, max: 10_000_000 })),
    slaBreached: fc.boolean(),
  })
  .map(
    (j): Job =>
      jobBody({
        jobId,
        status: j.status,
        type: j.type,
        attempts: j.attempts,
        maxAttempts: 3,
        queuedAt: j.queuedAgo === null ? null : iso(T0 - j.queuedAgo),
        startedAt: j.startedAgo === null ? null : iso(T0 - j.startedAgo),
        updatedAt: iso(T0 - j.updatedAgo),
        slaDeadlineAt: j.sla === null ? null : iso(T0 + j.sla),
        slaBreached: j.slaBreached,
      }),
  );

const stateArb = fc.oneof(
  fc.constant(initialState("e1")),
  fc
    .record({
      status: fc.constantFrom(...JOB_STATUSES),
      intervalMs: fc.option(fc.integer({ min: 1, max: 300_000 })),
      phaseStartMs: fc.option(fc.integer({ min: T0 - 10_000_000, max: T0 })),
    })
    .map(
      (s): JobState => ({
        ...initialState("e1"),
        version: 3,
        sequence: 2,
        status: s.status,
        // Older than any generated updatedAt, so no response is stale.
        updatedAtMs: T0 - 20_000_000,
        intervalMs: s.intervalMs,
        phaseStartMs: s.phaseStartMs,
      }),
    ),
);

type Outcome = Exclude<PollOutcome, { kind: "auth" }>;

describe("predictive schedule: the hard rules hold for any history and any job", () => {
  it("keeps every poll within [min, max] of the last, and never after a future SLA deadline", () => {
    fc.assert(
      fc.property(
        settingsArb,
        historyArb,
        jobArb,
        stateArb,
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (settings, history, job, state, random) => {
          const d = decide({
            jobId,
            state,
            outcome: { kind: "ok", job },
            now: T0,
            random,
            settings,
            durations: snapshotOf(history),
          });
          if (d.nextDueAt === null) return;
          const delay = d.nextDueAt - T0;
          expect(delay).toBeLessThanOrEqual(settings.maxIntervalMs);
          const deadline = job.slaDeadlineAt === null ? null : Date.parse(job.slaDeadlineAt);
          const deadlineRules = deadline !== null && deadline > T0 && !d.state.slaReported;
          if (deadlineRules) expect(d.nextDueAt).toBeLessThanOrEqual(deadline);
          if (d.scheduledBy === "predictive" && !(deadlineRules && d.nextDueAt === deadline)) {
            expect(delay).toBeGreaterThanOrEqual(settings.minIntervalMs);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it("is exactly the backoff with fewer than MIN_SAMPLES of history", () => {
    fc.assert(
      fc.property(
        settingsArb,
        weightsArb(1),
        // Short of MIN_SAMPLES by more than the rounding of the scaling below.
        fc.double({ min: 0, max: MIN_SAMPLES - 0.01, noNaN: true }),
        jobArb,
        stateArb,
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (settings, raw, total, job, state, random) => {
          const sum = raw.reduce((a, b) => a + b, 0);
          const weights = raw.map((w) => (sum === 0 ? 0 : (w / sum) * total));
          const thin = snapshotOf({ weights, samples: 1000, updatedAtMs: T0 });
          const input = { jobId, state, outcome: { kind: "ok", job } as Outcome, now: T0, random };
          const predictive = decide({ ...input, settings, durations: thin });
          const backoff = decide({ ...input, settings });
          expect(predictive).toEqual(backoff);
          if (predictive.nextDueAt !== null) expect(predictive.scheduledBy).toBe("backoff");
        },
      ),
      { numRuns: 300 },
    );
  });

  it("lets Retry-After win, and leaves failures and 404s to the backoff", () => {
    fc.assert(
      fc.property(
        settingsArb,
        historyArb,
        stateArb,
        fc.oneof(
          fc
            .integer({ min: 0, max: 600_000 })
            .map(
              (retryAfterMs): Outcome => ({ kind: "transient", reason: "http 429", retryAfterMs }),
            ),
          fc.constant<Outcome>({ kind: "invalid", reason: "schema" }),
          fc.constant<Outcome>({ kind: "not_found" }),
        ),
        (settings, history, state, outcome) => {
          const input = { jobId, state, outcome, now: T0, random: 0.3, settings };
          const d = decide({ ...input, durations: snapshotOf(history) });
          expect(d).toEqual(decide(input));
          if (outcome.kind === "transient" && outcome.retryAfterMs !== undefined) {
            expect(d.nextDueAt).toBeGreaterThanOrEqual(T0 + outcome.retryAfterMs);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("POLLER_SCHEDULE=backoff (no snapshot) decides exactly as before", () => {
    fc.assert(
      fc.property(settingsArb, jobArb, stateArb, (settings, job, state) => {
        const input = { jobId, state, outcome: { kind: "ok", job } as Outcome, now: T0 };
        const a = decide({ ...input, random: 0.5, settings, durations: null });
        const b = decide({ ...input, random: 0.5, settings });
        expect(a).toEqual(b);
        if (a.nextDueAt !== null) expect(a.scheduledBy).toBe("backoff");
      }),
    );
  });
});

describe("predictive schedule: where it polls", () => {
  const bounds = { minIntervalMs: 200, maxIntervalMs: 6000 };
  // Durations tightly around 4 s.
  const spikeHistogram = mergeSamples(
    emptyHistogram(),
    Array.from({ length: 200 }, (_, i) => 3800 + i * 2),
    0,
  );
  const spike = new PhaseDistribution(spikeHistogram);

  it("waits long while a change is unlikely and polls densely where it is likely", () => {
    const early = predictiveInterval(spike, 0, bounds);
    const near = predictiveInterval(spike, 3600, bounds);
    expect(early?.intervalMs).toBeGreaterThan(3000);
    expect(near?.intervalMs).toBeLessThan(1500);
    expect(near?.intervalMs).toBeGreaterThanOrEqual(bounds.minIntervalMs);
  });

  it("reaches the worth W with the interval it picks, and no shorter one does", () => {
    fc.assert(
      fc.property(historyArb, fc.integer({ min: 0, max: 1e7 }), (h, age) => {
        const d = new PhaseDistribution(h);
        const pick = predictiveInterval(d, age, bounds);
        if (pick === null || d.total === 0) return;
        const w = pollWorthMs(bounds);
        if (pick.intervalMs < bounds.maxIntervalMs) {
          expect(pick.intervalMs * pick.probability).toBeGreaterThanOrEqual(w - 1e-6);
        }
        if (pick.intervalMs > bounds.minIntervalMs) {
          // One millisecond less would not have been worth a poll.
          const alive = d.survival(age);
          const shorter = (alive - d.survival(age + pick.intervalMs - 1)) / alive;
          expect((pick.intervalMs - 1) * shorter).toBeLessThan(w);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("hands a job older than nearly all history back to the backoff", () => {
    expect(predictiveInterval(spike, 60_000, bounds)).toBeNull();
  });

  it("hands unlearned statuses and unknown types back to the backoff", () => {
    const snap = new DurationSnapshot(
      new Map([[distributionKey("pipeline.run_inference", "run"), spikeHistogram]]),
    );
    const job = { type: "pipeline.run_inference" as const, phaseStartMs: T0 };
    expect(choosePredictive(snap, { ...job, status: "running" }, T0, bounds)).not.toBeNull();
    expect(choosePredictive(snap, { ...job, status: "pending" }, T0, bounds)).toBeNull();
    expect(choosePredictive(snap, { ...job, status: "queued" }, T0, bounds)).toBeNull();
    expect(
      choosePredictive(
        snap,
        { ...job, type: "pipeline.deidentify", status: "running" },
        T0,
        bounds,
      ),
    ).toBeNull();
    expect(explainSchedule(snap, { ...job, status: "running" }, T0, bounds)).toMatch(
      /^predictive: pipeline\.run_inference run for 0\.00 s .*200 samples/,
    );
    expect(
      explainSchedule(snap, { ...job, type: "pipeline.deidentify", status: "queued" }, T0, bounds),
    ).toBe(`backoff: 0 of ${MIN_SAMPLES} samples learned for pipeline.deidentify queue`);
    expect(explainSchedule(null, { ...job, status: "running" }, T0, bounds)).toMatch(/^backoff/);
  });
});

describe("learning from observed changes", () => {
  const at = (s: number) => iso(T0 + s * 1000);

  it("learns both phases from the API's timestamps, once per phase", () => {
    const done = jobBody({
      type: "pipeline.deidentify",
      status: "succeeded",
      attempts: 1,
      queuedAt: at(1),
      startedAt: at(3),
      completedAt: at(10),
      processingDurationMs: null,
      updatedAt: at(10),
    });
    expect(phaseSamples({ status: "queued", phaseStartMs: null }, done)).toEqual([
      { type: "pipeline.deidentify", phase: "queue", ms: 2000 },
      { type: "pipeline.deidentify", phase: "run", ms: 7000 },
    ]);
    // Seen running already: the queue was learned then; only the run is new.
    expect(phaseSamples({ status: "running", phaseStartMs: T0 + 3000 }, done)).toEqual([
      { type: "pipeline.deidentify", phase: "run", ms: 7000 },
    ]);
    expect(phaseSamples({ status: "succeeded", phaseStartMs: null }, done)).toEqual([]);
  });

  it("falls back on the observed phase start where the body lacks a timestamp", () => {
    const running = jobBody({
      status: "running",
      attempts: 1,
      queuedAt: null,
      startedAt: null,
      updatedAt: at(5),
    });
    expect(phaseSamples({ status: "queued", phaseStartMs: T0 + 1000 }, running)).toEqual([
      { type: running.type, phase: "queue", ms: 4000 },
    ]);
  });

  it("does not learn from retries, whose timestamps mix attempts", () => {
    const retried = jobBody({
      status: "succeeded",
      attempts: 2,
      queuedAt: at(0),
      startedAt: at(1),
      completedAt: at(30),
      updatedAt: at(30),
    });
    expect(phaseSamples({ status: "running", phaseStartMs: T0 }, retried)).toEqual([]);
  });

  it("dates the phase from the first-attempt stamp, else from the last update", () => {
    const base = { queuedAt: at(1), startedAt: at(2), updatedAt: at(9) };
    expect(phaseStartOf({ ...base, status: "queued", attempts: 0 })).toBe(T0 + 1000);
    expect(phaseStartOf({ ...base, status: "running", attempts: 1 })).toBe(T0 + 2000);
    expect(phaseStartOf({ ...base, status: "running", attempts: 2 })).toBe(T0 + 9000);
    expect(phaseStartOf({ ...base, status: "pending", attempts: 0 })).toBeNull();
    expect(phaseOf("failed")).toBeNull();
  });

  it("records samples in decide only for changes", () => {
    const job = jobBody({
      jobId,
      status: "running",
      attempts: 1,
      queuedAt: at(0),
      startedAt: at(2),
    });
    const settings = {
      minIntervalMs: 200,
      maxIntervalMs: 6000,
      backoffFactor: 2,
      jitter: 0,
      notFoundGraceMs: 1,
      failureAlertAfter: 1,
      eventSource: "urn:test",
    };
    const first = decide({
      jobId,
      state: { ...initialState("e"), status: "queued" },
      outcome: { kind: "ok", job },
      now: T0 + 3000,
      random: 0,
      settings,
    });
    expect(first.samples).toEqual([{ type: job.type, phase: "queue", ms: 2000 }]);
    expect(first.state.phaseStartMs).toBe(T0 + 2000);
    expect(first.state.type).toBe(job.type);
    const again = decide({
      jobId,
      state: first.state,
      outcome: { kind: "ok", job },
      now: T0 + 4000,
      random: 0,
      settings,
    });
    expect(again.samples).toEqual([]);
    expect(bucketOf(2000)).toBeGreaterThan(0);
  });
});
