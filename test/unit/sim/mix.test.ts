import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { JOB_TYPES, jobSchema } from "../../../src/api/schema.js";
import { createSimJob, isFinal, jobAt } from "../../../src/sim/lifecycle.js";
import { logNormalMs, PIPELINE_TIMINGS, pipelineSpec } from "../../../src/sim/mix.js";
import { createRng } from "../../../src/sim/random.js";

const T0 = Date.UTC(2026, 3, 20, 9, 0, 0);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

describe("pipeline mix", () => {
  it("is reproducible from its seed", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), (seed) => {
        const a = createRng(seed);
        const b = createRng(seed);
        for (let i = 0; i < 20; i++) expect(pipelineSpec(a)).toEqual(pipelineSpec(b));
      }),
      { numRuns: 50 },
    );
  });

  it("draws each type's queue and run times from its own log-normal", () => {
    const rng = createRng(42);
    for (const type of JOB_TYPES) {
      const queue: number[] = [];
      const run: number[] = [];
      for (let i = 0; i < 3000; i++) {
        const spec = pipelineSpec(rng, type);
        const [, queued, running, next] = spec.steps;
        if (running?.status !== "running" || queued === undefined || next === undefined) continue;
        queue.push(running.afterMs - queued.afterMs);
        run.push(next.afterMs - running.afterMs);
      }
      const t = PIPELINE_TIMINGS[type];
      // 2,800 draws: the sample median is within a few percent of the true one.
      expect(median(queue) / t.queue.medianMs).toBeGreaterThan(0.9);
      expect(median(queue) / t.queue.medianMs).toBeLessThan(1.1);
      expect(median(run) / t.run.medianMs).toBeGreaterThan(0.9);
      expect(median(run) / t.run.medianMs).toBeLessThan(1.1);
    }
    expect(PIPELINE_TIMINGS["pipeline.ingest_validate"].run.medianMs).toBeLessThan(
      PIPELINE_TIMINGS["pipeline.run_inference"].run.medianMs,
    );
  });

  it("has a heavy tail where it says so", () => {
    const rng = createRng(3);
    const draws = Array.from({ length: 20_000 }, () =>
      logNormalMs(rng, PIPELINE_TIMINGS["pipeline.run_inference"].run),
    ).sort((a, b) => a - b);
    const p99 = draws[Math.floor(0.99 * draws.length)] as number;
    // sigma 0.9: p99 = median * e^(2.33 * 0.9), about 8x the median.
    expect(p99 / median(draws)).toBeGreaterThan(6);
  });

  it("serves valid bodies that end in a final state, in lifecycle order", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), (seed) => {
        const rng = createRng(seed);
        const job = createSimJob(pipelineSpec(rng), rng, T0, () => rng.uuid());
        let last = -1;
        for (const step of job.steps) {
          expect(step.afterMs).toBeGreaterThan(last);
          last = step.afterMs;
          const body = jobAt(job, T0 + step.afterMs);
          expect(jobSchema.safeParse(body).success).toBe(true);
          expect(body?.status).toBe(step.status);
          // The ground truth the economy bench measures against: updatedAt is the change.
          expect(body?.updatedAt).toBe(new Date(T0 + step.afterMs).toISOString());
        }
        const end = jobAt(job, T0 + last);
        expect(end && isFinal(end.status, end.attempts, end.maxAttempts)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});
