import type { RedisClient } from "./connection.js";
import {
  BUCKETS,
  bucketOf,
  DECAY,
  type DurationSample,
  distributionKey,
  histogramsFromHash,
  MAX_SAMPLE_MS,
  StoredDurations,
} from "./duration-codec.js";
import { loadScriptSources } from "./scripts.js";

/**
 * Samples gathered since the last merge, already reduced to bucket counts per type and phase:
 * its size is bounded by the number of types x phases x buckets, however many polls feed it.
 */
export class SampleBatch {
  private readonly byField = new Map<string, { n: number; counts: Map<number, number> }>();

  add(samples: readonly DurationSample[]): void {
    for (const s of samples) {
      if (!(Number.isFinite(s.ms) && s.ms >= 0 && s.ms <= MAX_SAMPLE_MS)) continue;
      const field = distributionKey(s.type, s.phase);
      let entry = this.byField.get(field);
      if (entry === undefined) {
        entry = { n: 0, counts: new Map() };
        this.byField.set(field, entry);
      }
      const b = bucketOf(s.ms);
      entry.n += 1;
      entry.counts.set(b, (entry.counts.get(b) ?? 0) + 1);
    }
  }

  /** Takes another batch in (a merge that failed goes back into the next one). */
  absorb(other: SampleBatch): void {
    for (const [field, e] of other.byField) {
      const mine = this.byField.get(field);
      if (mine === undefined) {
        this.byField.set(field, { n: e.n, counts: new Map(e.counts) });
        continue;
      }
      mine.n += e.n;
      for (const [b, c] of e.counts) mine.counts.set(b, (mine.counts.get(b) ?? 0) + c);
    }
  }

  get size(): number {
    let n = 0;
    for (const e of this.byField.values()) n += e.n;
    return n;
  }

  /** The script's ARGV triples: field, samples, "bucket:count,...". */
  toArgs(): string[] {
    const args: string[] = [];
    for (const [field, e] of this.byField) {
      const counts = [...e.counts].map(([b, c]) => `${b}:${c}`).join(",");
      args.push(field, String(e.n), counts);
    }
    return args;
  }
}

type MergeFn = (key: string, ...args: Array<string | number>) => Promise<string[]>;

/**
 * The shared phase-duration statistics in Redis: one small hash under the prefix (so it shares
 * the prefix's hash tag on a Cluster), merged in batches by every replica and read whole.
 */
export class DurationStore {
  private readonly merge: MergeFn;

  constructor(
    private readonly redis: RedisClient,
    readonly key: string,
  ) {
    const source = loadScriptSources().get("mergeDurations");
    if (source === undefined) throw new Error("missing Lua script mergeDurations-1.lua");
    // defineCommand again on a client the Store already set up only replaces the same script.
    redis.defineCommand("mergeDurations", source);
    this.merge = (redis as unknown as { mergeDurations: MergeFn }).mergeDurations.bind(redis);
  }

  /** Merges `batch` (which may be empty) and returns the statistics as they now stand. */
  async mergeAndRead(batch: SampleBatch, now: number): Promise<StoredDurations> {
    const flat = await this.merge(this.key, now, BUCKETS, DECAY, ...batch.toArgs());
    const hash: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) hash[flat[i] as string] = flat[i + 1] as string;
    return new StoredDurations(histogramsFromHash(hash));
  }

  async read(): Promise<StoredDurations> {
    return new StoredDurations(histogramsFromHash(await this.redis.hgetall(this.key)));
  }
}
