import { JOB_TYPES, type JobType } from "../api/schema.js";

/**
 * Learned phase durations, pure: a decaying histogram on a fixed logarithmic grid per job type
 * and phase. Nothing here does I/O; the store merges samples into Redis with the same arithmetic
 * (`mergeDurations-1.lua`) and the loop hands decide an immutable snapshot of what it read.
 *
 * Why a fixed log grid rather than a t-digest or DDSketch: every replica merges into the same
 * Redis value, in Lua, without reading it first; a fixed grid makes a merge an element-wise
 * add, the size is bounded by construction (BUCKETS numbers per type and phase), and a ratio
 * of 1.3 between edges keeps quantiles within a few percent once interpolated.
 */

/** queue: queued until started; run: started until the next status (final or failed). */
export type Phase = "queue" | "run";
export const PHASES: readonly Phase[] = ["queue", "run"];

export const BUCKETS = 64;
/** Upper edge of bucket 0; bucket i >= 1 covers [BASE_MS * RATIO^(i-1), BASE_MS * RATIO^i). */
export const BASE_MS = 10;
export const RATIO = 1.3;
const LOG_RATIO = Math.log(RATIO);
/**
 * Every sample multiplies the weights already held by 1 - 1/DECAY_WINDOW, so the histogram
 * describes roughly the last DECAY_WINDOW samples of its type and phase, and its total weight
 * stays below DECAY_WINDOW plus one batch. Counting in samples rather than in time means a quiet night does
 * not erase what was learned, and a busy hour follows a change within minutes.
 */
export const DECAY_WINDOW = 500;
export const DECAY = 1 - 1 / DECAY_WINDOW;
/** Below this much weight a type/phase counts as unknown and the schedule is the backoff. */
export const MIN_SAMPLES = 20;
/** A sample above this is a clock error or a job forgotten for a month, not a duration. */
export const MAX_SAMPLE_MS = 30 * 86_400_000;

export function bucketOf(ms: number): number {
  if (!(ms >= BASE_MS)) return 0;
  const i = Math.floor(Math.log(ms / BASE_MS) / LOG_RATIO) + 1;
  return i >= BUCKETS ? BUCKETS - 1 : i;
}

/** Lower edge of bucket i. */
export function lowerEdge(i: number): number {
  return i <= 0 ? 0 : BASE_MS * RATIO ** (i - 1);
}

/** Upper edge of bucket i (the last bucket is given a width of one ratio for interpolation). */
export function upperEdge(i: number): number {
  return BASE_MS * RATIO ** i;
}

/** What is stored per type and phase. */
export interface DurationHistogram {
  /** BUCKETS decayed weights. */
  readonly weights: readonly number[];
  /** Samples merged since the histogram was created (not decayed): for operators. */
  readonly samples: number;
  /** When the last batch was merged (ms). */
  readonly updatedAtMs: number;
}

export function emptyHistogram(): DurationHistogram {
  return { weights: new Array<number>(BUCKETS).fill(0), samples: 0, updatedAtMs: 0 };
}

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

export function distributionKey(type: JobType, phase: Phase): string {
  return `${type}|${phase}`;
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

// ---- the stored form ---------------------------------------------------------------------------

/**
 * One hash field per type and phase, `<type>|<phase>`, valued `v1|<updatedAtMs>|<samples>|<w0,w1,…>`.
 * The Lua merge reads and writes exactly this layout.
 */
export function encodeHistogram(h: DurationHistogram): string {
  const w = h.weights.map((x) => (x < 1e-4 ? "0" : String(Number(x.toPrecision(6)))));
  return `v1|${h.updatedAtMs}|${h.samples}|${w.join(",")}`;
}

/** Null for a value this version cannot read (it is then ignored, never fatal). */
export function decodeHistogram(raw: string): DurationHistogram | null {
  const parts = raw.split("|");
  if (parts.length !== 4 || parts[0] !== "v1") return null;
  const updatedAtMs = Number(parts[1]);
  const samples = Number(parts[2]);
  const weights = (parts[3] ?? "").split(",").map(Number);
  if (
    !Number.isFinite(updatedAtMs) ||
    !Number.isFinite(samples) ||
    weights.length !== BUCKETS ||
    weights.some((w) => !Number.isFinite(w) || w < 0)
  ) {
    return null;
  }
  return { weights, samples, updatedAtMs };
}

/** Parses a field name back; null for anything but a seed type and a phase. */
export function parseDistributionKey(field: string): { type: JobType; phase: Phase } | null {
  const bar = field.lastIndexOf("|");
  const type = field.slice(0, bar) as JobType;
  const phase = field.slice(bar + 1) as Phase;
  if (!JOB_TYPES.includes(type) || !PHASES.includes(phase)) return null;
  return { type, phase };
}

/** Builds a snapshot from the stored hash, skipping fields this version cannot read. */
export function snapshotFromHash(hash: Record<string, string>): DurationSnapshot {
  const map = new Map<string, DurationHistogram>();
  for (const [field, raw] of Object.entries(hash)) {
    const key = parseDistributionKey(field);
    const h = decodeHistogram(raw);
    if (key !== null && h !== null) map.set(distributionKey(key.type, key.phase), h);
  }
  return new DurationSnapshot(map);
}
