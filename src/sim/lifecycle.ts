import { JOB_TYPES, type Job, type JobStatus, type JobType } from "../api/schema.js";
import type { Rng } from "./random.js";

/**
 * The simulated job lifecycle, pure: a job is a creation time plus a list of timed steps, and
 * its API body at any instant is a function of that list and the clock. Nothing here does I/O
 * or reads the real time, so tests drive lifecycles with an injected clock.
 */

export interface SimStep {
  /** Milliseconds after creation at which the job enters this step. */
  afterMs: number;
  status: JobStatus;
  /** Overrides the derived count (each entry into `running` is one attempt). */
  attempts?: number;
  /** `true` makes the API report an SLA breach from this step on. */
  slaBreached?: boolean;
  /** `undefined` keeps the previous value; a failure step without one gets a generic message. */
  lastError?: string | null;
}

export interface SimJobSpec {
  jobId?: string;
  type?: JobType;
  steps?: SimStep[];
  maxAttempts?: number;
  /** Relative to creation; `null` means no deadline. */
  slaDeadlineInMs?: number | null;
  /** The API answers 404 until then (exercises the poller's not_found grace). */
  visibleAfterMs?: number;
  /**
   * Default true. False: the API never raises `slaBreached` because the deadline passed (a step
   * may still raise it), so only the poller's own clock can see that breach.
   */
  flagsDeadlineBreach?: boolean;
  partnerSubjectId?: string | null;
  /** The message reported from the first failure on, unless a step says otherwise. */
  lastError?: string | null;
  /** Served as is when given; otherwise derived from whether the job has failed. */
  errorDetail?: unknown;
}

/** A job as the simulator keeps it: absolute times, steps sorted, every default resolved. */
export interface SimJob {
  jobId: string;
  type: JobType;
  createdAt: number;
  /** Sorted by `afterMs`, the first at 0. */
  steps: SimStep[];
  maxAttempts: number;
  slaDeadlineAt: number | null;
  flagsDeadlineBreach: boolean;
  visibleAt: number;
  submissionId: string;
  partnerSubmissionId: string;
  partnerSubjectId: string | null;
  segment: string | null;
  correlationId: string;
  parentJobId: string | null;
  lastError: string | null;
  errorDetail: unknown;
}

const STATUS_LABELS: Record<JobStatus, string> = {
  pending: "Pending",
  queued: "Queued",
  running: "Running",
  succeeded: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
  dead_letter: "Dead letter",
};

const TYPE_LABELS: Record<JobType, string> = {
  "pipeline.ingest_validate": "Ingest and validate",
  "pipeline.deidentify": "De-identify",
  "pipeline.map_to_fhir": "Map to FHIR",
  "pipeline.fhir_store_upsert": "Upsert into FHIR store",
  "pipeline.run_inference": "Run inference",
  "pipeline.write_artifacts": "Write artifacts",
  "pipeline.dispatch_webhooks": "Dispatch webhooks",
};

const ERRORS = [
  "upstream timeout after 30s",
  "model server returned 503",
  "FHIR store rejected bundle: 422",
  "artifact bucket write denied",
  "validation failed: missing required element",
];

/** The contract's final states: `failed` counts only once the attempts are used up. */
export function isFinal(status: JobStatus, attempts: number, maxAttempts: number): boolean {
  return (
    status === "succeeded" ||
    status === "cancelled" ||
    status === "dead_letter" ||
    (status === "failed" && attempts >= maxAttempts)
  );
}

/**
 * `count` strictly increasing offsets in [first, total], the last one exactly `total`:
 * the moments a job moves through its steps.
 */
function offsets(rng: Rng, count: number, first: number, total: number): number[] {
  const points = Array.from({ length: count - 1 }, () => rng.int(first, total - 1)).sort(
    (a, b) => a - b,
  );
  points.push(total);
  for (let i = 1; i < points.length; i++) {
    points[i] = Math.max(points[i] as number, (points[i - 1] as number) + 1);
  }
  return points;
}

function timed(rng: Rng, statuses: JobStatus[], first: number, total: number): SimStep[] {
  const at = offsets(rng, statuses.length, first, total);
  return [
    { afterMs: 0, status: "pending" },
    ...statuses.map((status, i) => ({ afterMs: at[i] as number, status })),
  ];
}

