import type { Logger } from "pino";
import type { PollOutcome } from "../api/outcome.js";
import { isAlert, kindOfType } from "../events/cloudevents.js";
import { coerceError } from "../lib/errors.js";
import { sleep, Wakeup } from "../lib/signal.js";
import type { ClaimedJob, DecisionWrite, Store } from "../store/store.js";
import { ApplyCode, describeApplyCode } from "../store/store.js";
import type { RequestBudget } from "./budget.js";
import { Circuit } from "./circuit.js";
import { type DecideSettings, decide } from "./decide.js";
import { rejectionReason } from "./members.js";

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
  circuitMaxCooldownMs: number;
  /** The longest one poll may take, retries included: a job with less lease left is handed back. */
  pollBudgetMs: number;
}

export interface JobsApi {
  poll(jobId: string, opts?: { signal?: AbortSignal }): Promise<PollOutcome>;
  probeAuth(): Promise<"ok" | "auth" | "down">;
  /** Aborts the requests in flight (shutdown deadline); they end as transient "aborted". */
  abortInFlight?(): void;
}

/** The subset of `Metrics` the loop reports to; every field optional so tests can omit it. */
export interface LoopMetrics {
  polls?: { inc(labels: { outcome: string }, value?: number): void };
  pollDuration?: { observe(labels: { outcome: string }, value: number): void };
  events?: { inc(labels: { type: string }, value?: number): void };
  redisErrors?: { inc(labels: { op: string }): void };
  authOk?: { set(value: number): void };
  circuitOpen?: { set(value: number): void };
}

export interface PollerDeps {
  store: Store;
  api: JobsApi;
  settings: PollerSettings;
  logger: Logger;
  metrics?: LoopMetrics;
  clock?: () => number;
  random?: () => number;
  /** Called before each auth probe, e.g. to re-read a rotated key file. */
  onAuthRetry?: () => void;
  /**
   * The request budget shared by every replica: while its pause holds, nothing is claimed, and
   * no more is claimed than it can soon pay for, so jobs wait in the schedule, in its order.
   */
  budget?: Pick<RequestBudget, "paused" | "pausedUntil" | "headroom">;
}

const MAX_APPLY_CALLS = 2;
/**
 * An intake diff may take at most 1/DIFF_SHARE of wall time (see intakeLoop). One diff over
 * 100,000 members takes ~60 ms on a 2-core VM, so diffs run every ~360 ms and pickup stays well
 * under a second (1/10 gave a p99 of 0.9-1.05 s there).
 */
const DIFF_SHARE = 6;
const MAX_APPLY_BATCH = 256;
/** The claim queue covers this much polling at the recent pace (see queueDepth). */
const CLAIM_COVER_MS = 5;
/** No more is claimed than the request budget grants in this long (see claimLoop). */
const BUDGET_COVER_MS = 500;

interface Pending {
  write: DecisionWrite;
  /** Called once with the write's code, or null when it was given up on at shutdown. */
  done: (code: ApplyCode | null) => void;
}

/**
 * The poll loop: claim due jobs under a lease, poll them with bounded concurrency, decide with
 * the pure rules, and write each decision atomically. The daemon keeps no per-job state of its
 * own beyond what is in flight; everything else lives in Redis.
 */
export class Poller {
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly log: Logger;
  private readonly queue: ClaimedJob[] = [];
  /** Jobs whose request is out. */
  private readonly inFlight = new Set<ClaimedJob>();
  /** Set when the shutdown budget ran out and the requests still out were aborted. */
  private requestsAborted = false;
  /** Decisions made but not yet written: their HTTP slot is already free for the next job. */
  private writesPending = 0;
  private readonly claimWake = new Wakeup();
  private readonly intakeWake = new Wakeup();
  private readonly idle = new Wakeup();
  private readonly stopController = new AbortController();
  private readonly circuit: Circuit;
  private applyQueue: Pending[] = [];
  /** Polls started so far, and their smoothed pace (see queueDepth). */
  private started = 0;
  private pace = { at: 0, started: 0, perMs: 0 };
  /** applyDecisions calls in flight (at most MAX_APPLY_CALLS). */
  private applying = 0;
  private loops: Promise<void>[] = [];
  private stopPromise: Promise<void> | null = null;
  private lastReconcile = 0;
  private stopping = false;
  private authOk = true;
  private redisOk = true;
  /** Redis calls begun so far, and the number of the one that last set redisOk. */
  private redisCalls = 0;
  private redisStateFrom = 0;
  private lastRedisError: string | null = null;

