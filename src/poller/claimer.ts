import { Wakeup } from "../lib/signal.js";
import type { ClaimedJob, ClaimResult } from "../store/store.js";
import { Backoff } from "./backoff.js";
import type { Gate } from "./gate.js";
import type { Lifecycle } from "./lifecycle.js";
import type { PollerStore } from "./ports.js";
import type { RedisHealth } from "./redis-health.js";

/** The claim queue covers this much polling at the recent pace (see queueDepth). */
const CLAIM_COVER_MS = 5;
/** No more is claimed than the request budget grants in this long (see run). */
export const BUDGET_COVER_MS = 500;
/** Retry delays of a failing claim. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 2000;

export interface ClaimerSettings {
  concurrency: number;
  leaseMs: number;
  claimBatch: number;
  idleWakeMs: number;
  /** A claimed job with less lease left than this is handed back unpolled (see budgets). */
  handBackBelowMs: number;
}

export interface ClaimerDeps {
  store: Pick<PollerStore, "claim" | "release">;
  health: RedisHealth;
  gate: Pick<Gate, "open" | "recover">;
  lifecycle: Pick<Lifecycle, "running" | "stopSignal">;
  settings: ClaimerSettings;
  clock: () => number;
  /** Polls one job; the slot is free again when it settles. */
  work: (job: ClaimedJob) => Promise<void>;
  /** Backpressure from the writer: true while too many decisions are unwritten. */
  writerFull: () => boolean;
  /** Called when a poll settles, so a waiting shutdown can look again. */
  onSlotFreed: () => void;
  metrics?: { polls?: { inc(labels: { outcome: string }, value?: number): void } };
  /** How many requests the request budget grants within `horizonMs`; absent: no budget. */
  affordable?: (horizonMs: number) => number;
}

/**
 * Claims due jobs under a lease and keeps them in a local queue, from which it starts polls up to
 * the concurrency. It owns the queue, the set of polls in flight and the pace they start at.
 *
 * Invariant: every job it claimed is either polled or handed back, and `handBack` is the one
 * place that hands jobs back. A job held here but not started keeps its lease for nothing, so
 * the queue is emptied back to Redis whenever the gate closes or the poller stops.
 */
export class Claimer {
  private readonly queue: ClaimedJob[] = [];
  private readonly inFlight = new Set<ClaimedJob>();
  private readonly wakeup = new Wakeup();
  /** Polls started so far, and their smoothed pace (see queueDepth). */
  private started = 0;
  private pace = { at: 0, started: 0, perMs: 0 };

  constructor(private readonly deps: ClaimerDeps) {}

  /** Jobs claimed and waiting for a slot. */
  get queued(): number {
    return this.queue.length;
  }

  /** Polls whose request is out. */
  get polling(): number {
    return this.inFlight.size;
  }

  /** Ends the claim loop's wait early: new jobs were tracked, or a slot or a write freed up. */
  wake(): void {
    this.wakeup.fire();
  }