/** Entries into `running`, each ending in `failed` then `queued` again, `n` times. */
function failedAttempts(n: number): JobStatus[] {
  return Array.from({ length: n }, (): JobStatus[] => ["running", "failed", "queued"]).flat();
}

/**
 * One job of the realistic mix `addRandomJobs` serves. The weights, out of 100: most succeed
 * in 2–20 s; some fail and are retried; some exhaust their attempts (dead_letter, or a final
 * `failed` when only one attempt is allowed); some are cancelled; some run past their SLA
 * deadline; some finish within a second, faster than a poller's first interval.
 */
export function randomSpec(rng: Rng): SimJobSpec & { steps: SimStep[] } {
  const roll = rng.int(1, 100);
  const total = rng.int(2_000, 20_000);
  const relaxedSla = (end: number) => (rng.chance(0.7) ? end + rng.int(5_000, 60_000) : null);
  const error = rng.pick(ERRORS);

  if (roll <= 52) {
    return {
      steps: timed(rng, ["queued", "running", "succeeded"], 100, total),
      slaDeadlineInMs: relaxedSla(total),
    };
  }
  if (roll <= 64) {
    const maxAttempts = rng.int(2, 5);
    const failures = rng.int(1, maxAttempts - 1);
    const statuses: JobStatus[] = ["queued", ...failedAttempts(failures), "running", "succeeded"];
    const end = total + 2_000 * failures;
    return {
      steps: timed(rng, statuses, 100, end),
      maxAttempts,
      lastError: error,
      slaDeadlineInMs: relaxedSla(end),
    };
  }
  if (roll <= 72) {
    const maxAttempts = rng.int(2, 4);
    const statuses: JobStatus[] = [
      "queued",
      ...failedAttempts(maxAttempts - 1),
      "running",
      "dead_letter",
    ];
    const end = total + 2_000 * maxAttempts;
    return {
      steps: timed(rng, statuses, 100, end),
      maxAttempts,
      lastError: error,
      slaDeadlineInMs: relaxedSla(end),
    };
  }
  if (roll <= 75) {
    return {
      steps: timed(rng, ["queued", "running", "failed"], 100, total),
      maxAttempts: 1,
      lastError: error,
      slaDeadlineInMs: null,
    };
  }
  if (roll <= 82) {
    const statuses: JobStatus[] = rng.chance(0.5)
      ? ["queued", "cancelled"]
      : ["queued", "running", "cancelled"];
    return { steps: timed(rng, statuses, 100, total), slaDeadlineInMs: relaxedSla(total) };
  }
  if (roll <= 92) {
    // The deadline falls while the job runs, so it is breached before the job succeeds.
    const steps = timed(rng, ["queued", "running", "succeeded"], 100, total);
    const runningAt = (steps[2] as SimStep).afterMs;
    return { steps, slaDeadlineInMs: runningAt + Math.floor((total - runningAt) / 2) };
  }
  const quick = rng.int(50, 900);
  return {
    steps: timed(rng, ["queued", "running", "succeeded"], 10, quick),
    slaDeadlineInMs: relaxedSla(quick),
  };
}

function normalizeSteps(steps: readonly SimStep[]): SimStep[] {
  const sorted = steps
    .map((step, index) => ({ step, index }))
    .sort((a, b) => a.step.afterMs - b.step.afterMs || a.index - b.index)
    .map(({ step }) => ({ ...step }));
  const first = sorted[0];
  // Every job exists from its creation: before the first given step it is pending.
  if (first === undefined || first.afterMs > 0) sorted.unshift({ afterMs: 0, status: "pending" });
  return sorted;
}

/**
 * Resolves a spec into a job created at `now`. Without `steps` the lifecycle is drawn from the
 * realistic mix, and the spec's other fields override the drawn ones. The descriptive fields
 * (submission, correlation ...) always come from `rng`, so a seed reproduces whole bodies.
 */