  constructor(private readonly deps: PollerDeps) {
    this.clock = deps.clock ?? Date.now;
    this.random = deps.random ?? Math.random;
    this.log = deps.logger;
    this.circuit = new Circuit({
      threshold: deps.settings.circuitThreshold,
      minCooldownMs: 1000,
      maxCooldownMs: deps.settings.circuitMaxCooldownMs,
    });
  }

  start(): void {
    if (this.loops.length > 0) return;
    this.loops = [
      this.guard("claim", () => this.claimLoop()),
      this.guard("intake", () => this.intakeLoop()),
      this.guard("expire", () => this.expireLoop()),
    ];
  }

  /** True while the API key is accepted; false during an auth pause. */
  get apiKeyAccepted(): boolean {
    return this.authOk;
  }

  get redisHealthy(): { ok: boolean; reason: string | null } {
    return { ok: this.redisOk, reason: this.redisOk ? null : this.lastRedisError };
  }

  get circuitOpen(): boolean {
    return this.circuit.state === "open";
  }

  /** Polling is paused: the key was rejected, the API is failing for every job, or a 429. */
  private paused(): boolean {
    return !this.authOk || this.circuit.state === "open" || this.budgetPaused();
  }

  private budgetPaused(): boolean {
    return this.deps.budget?.paused(this.clock()) === true;
  }

  get leases(): number {
    return this.queue.length + this.inFlight.size + this.writesPending;
  }

  /** Polls whose request is out. */
  get requestsInFlight(): number {
    return this.inFlight.size;
  }

