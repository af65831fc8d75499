import type { PollOutcome } from "../api/outcome.js";
import type { ApplyCode, ClaimResult, DecisionWrite, IntakeResult } from "../store/store.js";

/**
 * The two edges the poller talks to. Its parts depend on these interfaces, never on the concrete
 * `JobsClient` or `Store`, so each part can be tested against a small fake.
 */

export interface JobsApi {
  poll(jobId: string, opts?: { signal?: AbortSignal }): Promise<PollOutcome>;
  probeAuth(): Promise<"ok" | "auth" | "down">;
  /** Aborts the requests in flight (shutdown deadline); they end as transient "aborted". */
  abortInFlight?(): void;
}

/** The Redis calls of the poll loop; `Store` implements it. Each is one round trip. */
export interface PollerStore {
  claim(now: number, limit: number, leaseMs: number): Promise<ClaimResult>;
  apply(writes: readonly DecisionWrite[], now: number): Promise<ApplyCode[]>;
  release(items: ReadonlyArray<{ id: string; lease: number; dueAt: number }>): Promise<number>;
  intake(limit: number, reconcile: boolean, mayDiff?: boolean): Promise<IntakeResult>;
  reject(
    member: string,
    reason: string,
    lastSequence: number,
    source: string,
    now: number,
  ): Promise<boolean>;
  expire(now: number, limit: number): Promise<number>;
}
