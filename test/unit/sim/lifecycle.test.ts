import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Job, jobSchema } from "../../../src/api/schema.js";
import {
  createSimJob,
  isFinal,
  jobAt,
  randomSpec,
  type SimJob,
  type SimJobSpec,
} from "../../../src/sim/lifecycle.js";
import { createRng } from "../../../src/sim/random.js";

const T0 = Date.UTC(2026, 3, 20, 9, 0, 0);
const ms = (iso: string | null) => (iso === null ? null : Date.parse(iso));

function make(spec: SimJobSpec, seed = 1): SimJob {
  const rng = createRng(seed);
  return createSimJob(spec, rng, T0, () => rng.uuid());
}

function at(job: SimJob, offset: number): Job {
  const body = jobAt(job, T0 + offset);
  if (body === null) throw new Error("job not visible");
  return body;
}

/** Invariants every served body must keep, whatever the lifecycle and the instant. */
function checkBody(job: SimJob, offset: number, body: Job): void {
  expect(jobSchema.safeParse(body).success).toBe(true);
  const reached = job.steps.filter((s) => s.afterMs <= offset);
  const last = reached[reached.length - 1]!;
  expect(body.status).toBe(last.status);
  expect(ms(body.updatedAt)).toBe(T0 + last.afterMs);
  expect(body.jobId).toBe(job.jobId);

  const chain = [body.createdAt, body.queuedAt, body.startedAt, body.completedAt, body.updatedAt]
    .map(ms)
    .filter((t): t is number => t !== null);
  expect(chain).toEqual([...chain].sort((a, b) => a - b));

  const final = isFinal(body.status, body.attempts, body.maxAttempts);
  expect(body.completedAt !== null).toBe(final);
  if (body.status === "dead_letter") {
    expect(body.attempts).toBe(body.maxAttempts);
    expect(body.lastError).not.toBeNull();
  }
  if (body.status === "failed") expect(body.failedAt).not.toBeNull();
  if (
    body.completedAt !== null &&
    body.slaDeadlineAt !== null &&
    ms(body.completedAt)! <= ms(body.slaDeadlineAt)!
  ) {
    expect(body.slaBreached).toBe(false);
  }
}

