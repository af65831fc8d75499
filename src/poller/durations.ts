import { JOB_TYPES, type JobType } from "../api/schema.js";
import {
  BUCKETS,
  bucketOf,
  DECAY,
  type DurationHistogram,
  distributionKey,
  histogramsFromHash,
  lowerEdge,
  MAX_SAMPLE_MS,
  PHASES,
  type Phase,
  upperEdge,
} from "../store/duration-codec.js";

// The bucket grid and the stored form live on the store side (the Lua merge and the hash layout
// are the store's business); the quantile and scheduling math on top of them stays here.
export {
  BASE_MS,
  BUCKETS,
  bucketOf,
  DECAY,
  DECAY_WINDOW,
  type DurationHistogram,
  decodeHistogram,
  distributionKey,
  emptyHistogram,
  encodeHistogram,
  lowerEdge,
  MAX_SAMPLE_MS,
  PHASES,
  type Phase,
  parseDistributionKey,
  RATIO,
  upperEdge,
} from "../store/duration-codec.js";

/**
 * Learned phase durations, pure: a decaying histogram on a fixed logarithmic grid per job type
 * and phase. Nothing here does I/O; the store merges samples into Redis with the same arithmetic
 * (`mergeDurations-1.lua`) and the loop hands decide an immutable snapshot of what it read.
 * The grid, the decay and the stored form are the store's (`src/store/duration-codec.ts`).
 */

/** Below this much weight a type/phase counts as unknown and the schedule is the backoff. */
export const MIN_SAMPLES = 20;

/**
 * Merges a batch: the weights held decay once per new sample, then each sample adds 1 to its
 * bucket. Within a batch the order of samples is not kept (they all weigh 1): a batch is a few
 * seconds of traffic, far shorter than the decay window. `mergeDurations-1.lua` does the same.
 */
export function mergeSamples(
  h: DurationHistogram,
  samplesMs: readonly number[],
  now: number,
): DurationHistogram {
  const usable = samplesMs.filter((ms) => Number.isFinite(ms) && ms >= 0 && ms <= MAX_SAMPLE_MS);
  if (usable.length === 0) return h;
  const factor = DECAY ** usable.length;
  const weights = h.weights.map((w) => w * factor);
  for (const ms of usable) {
    const i = bucketOf(ms);
    weights[i] = (weights[i] ?? 0) + 1;
  }
  return { weights, samples: h.samples + usable.length, updatedAtMs: now };
}

/**
 * A histogram prepared for questions: cumulative weights, so that the CDF at any point costs
 * one logarithm. Immutable once built; decide reads it on every poll.
 */
export class PhaseDistribution {
  readonly total: number;
  readonly samples: number;
  readonly updatedAtMs: number;
  /** cumulative[i] = weight of buckets 0..i-1; cumulative[BUCKETS] = total. */
  private readonly cumulative: Float64Array;
  private readonly weights: Float64Array;

  constructor(h: DurationHistogram) {
    this.weights = Float64Array.from(h.weights.slice(0, BUCKETS));
    this.cumulative = new Float64Array(BUCKETS + 1);
    for (let i = 0; i < BUCKETS; i++) {
      const w = this.weights[i] ?? 0;
      this.cumulative[i + 1] = (this.cumulative[i] ?? 0) + Math.max(w, 0);
    }
    this.total = this.cumulative[BUCKETS] ?? 0;
    this.samples = h.samples;
    this.updatedAtMs = h.updatedAtMs;
  }

  /**
   * Weight of durations <= ms. Within a bucket the weight is spread evenly on a log scale
   * (linearly in bucket 0), which is what a log-normal looks like up close.
   */
  weightBelow(ms: number): number {
    if (!(ms > 0)) return 0;
    const i = bucketOf(ms);
    const lo = lowerEdge(i);
    const hi = upperEdge(i);
    const before = this.cumulative[i] ?? 0;
    const inBucket = this.weights[i] ?? 0;
    if (inBucket <= 0) return before;
    const frac = i === 0 ? ms / hi : Math.log(ms / lo) / Math.log(hi / lo);
    return before + inBucket * Math.min(1, Math.max(0, frac));
  }

  /** P(duration > ms). */
  survival(ms: number): number {
    return this.total <= 0 ? 1 : 1 - this.weightBelow(ms) / this.total;
  }

  /** The q-quantile in ms (q in [0, 1]); NaN when empty. */
  quantile(q: number): number {
    if (this.total <= 0) return Number.NaN;
    const target = Math.min(1, Math.max(0, q)) * this.total;
    for (let i = 0; i < BUCKETS; i++) {
      const next = this.cumulative[i + 1] ?? 0;
      if (next >= target && (this.weights[i] ?? 0) > 0) {
        const frac = (target - (this.cumulative[i] ?? 0)) / (this.weights[i] as number);
        const lo = lowerEdge(i);
        const hi = upperEdge(i);
        return i === 0 ? hi * frac : lo * (hi / lo) ** frac;
      }
    }
    return upperEdge(BUCKETS - 1);
  }
}

/**
 * What the schedule knows, frozen at one instant: decide gets it as an input and never waits
 * on it. Only the seed's job types and the two phases can be keys, so its size is bounded.
 */
export class DurationSnapshot {
  static readonly EMPTY = new DurationSnapshot(new Map());
  private readonly byKey: ReadonlyMap<string, PhaseDistribution>;

  constructor(histograms: ReadonlyMap<string, DurationHistogram>) {
    const byKey = new Map<string, PhaseDistribution>();
    for (const type of JOB_TYPES) {
      for (const phase of PHASES) {
        const h = histograms.get(distributionKey(type, phase));
        if (h !== undefined) byKey.set(distributionKey(type, phase), new PhaseDistribution(h));
      }
    }
    this.byKey = byKey;
  }

  get(type: JobType, phase: Phase): PhaseDistribution | undefined {
    return this.byKey.get(distributionKey(type, phase));
  }

  /** Enough history to schedule from: at least MIN_SAMPLES of (decayed) weight. */
  usable(type: JobType, phase: Phase): PhaseDistribution | undefined {
    const d = this.get(type, phase);
    return d !== undefined && d.total >= MIN_SAMPLES ? d : undefined;
  }

  entries(): Array<{ type: JobType; phase: Phase; distribution: PhaseDistribution }> {
    const out: Array<{ type: JobType; phase: Phase; distribution: PhaseDistribution }> = [];
    for (const type of JOB_TYPES) {
      for (const phase of PHASES) {
        const distribution = this.get(type, phase);
        if (distribution !== undefined) out.push({ type, phase, distribution });
      }
    }
    return out;
  }
}

/** Builds a snapshot from the stored hash, skipping fields this version cannot read. */
export function snapshotFromHash(hash: Record<string, string>): DurationSnapshot {
  return new DurationSnapshot(histogramsFromHash(hash));
}