  /**
   * Stops claiming, lets in-flight polls finish within the shutdown timeout, hands back the
   * rest, and waits for every decision to be written. Safe to call more than once.
   */
  stop(): Promise<void> {
    this.stopPromise ??= this.shutdown();
    return this.stopPromise;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    this.stopStartedAt = this.clock();
    this.stopController.abort();
    this.claimWake.fire();
    this.intakeWake.fire();
    const deadline = this.clock() + this.deps.settings.shutdownTimeoutMs * 0.7;
    // Jobs claimed but not started go straight back.
    const queued = this.queue.splice(0);
    await this.releaseQuietly(queued);
    while (this.inFlight.size > 0 && this.clock() < deadline) {
      await this.idle.wait(Math.max(1, deadline - this.clock()));
    }
    // Whatever is still running is aborted and handed back by its worker.
    // Abort whatever is still out, auth and circuit probes included.
    this.requestsAborted = true;
    this.deps.api.abortInFlight?.();
    while (this.inFlight.size > 0) await this.idle.wait(50);
    // A loop may be inside a Redis call or an API probe; it ends by itself, but shutdown does
    // not wait past its budget for it (it holds no lease and writes nothing that matters).
    // The grace timer is cancelled once the loops end: left running, it would keep the process
    // alive for the rest of the budget after everything else has closed.
    const grace = new AbortController();
    await Promise.race([
      Promise.allSettled(this.loops),
      sleep(
        Math.max(0, deadline - this.clock()) + this.deps.settings.shutdownTimeoutMs * 0.1,
        grace.signal,
      ),
    ]);
    grace.abort();
    while (this.writesPending > 0) await this.idle.wait(20);
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

  /** Numbers a Redis call as it begins, for markRedis. */
  private redisCallStarts(): number {
    this.redisCalls += 1;
    return this.redisCalls;
  }

  /**
   * Records how Redis call number `call` ended. The call begun last decides whether Redis
   * counts as healthy: ioredis hands back a pipeline's replies only when the whole pipeline is
   * done, so a reply that arrived before a black hole can land after a later call's timeout,
   * and must not make readiness say "up" again.
   */
  private markRedis(ok: boolean, op: string, call: number, err?: unknown): void {
    if (!ok) this.deps.metrics?.redisErrors?.inc({ op });
    if (call < this.redisStateFrom) return;
    this.redisStateFrom = call;
    if (!ok) {
      this.lastRedisError = coerceError(err).message;
      if (this.redisOk) this.log.error({ err: coerceError(err), op }, "redis call failed");
    } else if (!this.redisOk) {
      this.log.info({ op }, "redis answers again");
    }
    this.redisOk = ok;
  }

  // ---- claiming --------------------------------------------------------------------------

  private async claimLoop(): Promise<void> {
    const s = this.deps.settings;
    let redisBackoff = 100;
    while (!this.stopping) {
      if (!this.authOk) {
        await this.authPause();
        continue;
      }
      if (this.circuit.state === "open") {
        await this.circuitProbe();
        continue;
      }
      const budget = this.deps.budget;
      if (budget?.paused(this.clock())) {
        // A 429 paused every replica: claim nothing until the pause ends.
        await this.claimWake.wait(Math.max(1, budget.pausedUntil - this.clock()));
        continue;
      }
      // Keep enough claimed beyond the concurrency that workers never wait on Redis, and claim
      // before the queue runs dry, in batches big enough to be worth a round trip. With a
      // request budget, claim no more than it grants soon: the rest waits in the schedule,
      // most overdue first, instead of on a lease here.
      let room =
        s.concurrency + this.queueDepth(this.clock()) - this.queue.length - this.inFlight.size;
      let worth = Math.max(1, Math.min(s.claimBatch, s.concurrency) / 2);
      if (budget !== undefined) {
        // At least one: a job waiting is what makes the budget ask for the next permit.
        const affordable = Math.max(1, Math.floor(budget.headroom(BUDGET_COVER_MS, this.clock())));
        room = Math.min(room, affordable - this.queue.length);
        worth = Math.min(worth, Math.ceil(affordable / 2));
      }
      if (room < worth) {
        await this.claimWake.wait(s.idleWakeMs);
        continue;
      }
      let claimed: Awaited<ReturnType<Store["claim"]>>;
      const now = this.clock();
      const call = this.redisCallStarts();
      try {
        claimed = await this.deps.store.claim(now, Math.min(room, s.claimBatch), s.leaseMs);
        this.markRedis(true, "claim", call);
        redisBackoff = 100;
      } catch (err) {
        this.markRedis(false, "claim", call, err);
        await this.claimWake.wait(redisBackoff);
        redisBackoff = Math.min(redisBackoff * 2, 2000);
        continue;
      }
      if (this.stopping) {
        await this.releaseQuietly(claimed.jobs);
        break;
      }
      if (this.paused()) {
        // The pause began while this claim was out: hand the jobs back rather than sit on them.
        await this.releaseQuietly(claimed.jobs);
        continue;
      }
      this.queue.push(...claimed.jobs);
      this.dispatch();
      if (claimed.jobs.length === 0) {
        const untilDue = claimed.nextDueAt === null ? s.idleWakeMs : claimed.nextDueAt - now;
        await this.claimWake.wait(Math.min(Math.max(untilDue, 1), s.idleWakeMs));
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

  private dispatch(): void {
    const s = this.deps.settings;
    // Backpressure: while Redis is slow or down, decisions pile up unwritten; stop polling
    // rather than hold an unbounded number of them.
    while (
      this.inFlight.size < s.concurrency &&
      this.queue.length > 0 &&
      this.writesPending < s.concurrency * 2 &&
      !this.stopping
    ) {
      if (this.paused()) {
        void this.releaseQuietly(this.queue.splice(0));
        break;
      }
      const job = this.queue.shift() as ClaimedJob;
      // A job that waited in the queue too long could not finish its poll inside its lease:
      // another replica might take it over mid-poll. Hand it back for a fresh claim instead.
      if (job.lease - this.clock() < s.pollBudgetMs) {
        this.deps.metrics?.polls?.inc({ outcome: "handed_back" });
        void this.releaseQuietly([job]);
        continue;
      }
      this.inFlight.add(job);
      this.started += 1;
      void this.work(job).finally(() => {
        this.inFlight.delete(job);
        this.idle.fire();
        this.dispatch();
        this.claimWake.fire();
      });
    }
  }

  // ---- one poll --------------------------------------------------------------------------

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
      await this.releaseQuietly([job]);
      return;
    }
    const m = this.deps.metrics;
    m?.pollDuration?.observe({ outcome: outcome.kind }, (this.clock() - started) / 1000);

    if (this.requestsAborted) {
      m?.polls?.inc({ outcome: "handed_back" });
      await this.releaseQuietly([job]);
      return;
    }
    if (outcome.kind === "auth") {
      m?.polls?.inc({ outcome: "auth" });
      this.enterAuthPause(outcome.status);
      // The key is wrong for everyone: this job is handed back untouched, no event.
      await this.releaseQuietly([job]);
      return;
    }
    if (outcome.kind === "transient" && outcome.throttled === true) {
      // The quota refused, not the job: no decision is written (no failure is counted towards
      // poll_failed) and the circuit hears nothing. The job goes back, due now; the shared
      // pause keeps every replica from claiming it again before the API wants.
      m?.polls?.inc({ outcome: "throttled" });
      await this.releaseQuietly([job]);
      return;
    }
    if (outcome.kind === "transient") {
      if (this.circuit.recordFailure(this.clock())) {
        this.deps.metrics?.circuitOpen?.set(1);
        this.log.warn(
          { reason: outcome.reason },
          "API failing for every job: circuit open, polling paused",
        );
        // Claimed jobs waiting for a worker go back rather than sit on their leases.
        void this.releaseQuietly(this.queue.splice(0));
      }
    } else {
      this.circuit.recordSuccess();
    }

    const now = this.clock();
    let decision: ReturnType<typeof decide>;
    try {
      decision = decide({
        jobId: job.id,
        state: job.state,
        outcome,
        now,
        random: this.random(),
        settings: this.deps.settings,
      });
    } catch (err) {
      // A bug or an unreadable stored value: never crash the daemon over one job.
      this.log.error({ err: coerceError(err), jobId: job.id }, "decision failed; job handed back");
      await this.releaseQuietly([job]);
      return;
    }
    if (job.stateReset) {
      this.log.error({ jobId: job.id }, "stored job state was unreadable; a new history starts");
    }
    this.writesPending += 1;
    this.write(
      {
        id: job.id,
        lease: job.lease,
        expectedVersion: job.state.version,
        state: decision.state,
        nextDueAt: decision.nextDueAt,
        events: decision.events,
      },
      (code) => {
        this.writesPending -= 1;
        try {
          this.report(job, outcome, decision, code);
        } finally {
          // Whatever reporting did, the slot and the claim loop must move on.
          this.idle.fire();
          this.dispatch();
          this.claimWake.fire();
        }
      },
    );
  }

  private report(
    job: ClaimedJob,
    outcome: Exclude<PollOutcome, { kind: "auth" }>,
    decision: ReturnType<typeof decide>,
    code: ApplyCode | null,
  ): void {
    const m = this.deps.metrics;
    if (code === null) {
      m?.polls?.inc({ outcome: "not_written" });
      return;
    }
    if (code !== ApplyCode.Written) {
      m?.polls?.inc({ outcome: code === ApplyCode.LeaseLost ? "lease_lost" : "conflict" });
      this.log.warn({ jobId: job.id, code }, `decision dropped: ${describeApplyCode(code)}`);
      return;
    }
    m?.polls?.inc({ outcome: decision.verdict === "stale" ? "stale" : outcome.kind });
    for (const event of decision.events) {
      const kind = kindOfType(event.type);
      m?.events?.inc({ type: kind ?? "unknown" });
      const fields = {
        jobId: job.id,
        eventId: event.id,
        type: event.type,
        sequence: event.sequence,
      };
      if (kind !== undefined && isAlert(kind)) this.log.warn(fields, "alert event emitted");
      else this.log.info(fields, "event emitted");
    }
    if (outcome.kind === "invalid") {
      this.log.warn({ jobId: job.id, reason: outcome.reason }, "invalid API response");
    }
  }

  // ---- writing decisions -----------------------------------------------------------------

  /**
   * Queues a decision. Writes are batched naturally: while one applyDecisions call is out, the
   * decisions that arrive meanwhile go together in the next one. `done` gets null when the
   * write was given up on at shutdown with Redis unreachable (nothing was written, so the job
   * is simply polled again when its lease runs out). A callback rather than a promise: this
   * runs once per poll.
   */
  private write(write: DecisionWrite, done: Pending["done"]): void {
    this.applyQueue.push({ write, done });
    // Decisions made in the same turn of the event loop (many responses arrive together)
    // go out in one call: the flush waits for the turn to end.
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.scheduledFlush);
    }
  }