export function createSimJob(
  spec: SimJobSpec,
  rng: Rng,
  now: number,
  defaultId: () => string,
): SimJob {
  const given = Object.fromEntries(Object.entries(spec).filter(([, v]) => v !== undefined));
  const base: SimJobSpec = spec.steps === undefined ? { ...randomSpec(rng), ...given } : spec;
  const type = base.type ?? rng.pick(JOB_TYPES);
  const submissionId = rng.uuid();
  const partnerSubmissionId = `hy-sub-${rng.int(1, 99_999).toString().padStart(5, "0")}`;
  const partnerSubjectId = rng.chance(0.8) ? `subj-${rng.int(1, 999_999)}` : null;
  const segment = rng.pick(["default", "priority", null]);
  const correlationId = rng.uuid();
  const parentJobId = rng.chance(0.2) ? rng.uuid() : null;
  const slaDeadlineInMs = base.slaDeadlineInMs ?? null;
  return {
    jobId: (base.jobId ?? defaultId()).toLowerCase(),
    type,
    createdAt: now,
    steps: normalizeSteps(base.steps ?? []),
    maxAttempts: base.maxAttempts ?? 3,
    slaDeadlineAt: slaDeadlineInMs === null ? null : now + slaDeadlineInMs,
    flagsDeadlineBreach: base.flagsDeadlineBreach ?? true,
    visibleAt: now + (base.visibleAfterMs ?? 0),
    submissionId,
    partnerSubmissionId,
    partnerSubjectId:
      base.partnerSubjectId !== undefined ? base.partnerSubjectId : partnerSubjectId,
    segment,
    correlationId,
    parentJobId,
    lastError: base.lastError ?? null,
    errorDetail: base.errorDetail,
  };
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/**
 * The API body of `job` at `now`, or `null` while it is not visible yet (the API answers 404).
 * Invariants: `updatedAt` is the time of the latest step reached; `queuedAt`/`startedAt` are the
 * first entries into those states and `completedAt` the time a final state was reached, so
 * createdAt <= queuedAt <= startedAt <= completedAt <= updatedAt whenever they are set;
 * `failedAt` and `lastError` describe the latest failure and survive a successful retry;
 * `slaBreached` never goes back to false.
 */
export function jobAt(job: SimJob, now: number): Job | null {
  if (now < job.visibleAt) return null;
  const elapsed = now - job.createdAt;

  let status: JobStatus = "pending";
  let updatedAt = job.createdAt;
  let attempts = 0;
  let lastError: string | null = null;
  let queuedAt: number | null = null;
  let startedAt: number | null = null;
  let failedAt: number | null = null;
  let breachedByStep = false;

  for (const step of job.steps) {
    if (step.afterMs > elapsed) break;
    const at = job.createdAt + step.afterMs;
    status = step.status;
    updatedAt = at;
    if (status === "running") attempts += 1;
    if (step.attempts !== undefined) attempts = step.attempts;
    else if (status === "dead_letter") attempts = job.maxAttempts;
    if (step.lastError !== undefined) lastError = step.lastError;
    if (status === "failed" || status === "dead_letter") {
      failedAt = at;
      lastError ??= job.lastError ?? `${TYPE_LABELS[job.type]} failed`;
    }
    if (status === "queued") queuedAt ??= at;
    if (status === "running") startedAt ??= at;
    if (step.slaBreached === true) breachedByStep = true;
  }

  const completedAt = isFinal(status, attempts, job.maxAttempts) ? updatedAt : null;
  const deadline = job.slaDeadlineAt;
  // Breached iff at some instant in [deadline, now] the job was not final yet.
  const breachedByDeadline =
    deadline !== null && now >= deadline && (completedAt === null || completedAt > deadline);
  const errorDetail =
    job.errorDetail !== undefined
      ? job.errorDetail
      : lastError === null
        ? null
        : { code: "PIPELINE_STEP_FAILED", retryable: status === "failed" && completedAt === null };

  return {
    jobId: job.jobId,
    submissionId: job.submissionId,
    partnerSubmissionId: job.partnerSubmissionId,
    partnerSubjectId: job.partnerSubjectId,
    type: job.type,
    typeLabel: TYPE_LABELS[job.type],
    status,
    statusLabel: STATUS_LABELS[status],
    segment: job.segment,
    correlationId: job.correlationId,
    parentJobId: job.parentJobId,
    attempts,
    maxAttempts: job.maxAttempts,
    lastError,
    errorDetail,
    queuedAt: iso(queuedAt),
    acceptedAt: iso(job.createdAt),
    startedAt: iso(startedAt),
    completedAt: iso(completedAt),
    failedAt: iso(failedAt),
    slaDeadlineAt: iso(deadline),
    processingDurationMs:
      completedAt !== null && startedAt !== null ? completedAt - startedAt : null,
    slaBreached: breachedByStep || (job.flagsDeadlineBreach && breachedByDeadline),
    createdAt: new Date(job.createdAt).toISOString(),
    updatedAt: new Date(updatedAt).toISOString(),
  };
}
