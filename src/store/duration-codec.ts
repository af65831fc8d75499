import { JOB_TYPES, type JobType } from "../api/schema.js";

/**
 * How learned phase durations are represented in Redis: the fixed logarithmic bucket grid, the
 * decay applied per merged sample, the hash field per type and phase and its value. The Lua
 * merge (`mergeDurations-1.lua`) does the same arithmetic on the same layout, so this module and
 * the script change together. The questions asked of a histogram (quantiles, survival, the
 * schedule) are the poller's (`src/poller/durations.ts`, `src/poller/schedule.ts`).
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

/** One observed phase duration, as a written decision hands it over to be learned. */
export interface DurationSample {
  type: JobType;
  phase: Phase;
  ms: number;
}

export function distributionKey(type: JobType, phase: Phase): string {
  return `${type}|${phase}`;
}

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

/** Decodes the stored hash, skipping fields this version cannot read (never fatal). */
export function histogramsFromHash(hash: Record<string, string>): Map<string, DurationHistogram> {
  const map = new Map<string, DurationHistogram>();
  for (const [field, raw] of Object.entries(hash)) {
    const key = parseDistributionKey(field);
    const h = decodeHistogram(raw);
    if (key !== null && h !== null) map.set(distributionKey(key.type, key.phase), h);
  }
  return map;
}

/**
 * The statistics as read from Redis, decoded but not yet prepared for questions: the poller
 * turns `histograms` into its DurationSnapshot. Only seed types and the two phases are keys.
 */
export class StoredDurations {
  constructor(readonly histograms: ReadonlyMap<string, DurationHistogram>) {}

  get(type: JobType, phase: Phase): DurationHistogram | undefined {
    return this.histograms.get(distributionKey(type, phase));
  }

  entries(): Array<{ type: JobType; phase: Phase; histogram: DurationHistogram }> {
    const out: Array<{ type: JobType; phase: Phase; histogram: DurationHistogram }> = [];
    for (const type of JOB_TYPES) {
      for (const phase of PHASES) {
        const histogram = this.get(type, phase);
        if (histogram !== undefined) out.push({ type, phase, histogram });
      }
    }
    return out;
  }
}
