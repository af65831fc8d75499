import type { Job, JobStatus, JobType } from "../api/schema.js";
import type { DurationSample } from "../store/duration-codec.js";
import {
  type DurationSnapshot,
  MAX_SAMPLE_MS,
  MIN_SAMPLES,
  type Phase,
  type PhaseDistribution,
} from "./durations.js";

/**
 * The predictive schedule, pure: where to place a job's next poll given what was learned about
 * its type and how long it has been in its current phase.
 *
 * The rule: after a poll at age `a` in the phase, the next poll is the smallest delay D in
 * [min, max] with
 *
 *     D * P(change within D | no change by a)  >=  W,   W = WORTH_FACTOR * sqrt(min * max)
 *
 * that is, a poll is sent once the probability that it finds a change reaches W/D. A change
 * that is certain is polled for after W; a poll that waits the maximum interval needs only a
 * W/max chance. This is the discrete form of Keller's optimal inspection density (interval ~
 * sqrt(2c / hazard), c the cost of a request in delay): D * P(change within D) ~ hazard * D^2 is
 * held constant, so polls are dense where the hazard is high and sparse where it is low, and
 * each one buys about the same expected detection delay. W is where requests and delay are
 * traded. It is derived from the two bounds the operator already chose, so nothing else needs
 * tuning; the factor was set on the economy benchmark (docs/benchmarks.md): at 1 requests drop
 * most but the p95 delay is only ~40% below the backoff's; at 2/3 both fall by a third or more.
 *
 * Where the rule has no grounds, the backoff decides instead (the caller's fallback):
 * a type or phase with fewer than MIN_SAMPLES of history, a status that is no learned phase
 * (pending, a failed job awaiting its retry), and a job older in its phase than nearly all of
 * history (the tail holds less than one sample's weight: nothing is known there).
 */

// The sample is what the store merges, so its type lives with the stored form.
export type { DurationSample } from "../store/duration-codec.js";

/** The phase a status belongs to; null for statuses whose end is not learned. */
export function phaseOf(status: JobStatus | null): Phase | null {
  if (status === "queued") return "queue";
  if (status === "running") return "run";
  return null;
}

function ms(iso: string | null): number | null {
  if (iso === null) return null;
  const t = Date.parse(iso);
  return Number.isFinite(t) ? t : null;
}

/**
 * When the job entered its current phase, by the API's clock. `queuedAt` and `startedAt` are
 * the first entries into those states, so they describe the current phase only on the first
 * attempt; after a retry the latest `updatedAt` is the best the body offers.
 */
export function phaseStartOf(
  job: Pick<Job, "status" | "attempts" | "queuedAt" | "startedAt" | "updatedAt">,
): number | null {
  const phase = phaseOf(job.status);
  if (phase === null) return null;
  const first = phase === "queue" ? job.attempts === 0 : job.attempts <= 1;
  const stamp = first ? (phase === "queue" ? job.queuedAt : job.startedAt) : null;
  return ms(stamp) ?? ms(job.updatedAt);
}

const LEFT_QUEUE: ReadonlySet<JobStatus | null> = new Set<JobStatus | null>([
  null,
  "pending",
  "queued",
]);
const BEFORE_RUN_END: ReadonlySet<JobStatus | null> = new Set<JobStatus | null>([
  null,
  "pending",
  "queued",
  "running",
]);

function usable(sample: number | null): sample is number {
  return sample !== null && Number.isFinite(sample) && sample >= 0 && sample <= MAX_SAMPLE_MS;
}

/**
 * The phase durations a recorded change reveals, at most one per phase. A phase is learned when
 * the change shows the job left it: the queue once the job is past queued, the run once it is
 * past running. The API's timestamps give the duration; where the body lacks one, the phase start
 * recorded at an earlier poll (`previousPhaseStartMs`, itself from the API's clock) and the
 * `updatedAt` of this change stand in. Only first attempts are learned: a retry's timestamps
 * mix attempts. Each change is written once (compare-and-set), so each job counts once.
 */
export function phaseSamples(
  previous: { status: JobStatus | null; phaseStartMs: number | null },
  job: Job,
): DurationSample[] {
  if (job.status === previous.status) return [];
  const out: DurationSample[] = [];
  const queuedAt = ms(job.queuedAt);
  const startedAt = ms(job.startedAt);
  const updatedAt = ms(job.updatedAt);
  const endedAt = ms(job.completedAt) ?? ms(job.failedAt);

  if (LEFT_QUEUE.has(previous.status) && !LEFT_QUEUE.has(job.status) && job.attempts <= 1) {
    let sample: number | null = null;
    if (queuedAt !== null && startedAt !== null) sample = startedAt - queuedAt;
    else if (previous.status === "queued" && previous.phaseStartMs !== null) {
      sample = (startedAt ?? updatedAt ?? Number.NaN) - previous.phaseStartMs;
    }
    if (usable(sample)) out.push({ type: job.type, phase: "queue", ms: sample });
  }
  if (BEFORE_RUN_END.has(previous.status) && !BEFORE_RUN_END.has(job.status) && job.attempts <= 1) {
    let sample: number | null = null;
    if (startedAt !== null && endedAt !== null) {
      sample = job.processingDurationMs ?? endedAt - startedAt;
    } else if (previous.status === "running" && previous.phaseStartMs !== null) {
      sample = (endedAt ?? updatedAt ?? Number.NaN) - previous.phaseStartMs;
    }
    if (usable(sample)) out.push({ type: job.type, phase: "run", ms: sample });
  }
  return out;
}

