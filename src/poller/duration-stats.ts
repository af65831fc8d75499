import type { Logger } from "pino";
import { coerceError } from "../lib/errors.js";
import { sleep } from "../lib/signal.js";
import type { StoredDurations } from "../store/duration-codec.js";
import { SampleBatch } from "../store/durations.js";
import { DurationSnapshot } from "./durations.js";
import type { DurationSample } from "./schedule.js";

/** The one store call this part needs: publish a batch, get everything back. */
export interface DurationSync {
  mergeAndRead(batch: SampleBatch, now: number): Promise<StoredDurations>;
}

export interface DurationStatsDeps {
  store: DurationSync;
  /** How often buffered samples are merged and the snapshot refreshed (one round trip). */
  syncIntervalMs: number;
  logger: Logger;
  clock?: () => number;
  /** Reports each sync's outcome, for Redis health and metrics. */
  onSync?: (ok: boolean, err?: unknown) => void;
}

/**
 * The learned phase durations as the loop sees them. Written decisions hand their samples to
 * `record` (memory only, bounded by the number of types x phases x buckets); every
 * `syncIntervalMs` one Redis call merges them into the shared statistics and brings back what
 * every replica learned, which becomes the snapshot decide reads. So learning costs one round
 * trip per interval, never one per poll, and a replica that restarts reads what was learned
 * before from Redis.
 */
export class DurationStats {
  private current: DurationSnapshot = DurationSnapshot.EMPTY;
  private pending = new SampleBatch();
  private readonly clock: () => number;
  private readonly stopController = new AbortController();
  private loop: Promise<void> | null = null;
  private syncing: Promise<boolean> | null = null;
  private recordedTotal = 0;

  constructor(private readonly deps: DurationStatsDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  /** The latest statistics read; empty (every type on the backoff) until the first sync. */
  snapshot(): DurationSnapshot {
    return this.current;
  }

  record(samples: readonly DurationSample[]): void {
    if (samples.length === 0) return;
    this.pending.add(samples);
    this.recordedTotal += samples.length;
  }

  /** Samples this replica learned since it started (for tests and operators). */
  get recorded(): number {
    return this.recordedTotal;
  }

  /** Samples waiting for the next sync. */
  get buffered(): number {
    return this.pending.size;
  }

  /**
   * One merge-and-read of everything recorded so far; false when Redis failed (the samples
   * wait for the next one). A sync already under way took its batch earlier, so this one waits
   * for it and then starts its own: calls never overlap, and nothing recorded is skipped.
   */
  async sync(): Promise<boolean> {
    while (this.syncing !== null) await this.syncing;
    const run = this.syncOnce();
    this.syncing = run;
    try {
      return await run;
    } finally {
      if (this.syncing === run) this.syncing = null;
    }
  }

  private async syncOnce(): Promise<boolean> {
    const batch = this.pending;
    this.pending = new SampleBatch();
    try {
      this.current = new DurationSnapshot(
        (await this.deps.store.mergeAndRead(batch, this.clock())).histograms,
      );
      this.deps.onSync?.(true);
      return true;
    } catch (err) {
      // Put them back: the batch is bounded, so holding on costs nothing while Redis is away.
      batch.absorb(this.pending);
      this.pending = batch;
      this.deps.onSync?.(false, err);
      this.deps.logger.debug({ err: coerceError(err) }, "duration statistics sync failed");
      return false;
    }
  }

  /** Syncs at once (so a restart schedules from what was learned), then every interval. */
  start(): void {
    this.loop ??= (async () => {
      while (!this.stopController.signal.aborted) {
        await this.sync();
        await sleep(this.deps.syncIntervalMs, this.stopController.signal);
      }
    })();
  }

  /** Stops the timer and publishes what is still buffered (one attempt). Safe to call twice. */
  async stop(): Promise<void> {
    this.stopController.abort();
    await this.loop;
    if (this.pending.size > 0) await this.sync();
  }
}
