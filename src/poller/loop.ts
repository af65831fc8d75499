import type { Logger } from "pino";
import type { PollOutcome } from "../api/outcome.js";
import { shutdownPhases } from "../config/budgets.js";
import { coerceError } from "../lib/errors.js";
import { Wakeup } from "../lib/signal.js";
import type { ClaimedJob } from "../store/store.js";
import { BudgetPauseInput } from "./budget-gate.js";
import { Claimer } from "./claimer.js";
import { type Decision, decide } from "./decide.js";
import { DurationStats } from "./duration-stats.js";
import { Gate } from "./gate.js";
import { Housekeeping } from "./housekeeping.js";
import { Lifecycle } from "./lifecycle.js";
import type { PollerDeps } from "./ports.js";
import { RedisHealth } from "./redis-health.js";
import { pollReport, reportWrite } from "./report.js";
import type { DurationSample } from "./schedule.js";
import { shutDown } from "./shutdown.js";
import { Writer } from "./writer.js";

export type { JobsApi, LoopMetrics, PollerDeps, PollerSettings, PollerStore } from "./ports.js";

/**
 * The poll loop: claim due jobs under a lease, poll them with bounded concurrency, decide with
 * the pure rules, and write each decision atomically. The daemon keeps no per-job state of its
 * own beyond what is in flight; everything else lives in Redis.
 *
 * This class only composes the parts (docs/architecture.md): the Claimer (claiming, the local
 * queue, hand-back), the Gate (may a request go out), the Writer (decision writes), Housekeeping
 * (intake, rejects, expiry), RedisHealth and the Lifecycle. What is its own is one poll: `work`.
 */
export class Poller {
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly log: Logger;
  private readonly lifecycle: Lifecycle;
  private readonly health: RedisHealth;
  private readonly gate: Gate;
  private readonly writer: Writer;
  private readonly claimer: Claimer;
  private readonly housekeeping: Housekeeping;
  /** Learned phase durations: fed by written changes, synced with Redis on its own timer. */
  readonly durations: DurationStats | null;
  /** Fired whenever a poll or a write settles: shutdown waits on it. */
  private readonly idle = new Wakeup();
  private loops: Promise<void>[] = [];
  private stopPromise: Promise<void> | null = null;

  constructor(private readonly deps: PollerDeps) {
    const s = deps.settings;
    const clock = deps.clock ?? Date.now;
    this.clock = clock;
    this.random = deps.random ?? Math.random;
    this.log = deps.logger;
    const logger = deps.logger;
    const metrics = deps.metrics;
    const phases = shutdownPhases(s.shutdownTimeoutMs);
    this.lifecycle = new Lifecycle(clock);
    this.health = new RedisHealth(logger, metrics, deps.redisConnectionUp);
    const budget = deps.budget;
    this.gate = new Gate(
      {
        api: deps.api,
        settings: s,
        logger,
        clock,
        ...(metrics ? { metrics } : {}),
        ...(deps.onAuthRetry ? { onAuthRetry: deps.onAuthRetry } : {}),
      },
      budget ? [(notify) => new BudgetPauseInput(budget, clock, notify)] : [],
    );
    this.writer = new Writer({
      store: deps.store,
      health: this.health,
      logger,
      clock,
      limit: s.concurrency * 2,
      mayGiveUp: () => (this.lifecycle.stoppingFor() ?? 0) > phases.writesMs,
      onSettled: () => this.idle.fire(),
    });
    this.claimer = new Claimer({
      store: deps.store,
      health: this.health,
      gate: this.gate,
      lifecycle: this.lifecycle,
      settings: { ...s, handBackBelowMs: s.pollBudgetMs },
      clock,
      work: (job) => this.work(job),
      writerFull: () => this.writer.full,
      onSlotFreed: () => this.idle.fire(),
      ...(metrics ? { metrics } : {}),
      ...(budget ? { affordable: (horizonMs: number) => budget.headroom(horizonMs, clock()) } : {}),
    });
    this.housekeeping = new Housekeeping({
      store: deps.store,
      health: this.health,
      lifecycle: this.lifecycle,
      settings: s,
      clock,
      logger,
      onNewJobs: () => this.claimer.wake(),
      ...(metrics ? { metrics } : {}),
    });
    const durationStore = deps.durationStore;
    this.durations =
      durationStore === undefined
        ? null
        : new DurationStats({
            store: {
              mergeAndRead: (batch, now) =>
                this.health.run("durations", () => durationStore.mergeAndRead(batch, now)),
            },
            syncIntervalMs: s.scheduleSyncMs ?? 5000,
            logger,
            clock,
          });
    // Jobs claimed but not started go back the moment polling pauses.
    this.gate.onClose(() => void this.claimer.handBackQueued());
  }