  async run(): Promise<void> {
    const { settings: s, gate, lifecycle, health, store } = this.deps;
    const backoff = new Backoff(RETRY_FIRST_MS, RETRY_MAX_MS);
    while (lifecycle.running) {
      if (!gate.open()) {
        await gate.recover(lifecycle.stopSignal);
        continue;
      }
      // Keep enough claimed beyond the concurrency that workers never wait on Redis, and claim
      // before the queue runs dry, in batches big enough to be worth a round trip. With a
      // request budget, claim no more than it grants soon: under scarcity the rest waits in the
      // schedule, most overdue first, rather than on a lease here.
      let room =
        s.concurrency + this.queueDepth(this.deps.clock()) - this.queue.length - this.inFlight.size;
      let worth = Math.max(1, Math.min(s.claimBatch, s.concurrency) / 2);
      if (this.deps.affordable !== undefined) {
        // At least one: a job waiting is what makes the budget ask for the next permit.
        const affordable = Math.max(1, Math.floor(this.deps.affordable(BUDGET_COVER_MS)));
        room = Math.min(room, affordable - this.queue.length);
        worth = Math.min(worth, Math.ceil(affordable / 2));
      }
      if (room < worth) {
        await this.wakeup.wait(s.idleWakeMs);
        continue;
      }
      let claimed: ClaimResult;
      const now = this.deps.clock();
      try {
        claimed = await health.run("claim", () =>
          store.claim(now, Math.min(room, s.claimBatch), s.leaseMs),
        );
        backoff.reset();
      } catch {
        await this.wakeup.wait(backoff.next());
        continue;
      }
      if (!lifecycle.running) {
        await this.handBack(claimed.jobs);
        break;
      }
      if (!gate.open()) {
        // The gate closed while this claim was out: hand the jobs back rather than sit on them.
        await this.handBack(claimed.jobs);
        continue;
      }
      this.queue.push(...claimed.jobs);
      this.dispatch();
      if (claimed.jobs.length === 0) {
        const untilDue = claimed.nextDueAt === null ? s.idleWakeMs : claimed.nextDueAt - now;
        await this.wakeup.wait(Math.min(Math.max(untilDue, 1), s.idleWakeMs));
      }
    }
  }

  /**
   * How many claimed jobs to keep waiting for a slot: enough for CLAIM_COVER_MS of polling at
   * the recent pace (a claim's round trip, which may queue behind decision writes on the same
   * connection), at least half a concurrency, at most two. A fixed deep queue starves no one
   * at 15,000 polls/s but makes jobs wait seconds for a slot when the API is slow, and a job
   * that waits too long is handed back unpolled.
   */
  private queueDepth(now: number): number {
    const elapsed = now - this.pace.at;
    if (elapsed >= 100) {
      const perMs = (this.started - this.pace.started) / elapsed;
      this.pace = { at: now, started: this.started, perMs: (this.pace.perMs + perMs) / 2 };
    }
    const c = this.deps.settings.concurrency;
    const wanted = Math.ceil(this.pace.perMs * CLAIM_COVER_MS);
    return Math.min(2 * c, Math.max(Math.ceil(c / 2), wanted));
  }

  /** Starts polls from the queue while there is a free slot and nothing holds polling back. */
  dispatch(): void {
    const { settings: s, gate, lifecycle } = this.deps;
    while (
      this.inFlight.size < s.concurrency &&
      this.queue.length > 0 &&
      !this.deps.writerFull() &&
      lifecycle.running
    ) {
      if (!gate.open()) {
        void this.handBackQueued();
        break;
      }
      const job = this.queue.shift() as ClaimedJob;
      // A job that waited in the queue too long could not finish its poll inside its lease:
      // another replica might take it over mid-poll. Hand it back for a fresh claim instead.
      if (job.lease - this.deps.clock() < s.handBackBelowMs) {
        this.deps.metrics?.polls?.inc({ outcome: "handed_back" });
        void this.handBack([job]);
        continue;
      }
      this.inFlight.add(job);
      this.started += 1;
      void this.deps.work(job).finally(() => {
        this.inFlight.delete(job);
        this.deps.onSlotFreed();
        this.dispatch();
        this.wakeup.fire();
      });
    }
  }

  /** Hands back every job claimed but not started (the gate closed, or the poller stops). */
  handBackQueued(): Promise<void> {
    return this.handBack(this.queue.splice(0));
  }

  /**
   * Puts jobs back on the schedule, due now, for any replica to claim. Never throws: a lease
   * that is not released simply runs out after POLLER_LEASE_MS.
   */
  async handBack(jobs: readonly ClaimedJob[]): Promise<void> {
    if (jobs.length === 0) return;
    const now = this.deps.clock();
    const items = jobs.map((j) => ({ id: j.id, lease: j.lease, dueAt: now }));
    await this.deps.health.run("release", () => this.deps.store.release(items)).catch(() => {});
  }
}
