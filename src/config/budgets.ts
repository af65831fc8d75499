import type { Config } from "./index.js";

/**
 * Every timing number the daemon derives from its configuration, named in one place. Each is a
 * rule between settings, not a setting of its own: change one here and every part that depends
 * on it follows.
 */

/**
 * How long the retries of one poll may go on. A poll and its retries end inside the lease
 * (config enforces timeout * 2 < lease): at most max(2 * timeout, lease / 2).
 */
export function retryBudgetMs(config: Pick<Config, "leaseMs" | "requestTimeoutMs">): number {
  return Math.max(
    config.requestTimeoutMs,
    Math.floor(config.leaseMs / 2) - config.requestTimeoutMs,
  );
}

/**
 * The longest one poll may take, retries included. It is also the hand-back threshold: a claimed
 * job with less lease left than this is handed back unpolled, since its poll could outlive the
 * lease and another replica could take the job over mid-poll.
 */
export function pollBudgetMs(config: Pick<Config, "leaseMs" | "requestTimeoutMs">): number {
  return retryBudgetMs(config) + config.requestTimeoutMs;
}

/** How often the pending set is fully reconciled even when its size did not change. */
export const RECONCILE_INTERVAL_MS = 60_000;

/**
 * Consecutive transient outcomes (across all jobs) that open the circuit: twice the requests
 * that can be out at once, so one burst of timeouts from a single slow moment does not open it.
 */
export function circuitThreshold(concurrency: number): number {
  return Math.max(20, concurrency * 2);
}

/** The circuit's first cooldown; each failed probe doubles it up to the maximum. */
export const CIRCUIT_MIN_COOLDOWN_MS = 1000;
export const CIRCUIT_MAX_COOLDOWN_MS = 30_000;

/**
 * The phases of a graceful stop, as offsets from its start within POLLER_SHUTDOWN_TIMEOUT_MS.
 * In order: in-flight polls may finish until `drainMs`, then the rest are aborted; the loops get
 * `loopGraceMs` more to end their Redis calls; decision writes are retried until `writesMs` and
 * then given up (nothing was written, the leases run out); the daemon closes the API pool, the
 * HTTP server and Redis by `daemonMs`, leaving the remainder for the process to exit.
 */
export interface ShutdownPhases {
  drainMs: number;
  loopGraceMs: number;
  writesMs: number;
  daemonMs: number;
}

export function shutdownPhases(shutdownTimeoutMs: number): ShutdownPhases {
  return {
    drainMs: shutdownTimeoutMs * 0.7,
    loopGraceMs: shutdownTimeoutMs * 0.1,
    writesMs: shutdownTimeoutMs * 0.8,
    daemonMs: shutdownTimeoutMs * 0.95,
  };
}