  start(): void {
    if (this.loops.length > 0) return;
    // Start order is the order of the first Redis calls, which RedisHealth numbers: expiry goes
    // first so that the claim and intake, which polling depends on, are the later-begun calls.
    this.loops = [
      this.guard("expire", () => this.housekeeping.expireLoop()),
      this.guard("claim", () => this.claimer.run()),
      this.guard("intake", () => this.housekeeping.intakeLoop()),
    ];
    // Its first sync reads what was learned before, so a restart schedules from it at once.
    this.durations?.start();
  }

  /** True while the API key is accepted; false during an auth pause. */
  get apiKeyAccepted(): boolean {
    return this.gate.apiKeyAccepted;
  }

  get redisHealthy(): { ok: boolean; reason: string | null } {
    return this.health.state;
  }

  get circuitOpen(): boolean {
    return this.gate.circuitOpen;
  }

  get leases(): number {
    return this.claimer.queued + this.claimer.polling + this.writer.pending;
  }

  /** Polls whose request is out. */
  get requestsInFlight(): number {
    return this.claimer.polling;
  }

  /**
   * Stops claiming, lets in-flight polls finish within the shutdown timeout, hands back the
   * rest, and waits for every decision to be written. Safe to call more than once.
   */
  stop(): Promise<void> {
    this.stopPromise ??= shutDown({
      lifecycle: this.lifecycle,
      claimer: this.claimer,
      housekeeping: this.housekeeping,
      writer: this.writer,
      durations: this.durations,
      abortRequests: () => this.deps.api.abortInFlight?.(),
      loops: this.loops,
      idle: this.idle,
      clock: this.clock,
      shutdownTimeoutMs: this.deps.settings.shutdownTimeoutMs,
    });
    return this.stopPromise;
  }

  private async guard(name: string, loop: () => Promise<void>): Promise<void> {
    try {
      await loop();
    } catch (err) {
      // The loops catch their own errors; reaching here is a bug, so say it loudly.
      this.log.fatal({ err: coerceError(err), loop: name }, "poller loop crashed");
      throw err;
    }
  }

  private readonly learn = (samples: readonly DurationSample[]): void =>
    this.durations?.record(samples);

  /**
   * Polls one job and decides. The HTTP slot is released as soon as the decision is made; the
   * write goes on in the background (batched with others) and the job's lease stays held
   * until it lands, so nobody else can poll the job meanwhile.
   */
  private async work(job: ClaimedJob): Promise<void> {
    const started = this.clock();
    let outcome: PollOutcome;
    try {
      outcome = await this.deps.api.poll(job.id);
    } catch (err) {
      // The client reports API problems as outcomes; a throw is ours. Hand the job back.
      this.log.error({ err: coerceError(err), jobId: job.id }, "poll crashed; job handed back");
      await this.claimer.handBack([job]);
      return;
    }
    const m = this.deps.metrics;
    m?.pollDuration?.observe({ outcome: outcome.kind }, (this.clock() - started) / 1000);

    if (this.lifecycle.requestsAborted) {
      m?.polls?.inc({ outcome: "handed_back" });
      await this.claimer.handBack([job]);
      return;
    }
    if (outcome.kind === "auth") m?.polls?.inc({ outcome: "auth" });
    this.gate.observe(outcome);
    if (outcome.kind === "auth") {
      // The key is wrong for everyone: this job is handed back untouched, no event.
      await this.claimer.handBack([job]);
      return;
    }
    if (outcome.kind === "transient" && outcome.throttled === true) {
      // The quota refused, not the job: no decision is written, so nothing counts towards
      // poll_failed. The job goes back due now; the shared pause keeps every replica from
      // claiming it again before the API wants.
      m?.polls?.inc({ outcome: "throttled" });
      await this.claimer.handBack([job]);
      return;
    }

    let decision: Decision;
    const now = this.clock();
    try {
      decision = decide({
        jobId: job.id,
        state: job.state,
        outcome,
        now,
        random: this.random(),
        settings: this.deps.settings,
        durations:
          this.deps.settings.schedule === "predictive"
            ? (this.durations?.snapshot() ?? null)
            : null,
      });
    } catch (err) {
      // A bug or an unreadable stored value: never crash the daemon over one job.
      this.log.error({ err: coerceError(err), jobId: job.id }, "decision failed; job handed back");
      await this.claimer.handBack([job]);
      return;
    }
    if (job.stateReset) {
      this.log.error({ jobId: job.id }, "stored job state was unreadable; a new history starts");
    }
    // The callback keeps only what reporting needs, not the response body or the old state.
    const report = pollReport(job, outcome, decision);
    this.writer.write(
      {
        id: job.id,
        lease: job.lease,
        expectedVersion: job.state.version,
        state: decision.state,
        nextDueAt: decision.nextDueAt,
        events: decision.events,
        alerts: decision.alerts,
      },
      (code) => {
        try {
          reportWrite(this.log, this.deps.metrics, report, decision, code, now, this.learn);
        } finally {
          // Whatever reporting did, the slot and the claim loop must move on.
          this.idle.fire();
          this.claimer.dispatch();
          this.claimer.wake();
        }
      },
    );
  }
}