describe("random lifecycles", () => {
  it("serve schema-valid, consistent bodies at every instant (property)", () => {
    fc.assert(
      fc.property(
        fc.integer(),
        fc.array(fc.integer({ min: 0, max: 120_000 }), { minLength: 1, maxLength: 12 }),
        (seed, rawOffsets) => {
          const job = make({}, seed);
          const offsets = [...rawOffsets].sort((a, b) => a - b);
          let previous: Job | undefined;
          for (const offset of offsets) {
            const body = at(job, offset);
            checkBody(job, offset, body);
            if (previous !== undefined) {
              // Time only moves a job forward.
              expect(ms(body.updatedAt)!).toBeGreaterThanOrEqual(ms(previous.updatedAt)!);
              if (previous.slaBreached) expect(body.slaBreached).toBe(true);
              if (previous.completedAt !== null) expect(body).toEqual(previous);
            }
            previous = body;
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("mixes the outcomes the demo and the chaos tests rely on", () => {
    const rng = createRng(2026);
    const seen = new Set<string>();
    for (let i = 0; i < 1_000; i++) {
      const job = createSimJob({}, rng, T0, () => rng.uuid());
      const end = at(job, 10 * 60_000);
      const statuses = job.steps.map((s) => s.status);
      seen.add(end.status === "failed" ? "failed_final" : end.status);
      if (statuses.includes("failed") && end.status === "succeeded") seen.add("retried");
      if (end.slaBreached) seen.add("sla_breached");
      if (job.steps[job.steps.length - 1]!.afterMs < 1_000) seen.add("early");
      if (end.status === "succeeded") {
        const total = job.steps[job.steps.length - 1]!.afterMs;
        if (total >= 2_000 && total <= 30_000) seen.add("normal");
      }
    }
    expect([...seen].sort()).toEqual(
      [
        "cancelled",
        "dead_letter",
        "early",
        "failed_final",
        "normal",
        "retried",
        "sla_breached",
        "succeeded",
      ].sort(),
    );
  });

  it("is deterministic for a seed", () => {
    const a = createRng(5);
    const b = createRng(5);
    const jobsA = Array.from({ length: 20 }, () => createSimJob({}, a, T0, () => a.uuid()));
    const jobsB = Array.from({ length: 20 }, () => createSimJob({}, b, T0, () => b.uuid()));
    expect(jobsA).toEqual(jobsB);
    expect(randomSpec(createRng(9))).toEqual(randomSpec(createRng(9)));
  });

  it("keeps the spec's own fields over the drawn lifecycle", () => {
    const job = make({
      jobId: "AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAAA",
      type: "pipeline.deidentify",
      maxAttempts: 7,
    });
    expect(job.jobId).toBe("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa");
    expect(job.type).toBe("pipeline.deidentify");
    expect(job.maxAttempts).toBe(7);
  });
});

describe("scripted lifecycles", () => {
  it("retries a failed attempt, then succeeds, with timestamps from the steps", () => {
    const job = make({
      maxAttempts: 3,
      lastError: "model server returned 503",
      slaDeadlineInMs: 60_000,
      steps: [
        { afterMs: 1_000, status: "queued" },
        { afterMs: 2_000, status: "running" },
        { afterMs: 3_000, status: "failed" },
        { afterMs: 4_000, status: "queued" },
        { afterMs: 5_000, status: "running" },
        { afterMs: 9_000, status: "succeeded" },
      ],
    });
    expect(at(job, 0)).toMatchObject({
      status: "pending",
      attempts: 0,
      queuedAt: null,
      lastError: null,
      errorDetail: null,
    });
    expect(at(job, 3_500)).toMatchObject({
      status: "failed",
      attempts: 1,
      lastError: "model server returned 503",
      failedAt: new Date(T0 + 3_000).toISOString(),
      completedAt: null,
    });
    const done = at(job, 9_000);
    expect(done).toMatchObject({
      status: "succeeded",
      attempts: 2,
      queuedAt: new Date(T0 + 1_000).toISOString(),
      startedAt: new Date(T0 + 2_000).toISOString(),
      completedAt: new Date(T0 + 9_000).toISOString(),
      updatedAt: new Date(T0 + 9_000).toISOString(),
      processingDurationMs: 7_000,
      slaBreached: false,
    });
    checkBody(job, 9_000, done);
  });

  it("ends in dead_letter with every attempt used and an error", () => {
    const job = make({
      maxAttempts: 2,
      steps: [
        { afterMs: 100, status: "running" },
        { afterMs: 200, status: "failed" },
        { afterMs: 300, status: "running" },
        { afterMs: 400, status: "dead_letter" },
      ],
    });
    const body = at(job, 1_000);
    expect(body).toMatchObject({ status: "dead_letter", attempts: 2, maxAttempts: 2 });
    expect(body.lastError).toEqual(expect.any(String));
    expect(body.errorDetail).not.toBeNull();
  });

  it("treats failed with no attempts left as final", () => {
    const job = make({
      maxAttempts: 1,
      steps: [
        { afterMs: 10, status: "running" },
        { afterMs: 20, status: "failed" },
      ],
    });
    expect(at(job, 20).completedAt).toBe(new Date(T0 + 20).toISOString());
  });

  it("breaches the SLA once the deadline passes while running, and never un-breaches", () => {
    const job = make({
      slaDeadlineInMs: 5_000,
      steps: [
        { afterMs: 1_000, status: "running" },
        { afterMs: 8_000, status: "succeeded" },
      ],
    });
    expect(at(job, 4_999).slaBreached).toBe(false);
    expect(at(job, 5_000).slaBreached).toBe(true);
    // The flag changes without a step, so updatedAt stays at the latest step.
    expect(at(job, 5_000).updatedAt).toBe(new Date(T0 + 1_000).toISOString());
    expect(at(job, 60_000)).toMatchObject({ status: "succeeded", slaBreached: true });
  });

  it("does not breach when the job finished before its deadline", () => {
    const job = make({ slaDeadlineInMs: 5_000, steps: [{ afterMs: 4_000, status: "succeeded" }] });
    expect(at(job, 60_000).slaBreached).toBe(false);
  });

  it("never flags a passed deadline when flagsDeadlineBreach is false, but still a step's flag", () => {
    const job = make({
      slaDeadlineInMs: 5_000,
      flagsDeadlineBreach: false,
      steps: [
        { afterMs: 1_000, status: "running" },
        { afterMs: 9_000, status: "running", slaBreached: true },
      ],
    });
    expect(at(job, 8_999)).toMatchObject({ slaBreached: false });
    expect(at(job, 8_999).slaDeadlineAt).toBe(new Date(T0 + 5_000).toISOString());
    expect(at(job, 9_000).slaBreached).toBe(true);
  });

  it("reports a breach a step declares, without a deadline", () => {
    const job = make({ steps: [{ afterMs: 0, status: "running", slaBreached: true }] });
    expect(at(job, 0)).toMatchObject({ slaBreached: true, slaDeadlineAt: null });
  });

  it("is invisible until visibleAfterMs", () => {
    const job = make({ visibleAfterMs: 3_000 });
    expect(jobAt(job, T0 + 2_999)).toBeNull();
    expect(jobAt(job, T0 + 3_000)).not.toBeNull();
  });

  it("honours explicit attempts, lastError and errorDetail", () => {
    const job = make({
      errorDetail: { code: "X" },
      partnerSubjectId: null,
      steps: [{ afterMs: 0, status: "running", attempts: 4, lastError: "earlier failure" }],
    });
    expect(at(job, 0)).toMatchObject({
      attempts: 4,
      lastError: "earlier failure",
      errorDetail: { code: "X" },
      partnerSubjectId: null,
    });
  });
});
