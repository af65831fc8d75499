import type { Logger } from "pino";
import { coerceError } from "../lib/errors.js";
import { sleep } from "../lib/signal.js";
import type { ApplyCode, DecisionWrite } from "../store/store.js";
import { Backoff } from "./backoff.js";
import type { PollerStore } from "./ports.js";
import type { RedisHealth } from "./redis-health.js";

/** applyDecisions calls in flight at once, and decisions per call. */
const MAX_APPLY_CALLS = 2;
const MAX_APPLY_BATCH = 256;
/** Retry delays of a failing applyDecisions call. */
const RETRY_FIRST_MS = 50;
const RETRY_MAX_MS = 2000;

/** Called once with the write's code, or null when it was given up on at shutdown. */
export type WriteDone = (code: ApplyCode | null) => void;

interface Pending {
  write: DecisionWrite;
  done: WriteDone;
}

export interface WriterDeps {
  store: Pick<PollerStore, "apply">;
  health: RedisHealth;
  logger: Logger;
  clock: () => number;
  /** Decisions unwritten at which polling holds back (backpressure). */
  limit: number;
  /** Whether a failing write may be given up on: only past the shutdown's write deadline. */
  mayGiveUp: () => boolean;
  /** Called after each applyDecisions call settles, so a waiting shutdown can look again. */
  onSettled: () => void;
  /** Injected by tests; the retry delay. */
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Writes decisions with batched applyDecisions calls. It owns the count of unwritten decisions:
 * a decision counts from `write` until its `done` is called, whatever the outcome.
 *
 * Writes are batched naturally: while a call is out, the decisions that arrive meanwhile go
 * together in the next one. A failing call is retried (the script is compare-and-set, so a
 * retry never writes twice) until `mayGiveUp` says the shutdown's write deadline passed; then
 * `done` gets null (nothing was written, the job is polled again when its lease runs out).
 */
export class Writer {
  private queue: Pending[] = [];
  private unwritten = 0;
  /** applyDecisions calls in flight (at most MAX_APPLY_CALLS). */
  private applying = 0;
  private flushScheduled = false;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly deps: WriterDeps) {
    this.sleep = deps.sleep ?? ((ms) => sleep(ms));
  }

  /** Decisions made but not yet written (or given up on). */
  get pending(): number {
    return this.unwritten;
  }

  /** Backpressure: while Redis is slow or down, stop polling rather than pile up decisions. */
  get full(): boolean {
    return this.unwritten >= this.deps.limit;
  }

  /** Queues a decision. A callback rather than a promise: this runs once per poll. */
  write(write: DecisionWrite, done: WriteDone): void {
    this.unwritten += 1;
    this.queue.push({ write, done });
    // Decisions made in the same turn of the event loop (many responses arrive together)
    // go out in one call: the flush waits for the turn to end.
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.scheduledFlush);
    }
  }

  private readonly scheduledFlush = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  /**
   * Starts applyDecisions calls while there is room: up to MAX_APPLY_CALLS at once, so one
   * round trip's latency does not stall every worker. Order between them does not matter: a
   * job has at most one decision per lease, and its next claim waits for that write.
   */
  private flush(): void {
    while (this.applying < MAX_APPLY_CALLS && this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_APPLY_BATCH);
      this.applying += 1;
      void this.applyBatch(batch).finally(() => {
        this.applying -= 1;
        this.flush();
        this.deps.onSettled();
      });
    }
  }

  private async applyBatch(batch: Pending[]): Promise<void> {
    const { store, health, clock } = this.deps;
    const backoff = new Backoff(RETRY_FIRST_MS, RETRY_MAX_MS);
    const writes = batch.map((p) => p.write);
    for (;;) {
      try {
        const codes = await health.run("apply", () => store.apply(writes, clock()));
        for (let i = 0; i < batch.length; i++) this.settle(batch[i], codes[i] ?? null);
        return;
      } catch {
        if (this.deps.mayGiveUp()) {
          for (const p of batch) this.settle(p, null);
          return;
        }
        await this.sleep(backoff.next());
      }
    }
  }

  /** One decision's callback; whatever it throws must not reach the rest of its batch. */
  private settle(pending: Pending | undefined, code: ApplyCode | null): void {
    if (pending === undefined) return;
    this.unwritten -= 1;
    try {
      pending.done(code);
    } catch (err) {
      this.deps.logger.error({ err: coerceError(err) }, "handling a written decision failed");
    }
  }
}
