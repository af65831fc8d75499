import { JOB_TYPES, type JobStatus, type JobType } from "../api/schema.js";
import type { SimJobSpec, SimStep } from "./lifecycle.js";
import type { Rng } from "./random.js";

/**
 * The pipeline mix: each step type has its own log-normal queue time (queued until running) and
 * run time (running until the next status), so that a schedule which learns per type has
 * something to learn. Invented but plausible: validation and webhooks are quick, FHIR mapping
 * and upserts take seconds, inference is slow with a heavy tail (a model server queue), and
 * webhook delivery has a heavy tail of its own (partners' endpoints). A log-normal with median
 * m and sigma s has p90 = m * e^(1.28 s) and p99 = m * e^(2.33 s).
 */
export interface PhaseTiming {
  medianMs: number;
  sigma: number;
}

export const PIPELINE_TIMINGS: Readonly<Record<JobType, { queue: PhaseTiming; run: PhaseTiming }>> =
  {
    "pipeline.ingest_validate": {
      queue: { medianMs: 300, sigma: 0.5 },
      run: { medianMs: 800, sigma: 0.4 },
    },
    "pipeline.deidentify": {
      queue: { medianMs: 500, sigma: 0.6 },
      run: { medianMs: 2000, sigma: 0.5 },
    },
    "pipeline.map_to_fhir": {
      queue: { medianMs: 500, sigma: 0.6 },
      run: { medianMs: 3000, sigma: 0.5 },
    },
    "pipeline.fhir_store_upsert": {
      queue: { medianMs: 800, sigma: 0.7 },
      run: { medianMs: 1500, sigma: 0.6 },
    },
    "pipeline.run_inference": {
      queue: { medianMs: 2000, sigma: 0.8 },
      run: { medianMs: 8000, sigma: 0.9 },
    },
    "pipeline.write_artifacts": {
      queue: { medianMs: 400, sigma: 0.5 },
      run: { medianMs: 1200, sigma: 0.5 },
    },
    "pipeline.dispatch_webhooks": {
      queue: { medianMs: 300, sigma: 0.5 },
      run: { medianMs: 600, sigma: 1.0 },
    },
  };

/** Time from creation (pending) until the job is queued: the submission being accepted. */
const ACCEPT: PhaseTiming = { medianMs: 150, sigma: 0.5 };

/** A log-normal draw (Box-Muller on the seeded sequence), in whole ms, at least 1. */
export function logNormalMs(rng: Rng, t: PhaseTiming): number {
  const u = 1 - rng.next();
  const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
  return Math.max(1, Math.round(t.medianMs * Math.exp(t.sigma * z)));
}

/**
 * One job of the pipeline mix. Out of 100: 92 succeed on the first attempt, 4 fail once and
 * succeed on the retry, 2 are cancelled while queued, 2 exhaust two attempts (dead_letter).
 * Every phase, retries included, draws from its type's timings; a deadline is set well after
 * the expected end, so the schedules compared are not shortened by SLA polls.
 */
export function pipelineSpec(
  rng: Rng,
  type: JobType = rng.pick(JOB_TYPES),
): SimJobSpec & { type: JobType; steps: SimStep[] } {
  const timing = PIPELINE_TIMINGS[type];
  const roll = rng.int(1, 100);
  const statuses: JobStatus[] =
    roll <= 92
      ? ["queued", "running", "succeeded"]
      : roll <= 96
        ? ["queued", "running", "failed", "queued", "running", "succeeded"]
        : roll <= 98
          ? ["queued", "cancelled"]
          : ["queued", "running", "failed", "queued", "running", "dead_letter"];
  const steps: SimStep[] = [{ afterMs: 0, status: "pending" }];
  let at = 0;
  let previous: JobStatus = "pending";
  for (const status of statuses) {
    const phase =
      previous === "pending" ? ACCEPT : previous === "queued" ? timing.queue : timing.run;
    // A failed job is queued again at once (the pipeline's retry), like a short accept.
    at += previous === "failed" ? logNormalMs(rng, ACCEPT) : logNormalMs(rng, phase);
    steps.push({ afterMs: at, status });
    previous = status;
  }
  return {
    type,
    steps,
    maxAttempts: 2,
    lastError: roll > 92 && roll <= 96 ? "model server returned 503" : null,
    slaDeadlineInMs: rng.chance(0.5) ? at + rng.int(30_000, 120_000) : null,
  };
}
