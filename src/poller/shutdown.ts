import { shutdownPhases } from "../config/budgets.js";
import { sleep, type Wakeup } from "../lib/signal.js";
import type { Claimer } from "./claimer.js";
import type { DurationStats } from "./duration-stats.js";
import type { Housekeeping } from "./housekeeping.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Writer } from "./writer.js";

export interface ShutdownParts {
  lifecycle: Lifecycle;
  claimer: Pick<Claimer, "wake" | "handBackQueued" | "polling">;
  housekeeping: Pick<Housekeeping, "wake">;
  writer: Pick<Writer, "pending">;
  durations: Pick<DurationStats, "stop"> | null;
  /** Aborts every request still out (the API client's abortInFlight). */
  abortRequests: () => void;
  /** The claim, intake and expiry loops. */
  loops: readonly Promise<void>[];
  /** Fired whenever a poll or a write settles. */
  idle: Wakeup;
  clock: () => number;
  shutdownTimeoutMs: number;
}

/**
 * The graceful stop, in the order that loses nothing (phases in config/budgets.ts): stop
 * claiming and hand back what was claimed but not started; let polls in flight finish until the
 * drain deadline, then abort them (each hands its job back); give the loops a grace period for
 * the Redis call they may be in; wait for every decision to be written or given up on; publish
 * the last learned durations. Nothing is left in flight when it resolves.
 */
export async function shutDown(p: ShutdownParts): Promise<void> {
  const phases = shutdownPhases(p.shutdownTimeoutMs);
  p.lifecycle.setDraining();
  p.claimer.wake();
  p.housekeeping.wake();
  const deadline = p.clock() + phases.drainMs;
  await p.claimer.handBackQueued();
  while (p.claimer.polling > 0 && p.clock() < deadline) {
    await p.idle.wait(Math.max(1, deadline - p.clock()));
  }
  // Auth and circuit probes are aborted too.
  p.lifecycle.setAborting();
  p.abortRequests();
  while (p.claimer.polling > 0) await p.idle.wait(50);
  // A loop may be inside a Redis call or an API probe; it ends by itself, but shutdown does not
  // wait past its budget for it (it holds no lease and writes nothing that matters). The grace
  // timer is cancelled once the loops end: left running, it would keep the process alive for
  // the rest of the budget after everything else has closed.
  await bounded(
    Promise.allSettled(p.loops),
    Math.max(0, deadline - p.clock()) + phases.loopGraceMs,
  );
  while (p.writer.pending > 0) await p.idle.wait(20);
  // After the writes, so the changes of the last polls are learned too; one attempt, bounded.
  if (p.durations !== null) await bounded(p.durations.stop(), phases.loopGraceMs);
  p.lifecycle.setStopped();
}

/** Waits for `work`, but no longer than `ms`; the timer does not outlive the wait. */
async function bounded(work: Promise<unknown>, ms: number): Promise<void> {
  const timer = new AbortController();
  await Promise.race([work, sleep(ms, timer.signal)]);
  timer.abort();
}