  private flushScheduled = false;
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
    while (this.applying < MAX_APPLY_CALLS && this.applyQueue.length > 0) {
      const batch = this.applyQueue.splice(0, MAX_APPLY_BATCH);
      this.applying += 1;
      void this.applyBatch(batch).finally(() => {
        this.applying -= 1;
        this.flush();
        this.idle.fire();
      });
    }
  }

  private async applyBatch(batch: Pending[]): Promise<void> {
    let backoff = 50;
    for (;;) {
      const call = this.redisCallStarts();
      try {
        const codes = await this.deps.store.apply(
          batch.map((p) => p.write),
          this.clock(),
        );
        this.markRedis(true, "apply", call);
        for (let i = 0; i < batch.length; i++) this.settle(batch[i], codes[i] ?? null);
        return;
      } catch (err) {
        this.markRedis(false, "apply", call, err);
        // Retrying is safe: the script is compare-and-set. Give up only at shutdown.
        if (this.stopping && this.stopDeadlinePassed()) {
          for (const p of batch) this.settle(p, null);
          return;
        }
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  /** One decision's callback; whatever it throws must not reach the rest of its batch. */
  private settle(pending: Pending | undefined, code: ApplyCode | null): void {
    try {
      pending?.done(code);
    } catch (err) {
      this.log.error({ err: coerceError(err) }, "handling a written decision failed");
    }
  }

  private stopStartedAt: number | null = null;

  /** Writes are given up on (nothing was written; leases run out) past 80% of the budget. */
  private stopDeadlinePassed(): boolean {
    const started = this.stopStartedAt ?? this.clock();
    return this.clock() - started > this.deps.settings.shutdownTimeoutMs * 0.8;
  }

  private async releaseQuietly(jobs: readonly ClaimedJob[]): Promise<void> {
    if (jobs.length === 0) return;
    const now = this.clock();
    const call = this.redisCallStarts();
    try {
      await this.deps.store.release(jobs.map((j) => ({ id: j.id, lease: j.lease, dueAt: now })));
    } catch (err) {
      // Not fatal: an unreleased lease simply runs out after POLLER_LEASE_MS.
      this.markRedis(false, "release", call, err);
    }
  }

  // ---- pauses ----------------------------------------------------------------------------

  private enterAuthPause(status: number): void {
    if (!this.authOk) return;
    this.authOk = false;
    this.deps.metrics?.authOk?.set(0);
    this.log.error(
      { status, retryInMs: this.deps.settings.authRetryMs },
      "API key rejected: polling paused for all jobs",
    );
    // Jobs claimed but not started go back untouched.
    const queued = this.queue.splice(0);
    void this.releaseQuietly(queued);
  }

  private async authPause(): Promise<void> {
    await sleep(this.deps.settings.authRetryMs, this.stopController.signal);
    if (this.stopping) return;
    this.deps.onAuthRetry?.();
    const probe = await this.deps.api.probeAuth().catch(() => "down" as const);
    if (probe === "ok") {
      this.authOk = true;
      this.deps.metrics?.authOk?.set(1);
      this.log.info("API key accepted again: polling resumed");
    } else {
      this.log.warn({ probe }, "API key still rejected");
    }
  }

  private async circuitProbe(): Promise<void> {
    const wait = this.circuit.waitMs(this.clock());
    if (wait > 0) {
      await sleep(wait, this.stopController.signal);
      return;
    }
    const probe = await this.deps.api.probeAuth().catch(() => "down" as const);
    if (probe === "down") {
      this.circuit.probeFailed(this.clock());
      this.log.warn({ nextProbeInMs: this.circuit.waitMs(this.clock()) }, "API still failing");
      return;
    }
    this.circuit.probeSucceeded();
    this.deps.metrics?.circuitOpen?.set(0);
    this.log.info("API answers again: circuit closed");
    if (probe === "auth") this.enterAuthPause(401);
  }

  // ---- intake and housekeeping -----------------------------------------------------------

  /**
   * Finds new pending members. Checking costs O(1) while nothing was added; finding what was
   * added is a server-side diff of the whole set, O(tracked jobs). Diffs are spaced so that they
   * take at most about 1/DIFF_SHARE of the time (measured by their own round trip): with
   * 100,000 tracked jobs a diff takes tens of ms and runs a few times a second; with millions it
   * runs every few seconds instead of saturating Redis.
   */
  private async intakeLoop(): Promise<void> {
    const s = this.deps.settings;
    let backoff = s.intakeIntervalMs;
    let nextDiffAt = 0;
    while (!this.stopping) {
      const now = this.clock();
      const reconcile = now - this.lastReconcile >= s.reconcileIntervalMs;
      let more = false;
      let call = this.redisCallStarts();
      try {
        const started = this.clock();
        const result = await this.deps.store.intake(1000, reconcile, now >= nextDiffAt);
        if (result.diffed) {
          nextDiffAt = started + Math.max(0, this.clock() - started) * DIFF_SHARE;
        }
        if (reconcile && result.diffed) this.lastReconcile = now;
        this.markRedis(true, "intake", call);
        backoff = s.intakeIntervalMs;
        if (result.added > 0) {
          this.log.debug({ added: result.added }, "new jobs tracked");
          this.claimWake.fire();
        }
        if (result.untracked > 0) {
          this.log.info({ untracked: result.untracked }, "members removed by producers untracked");
        }
        for (const { member, lastSequence } of result.invalid) {
          const reason = rejectionReason(member);
          call = this.redisCallStarts();
          const moved = await this.deps.store.reject(
            member,
            reason,
            lastSequence,
            s.eventSource,
            this.clock(),
          );
          if (moved) {
            this.deps.metrics?.events?.inc({ type: "rejected" });
            // The member itself may be hostile (huge, control characters): log its length only.
            this.log.warn({ reason, length: member.length }, "pending member rejected");
          }
        }
        more = result.remaining > 0;
      } catch (err) {
        this.markRedis(false, "intake", call, err);
        backoff = Math.min(backoff * 2, 5000);
      }
      if (!more) await this.intakeWake.wait(backoff);
    }
  }

  private async expireLoop(): Promise<void> {
    while (!this.stopping) {
      let call = this.redisCallStarts();
      try {
        while ((await this.deps.store.expire(this.clock(), 500)) === 500 && !this.stopping) {
          call = this.redisCallStarts();
        }
      } catch (err) {
        this.markRedis(false, "expire", call, err);
      }
      await sleep(10_000, this.stopController.signal);
    }
  }
}
