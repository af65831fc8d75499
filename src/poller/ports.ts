import type { Logger } from "pino";
import type { PollOutcome } from "../api/outcome.js";
import type { AnyCloudEvent } from "../events/types.js";
import type { ApplyCode, ClaimResult, DecisionWrite, IntakeResult } from "../store/store.js";
import type { DecideSettings } from "./decide.js";
import type { DurationSync } from "./duration-stats.js";

/**
 * The two edges the poller talks to. Its parts depend on these interfaces, never on the concrete
 * `JobsClient` or `Store`, so each part can be tested against a small fake.
 */

export interface JobsApi {
  poll(jobId: string): Promise<PollOutcome>;
  probeAuth(): Promise<"ok" | "auth" | "down">;
  /** Aborts the requests in flight (shutdown deadline); they end as transient "aborted". */
  abortInFlight?(): void;
}

/** The Redis calls of the poll loop; `Store` implements it. Each is one round trip. */
export interface PollerStore {
  claim(now: number, limit: number, leaseMs: number): Promise<ClaimResult>;
  apply(writes: readonly DecisionWrite[], now: number): Promise<ApplyCode[]>;
  release(items: ReadonlyArray<{ id: string; lease: number; dueAt: number }>): Promise<number>;
  intake(limit: number, reconcile: boolean, mayDiff: boolean, now: number): Promise<IntakeResult>;
  reject(
    member: string,
    lastSequence: number,
    eventFor: (sequence: number) => AnyCloudEvent,
  ): Promise<boolean>;
  expire(now: number, limit: number): Promise<number>;
}

export interface PollerSettings extends DecideSettings {
  concurrency: number;
  leaseMs: number;
  claimBatch: number;
  intakeIntervalMs: number;
  idleWakeMs: number;
  authRetryMs: number;
  shutdownTimeoutMs: number;
  /** How often the pending set is fully reconciled even when its size did not change. */
  reconcileIntervalMs: number;
  circuitThreshold: number;
  circuitMinCooldownMs: number;
  circuitMaxCooldownMs: number;
  /**
   * The longest one poll may take, retries included; also the hand-back threshold: a job with
   * less lease left is handed back.
   */
  pollBudgetMs: number;
  /** predictive: decide gets the learned durations; backoff (or absent): it never sees them. */
  schedule?: "predictive" | "backoff";
  /** How often learned durations are merged into Redis and read back (default 5000). */
  scheduleSyncMs?: number;
}

/** The subset of `Metrics` the loop reports to; every field optional so tests can omit it. */
export interface LoopMetrics {
  polls?: { inc(labels: { outcome: string }, value?: number): void };
  pollDuration?: { observe(labels: { outcome: string }, value: number): void };
  events?: { inc(labels: { type: string }, value?: number): void };
  redisErrors?: { inc(labels: { op: string }): void };
  authOk?: { set(value: number): void };
  circuitOpen?: { set(value: number): void };
  detectionDelay?: { observe(labels: { type: string }, value: number): void };
  scheduled?: { inc(labels: { schedule: string }, value?: number): void };
}

export interface PollerDeps {
  store: PollerStore;
  api: JobsApi;
  settings: PollerSettings;
  logger: Logger;
  metrics?: LoopMetrics;
  clock?: () => number;
  random?: () => number;
  /** Called before each auth probe, e.g. to re-read a rotated key file. */
  onAuthRetry?: () => void;
  /** The request budget shared by every replica, as the Gate and the Claimer see it. */
  budget?: BudgetView;
  /** Where learned phase durations are shared; without it nothing is learned (all backoff). */
  durationStore?: DurationSync;
}

/** What the loop sees of the request budget (`RequestBudget`, src/poller/budget.ts). */
export interface BudgetView {
  /** A shared pause (a 429) holds every request back until `pausedUntil`. */
  paused(now: number): boolean;
  readonly pausedUntil: number;
  /** About how many requests may start within `horizonMs` (Infinity with no rate in force). */
  headroom(horizonMs: number, now: number): number;
  /** `listener` runs each time this replica hears of a new pause. */
  onPause(listener: () => void): void;
}