export interface IntervalBounds {
  minIntervalMs: number;
  maxIntervalMs: number;
}

/** Places W between the bounds' geometric mean (fewest requests) and min (least delay). */
export const WORTH_FACTOR = 2 / 3;

/** W of the rule: the interval a certain change gets, and the worth every poll must reach. */
export function pollWorthMs(bounds: IntervalBounds): number {
  return Math.max(
    bounds.minIntervalMs,
    WORTH_FACTOR * Math.sqrt(bounds.minIntervalMs * bounds.maxIntervalMs),
  );
}

export interface PredictiveChoice {
  /** In [minIntervalMs, maxIntervalMs], before jitter. */
  intervalMs: number;
  /** P(change within intervalMs | no change by ageMs). */
  probability: number;
  phase: Phase;
  ageMs: number;
  distribution: PhaseDistribution;
}

/**
 * The rule above for one job, or null when the backoff must decide. Pure; the cost is a binary
 * search over the delay (about 27 steps of one logarithm each).
 */
export function predictiveInterval(
  d: PhaseDistribution,
  ageMs: number,
  bounds: IntervalBounds,
): { intervalMs: number; probability: number } | null {
  const { minIntervalMs: min, maxIntervalMs: max } = bounds;
  const w = pollWorthMs(bounds);
  const age = Math.max(0, ageMs);
  const alive = d.survival(age);
  // Past (nearly) everything seen: the tail holds less than one sample, so nothing is known.
  if (alive * d.total < 1) return null;
  const chance = (delay: number) => (alive - d.survival(age + delay)) / alive;
  const worth = (delay: number) => delay * chance(delay) >= w;
  if (!worth(max)) return { intervalMs: max, probability: chance(max) };
  // delay * chance(delay) never decreases with delay, so the first delay that is worth a poll
  // is found by bisection.
  let lo = min;
  let hi = max;
  if (worth(lo)) return { intervalMs: lo, probability: chance(lo) };
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (worth(mid)) hi = mid;
    else lo = mid;
  }
  return { intervalMs: hi, probability: chance(hi) };
}

/** The predictive choice for a job as the API just described it, or null for the backoff. */
export function choosePredictive(
  snapshot: DurationSnapshot,
  job: { type: JobType; status: JobStatus | null; phaseStartMs: number | null },
  now: number,
  bounds: IntervalBounds,
): PredictiveChoice | null {
  const phase = phaseOf(job.status);
  if (phase === null || job.phaseStartMs === null) return null;
  const distribution = snapshot.usable(job.type, phase);
  if (distribution === undefined) return null;
  const ageMs = Math.max(0, now - job.phaseStartMs);
  const pick = predictiveInterval(distribution, ageMs, bounds);
  return pick === null ? null : { ...pick, phase, ageMs, distribution };
}

const seconds = (x: number) => `${(x / 1000).toFixed(x < 10_000 ? 2 : 1)} s`;

/**
 * Why a job is polled when it is, in one sentence for `status <jobId>`: which schedule applies
 * and from what. `now` stands for the moment of the explanation, so the age is today's.
 */
export function explainSchedule(
  snapshot: DurationSnapshot | null,
  job: { type: JobType | null; status: JobStatus | null; phaseStartMs: number | null },
  now: number,
  bounds: IntervalBounds,
): string {
  if (snapshot === null) return "backoff: POLLER_SCHEDULE=backoff";
  if (job.type === null || job.status === null) return "backoff: the job was not observed yet";
  const phase = phaseOf(job.status);
  if (phase === null) return `backoff: status ${job.status} is not a learned phase`;
  const d = snapshot.get(job.type, phase);
  if (d === undefined || d.total < MIN_SAMPLES) {
    const have = d === undefined ? 0 : Math.floor(d.total);
    return `backoff: ${have} of ${MIN_SAMPLES} samples learned for ${job.type} ${phase}`;
  }
  const choice = choosePredictive(snapshot, { ...job, type: job.type }, now, bounds);
  if (choice === null) {
    return `backoff: ${job.type} has been in ${phase} longer than nearly all ${d.samples} samples learned (p90 ${seconds(d.quantile(0.9))})`;
  }
  return (
    `predictive: ${job.type} ${phase} for ${seconds(choice.ageMs)} ` +
    `(p50 ${seconds(d.quantile(0.5))}, p90 ${seconds(d.quantile(0.9))}, ${d.samples} samples); ` +
    `P(change within ${seconds(choice.intervalMs)}) = ${choice.probability.toFixed(2)} ` +
    `>= W/interval = ${Math.min(1, pollWorthMs(bounds) / choice.intervalMs).toFixed(2)}`
  );
}
