import type { Job, JobStatus } from "../api/schema.js";

/** The pure rules of the poller: no I/O, no clock, no randomness of their own. */

export interface BackoffSettings {
  minIntervalMs: number;
  maxIntervalMs: number;
  backoffFactor: number;
  /** Fraction of the interval taken off at random, so jobs added together spread out. */
  jitter: number;
}

/** The interval after a poll: back to the minimum after a change, otherwise grown and capped. */
export function nextInterval(
  previousMs: number | null,
  changed: boolean,
  s: BackoffSettings,
): number {
  if (changed || previousMs === null) return s.minIntervalMs;
  const grown = Math.round(previousMs * s.backoffFactor);
  return Math.min(s.maxIntervalMs, Math.max(s.minIntervalMs, grown));
}

/**
 * The delay before the next poll: the interval less up to `jitter` of it. Jitter only shortens,
 * so the cap `maxIntervalMs` always holds. `random` is in [0, 1).
 */
export function jittered(intervalMs: number, jitter: number, random: number): number {
  return Math.max(1, Math.round(intervalMs * (1 - jitter * random)));
}

/**
 * When to poll next. While the job has a future SLA deadline that has not been reported as
 * breached, it is polled no later than the deadline, so a breach is seen when it happens.
 * A `Retry-After` from the API pushes the time out (the API asked for it).
 */
export function nextDueAt(args: {
  now: number;
  delayMs: number;
  slaDeadlineMs: number | null;
  slaReported: boolean;
  notBeforeMs?: number | null;
  notAfterMs?: number | null;
}): number {
  let due = args.now + args.delayMs;
  if (!args.slaReported && args.slaDeadlineMs !== null && args.slaDeadlineMs > args.now) {
    due = Math.min(due, args.slaDeadlineMs);
  }
  if (args.notAfterMs != null && args.notAfterMs > args.now) due = Math.min(due, args.notAfterMs);
  if (args.notBeforeMs != null) due = Math.max(due, args.notBeforeMs);
  return due;
}

const ALWAYS_FINAL: ReadonlySet<JobStatus> = new Set<JobStatus>([
  "succeeded",
  "cancelled",
  "dead_letter",
]);

/**
 * A job is final when the pipeline will not touch it again. A `failed` job with attempts left
 * may still be retried by the pipeline, so it is final only once attempts >= maxAttempts.
 */
export function isFinal(job: Pick<Job, "status" | "attempts" | "maxAttempts">): boolean {
  if (ALWAYS_FINAL.has(job.status)) return true;
  return job.status === "failed" && job.attempts >= job.maxAttempts;
}

/**
 * How an SLA breach is first detected, or null. The API's own flag counts whenever it is
 * reported; the daemon's clock counts only while the job is not final (a job that finished
 * before its deadline without the flag did not breach).
 */
export function slaBreachDetection(
  job: Pick<Job, "slaBreached" | "slaDeadlineAt" | "status" | "attempts" | "maxAttempts">,
  now: number,
  alreadyReported: boolean,
): "api" | "deadline" | null {
  if (alreadyReported) return null;
  if (job.slaBreached) return "api";
  if (job.slaDeadlineAt !== null && !isFinal(job) && Date.parse(job.slaDeadlineAt) <= now) {
    return "deadline";
  }
  return null;
}

/** A 404 proves the job does not exist only once it has persisted for the grace period. */
export function notFoundExpired(firstNotFoundAt: number, now: number, graceMs: number): boolean {
  return now - firstNotFoundAt >= graceMs;
}

/** `poll_failed` is emitted once per streak of consecutive failed polls, when it reaches the threshold. */
export function shouldAlertPollFailure(
  consecutiveFailures: number,
  threshold: number,
  alreadyAlerted: boolean,
): boolean {
  return !alreadyAlerted && consecutiveFailures >= threshold;
}

/** A response whose `updatedAt` is older than the recorded one is stale: events never go back. */
export function isStale(updatedAtMs: number, recordedUpdatedAtMs: number | null): boolean {
  return recordedUpdatedAtMs !== null && updatedAtMs < recordedUpdatedAtMs;
}
