import type { Logger } from "pino";
import { sleep, Wakeup } from "../lib/signal.js";
import { Backoff } from "./backoff.js";
import type { Lifecycle } from "./lifecycle.js";
import { rejectionReason } from "./members.js";
import type { PollerStore } from "./ports.js";
import type { RedisHealth } from "./redis-health.js";
import { rejectedEvent } from "./rejected.js";

/**
 * An intake diff may take at most 1/DIFF_SHARE of wall time (see intakeLoop). One diff over
 * 100,000 members takes ~60 ms on a 2-core VM, so diffs run every ~360 ms and pickup stays well
 * under a second (1/10 gave a p99 of 0.9-1.05 s there).
 */
const DIFF_SHARE = 6;
/** New members scheduled per intake call, and states expired per expire call. */
const INTAKE_LIMIT = 1000;
const EXPIRE_LIMIT = 500;
const EXPIRE_EVERY_MS = 10_000;
/** The longest wait between intake calls while Redis fails. */
const INTAKE_RETRY_MAX_MS = 5000;

export interface HousekeepingSettings {
  intakeIntervalMs: number;
  reconcileIntervalMs: number;
  eventSource: string;
}

export interface HousekeepingDeps {
  store: Pick<PollerStore, "intake" | "reject" | "expire">;
  health: RedisHealth;
  lifecycle: Pick<Lifecycle, "running" | "stopSignal">;
  settings: HousekeepingSettings;
  clock: () => number;
  logger: Logger;
  /** New jobs were scheduled: the claim loop should look now. */
  onNewJobs: () => void;
  metrics?: { events?: { inc(labels: { type: string }, value?: number): void } };
}

/**
 * The work around the polls: intake of new pending members (with the rejection of members that
 * are not job ids) and the expiry of old job states. Each is a loop of its own that holds no
 * lease, so shutdown need not wait for it.
 */
export class Housekeeping {
  private readonly intakeWake = new Wakeup();
  private lastReconcile = 0;

  constructor(private readonly deps: HousekeepingDeps) {}

  /** Ends the intake loop's wait early (shutdown). */
  wake(): void {
    this.intakeWake.fire();
  }

  /**
   * Finds new pending members. Checking costs O(1) while nothing was added; finding what was
   * added is a server-side diff of the whole set, O(tracked jobs). Diffs are spaced so that they
   * take at most about 1/DIFF_SHARE of the time (measured by their own round trip): with
   * 100,000 tracked jobs a diff takes tens of ms and runs a few times a second; with millions it
   * runs every few seconds instead of saturating Redis.
   */
  async intakeLoop(): Promise<void> {
    const { settings: s, lifecycle, health, store, clock, logger: log } = this.deps;
    const backoff = new Backoff(
      Math.min(s.intakeIntervalMs * 2, INTAKE_RETRY_MAX_MS),
      INTAKE_RETRY_MAX_MS,
    );
    let nextDiffAt = 0;
    while (lifecycle.running) {
      const now = clock();
      const reconcile = now - this.lastReconcile >= s.reconcileIntervalMs;
      let more = false;
      let wait = s.intakeIntervalMs;
      try {
        const started = clock();
        const result = await health.run("intake", () =>
          store.intake(INTAKE_LIMIT, reconcile, now >= nextDiffAt, now),
        );
        if (result.diffed) {
          nextDiffAt = started + Math.max(0, clock() - started) * DIFF_SHARE;
        }
        if (reconcile && result.diffed) this.lastReconcile = now;
        backoff.reset();
        if (result.added > 0) {
          log.debug({ added: result.added }, "new jobs tracked");
          this.deps.onNewJobs();
        }
        if (result.untracked > 0) {
          log.info({ untracked: result.untracked }, "members removed by producers untracked");
        }
        for (const { member, lastSequence } of result.invalid) {
          await this.reject(member, lastSequence);
        }
        more = result.remaining > 0;
      } catch {
        wait = backoff.next();
      }
      if (!more) await this.intakeWake.wait(wait);
    }
  }

  /** Moves a member that is not a job id to the rejected set, with its `rejected` event. */
  private async reject(member: string, lastSequence: number): Promise<void> {
    const { store, health, clock, settings } = this.deps;
    const reason = rejectionReason(member);
    const eventFor = rejectedEvent(member, reason, settings.eventSource, clock());
    const moved = await health.run("reject", () => store.reject(member, lastSequence, eventFor));
    if (moved) {
      this.deps.metrics?.events?.inc({ type: "rejected" });
      // The member itself may be hostile (huge, control characters): log its length only.
      this.deps.logger.warn({ reason, length: member.length }, "pending member rejected");
    }
  }

  async expireLoop(): Promise<void> {
    const { lifecycle, health, store, clock } = this.deps;
    while (lifecycle.running) {
      try {
        let expired: number;
        do {
          expired = await health.run("expire", () => store.expire(clock(), EXPIRE_LIMIT));
        } while (expired === EXPIRE_LIMIT && lifecycle.running);
      } catch {
        // Counted by health; the next round retries.
      }
      await sleep(EXPIRE_EVERY_MS, lifecycle.stopSignal);
    }
  }
}
