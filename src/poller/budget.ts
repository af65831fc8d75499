import type { Logger } from "pino";
import type { RateLimitAdvice } from "../api/ratelimit.js";
import { coerceError } from "../lib/errors.js";
import type { BudgetReport, PermitSource, TakeReply } from "../store/budget.js";

/**
 * The client side of the request budget shared by every replica (see takePermits-1.lua): every
 * HTTP attempt takes a permit first. While a shared rate is in force, permits come from Redis in
 * small batches, so one round trip covers many requests, and are held for at most HOLD_MS: a
 * batch is spent at the pace it was granted, and a pause set by another replica reaches this
 * one within that time. While none is (no limit set, no 429 or rate-limit header heard yet),
 * Redis would grant every permit anyway: they are taken locally, and one call every BATCH_MS
 * while requests go out reports them and hears of a pause or a rate set elsewhere.
 *
 * Invariants: a caller waiting for a permit never spins (it waits on a timer set to when the
 * budget says permits exist, or to the pause's end); waiters are served in the order they
 * asked, which is the schedule order the loop claims in; only one Redis call is out at a time.
 */

/**
 * A batch is what the shared rate grants in this long, and a batch may be reserved that far
 * ahead (usable from its `readyAt`): one Redis call covers a batch even while replicas compete.
 */
export const BATCH_MS = 150;
/**
 * How far ahead of the bucket permits may be reserved: room for a batch of each of a few
 * replicas, so that one replica fetching ahead does not take every permit from one waiting.
 */
export const RESERVE_MS = 3 * BATCH_MS;
/** Held permits lapse this long after they became usable: unspent, they would make a burst later. */
export const HOLD_MS = 300;
/** The most permits one call takes (the no-limit case). */
export const MAX_BATCH = 64;
/** A pause when a 429 carries no Retry-After. */
export const DEFAULT_PAUSE_MS = 1000;
const MIN_RETRY_MS = 50;
const MAX_RETRY_MS = 2000;

export interface BudgetSettings {
  /** POLLER_RATE_LIMIT, requests/s; 0 = no fixed limit. */
  limit: number;
  /** POLLER_RATE_BURST, >= 1. */
  burst: number;
}

/** The subset of `Metrics` the budget reports to; every field optional. */
export interface BudgetMetrics {
  permits?: { inc(value?: number): void };
  waitSeconds?: { inc(value: number): void };
  rate?: { set(value: number): void };
  throttled?: { inc(value?: number): void };
  pauseSeconds?: { inc(value: number): void };
  redisErrors?: { inc(labels: { op: string }): void };
}

/** What one HTTP attempt's answer tells the budget. */
export interface AttemptAnswer {
  /** The HTTP status; undefined when no answer came (connection error, timeout). */
  status: number | undefined;
  /** From `Retry-After`, when the answer had one. */
  retryAfterMs?: number | undefined;
  /** From the rate-limit headers, when the answer had them. */
  advice?: RateLimitAdvice | null | undefined;
}

function emptyReport(): BudgetReport {
  return { ok: 0, sent: 0, throttled: false, pauseMs: 0, headerRate: 0 };
}

/** Permits to take per call at the shared rate `rate` (null: none in force). */
export function batchSize(rate: number | null, settings: BudgetSettings): number {
  if (rate === null) return MAX_BATCH;
  // With no fixed limit the bucket holds one second of the adapted rate (see the script).
  const bucket = settings.limit === 0 ? Math.max(settings.burst, rate) : settings.burst;
  const size = Math.ceil((rate * BATCH_MS) / 1000);
  return Math.max(1, Math.min(size, MAX_BATCH, Math.floor(bucket)));
}

/**
 * Permits granted to this replica and not spent yet, in batches: a batch is usable from its
 * `usableAt` (reserved permits lie in the future) and lapses `holdMs` after that.
 */
export class LocalPermits {
  private batches: Array<{ count: number; usableAt: number; expiresAt: number }> = [];

  constructor(private readonly holdMs: number) {}

  add(n: number, now: number, usableAt = now): void {
    if (n <= 0) return;
    const at = Math.max(now, usableAt);
    this.batches.push({ count: n, usableAt: at, expiresAt: at + this.holdMs });
  }

  /** Usable now. */
  available(now: number): number {
    this.prune(now);
    let n = 0;
    for (const b of this.batches) if (b.usableAt <= now) n += b.count;
    return n;
  }

  /** Usable now or reserved for later. */
  held(now: number): number {
    this.prune(now);
    let n = 0;
    for (const b of this.batches) n += b.count;
    return n;
  }

  /** When the next reserved batch becomes usable; null when none waits. */
  nextUsableAt(now: number): number | null {
    this.prune(now);
    let next: number | null = null;
    for (const b of this.batches) {
      if (b.usableAt > now && (next === null || b.usableAt < next)) next = b.usableAt;
    }
    return next;
  }

  take(now: number): boolean {
    this.prune(now);
    for (const b of this.batches) {
      if (b.usableAt <= now && b.count > 0) {
        b.count -= 1;
        return true;
      }
    }
    return false;
  }

  drop(): void {
    this.batches = [];
  }

  /** Runs on every request: allocates only when a batch is actually spent or lapsed. */
  private prune(now: number): void {
    for (const b of this.batches) {
      if (b.count === 0 || b.expiresAt <= now) {
        this.batches = this.batches.filter((x) => x.count > 0 && x.expiresAt > now);
        return;
      }
    }
  }
}

interface Waiter {
  since: number;
  resolve: (granted: boolean) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  timer: NodeJS.Timeout | undefined;
}

export interface RequestBudgetOptions {
  source: PermitSource;
  settings: BudgetSettings;
  clock?: () => number;
  metrics?: BudgetMetrics;
  logger?: Logger;
}

export class RequestBudget {
  readonly #source: PermitSource;
  readonly #settings: BudgetSettings;
  readonly #clock: () => number;
  readonly #metrics: BudgetMetrics | undefined;
  readonly #log: Logger | undefined;
  readonly #permits = new LocalPermits(HOLD_MS);
  #waiters: Waiter[] = [];
  #fetching = false;
  #timer: NodeJS.Timeout | undefined;
  #report: BudgetReport = emptyReport();
  /** Something the other replicas must hear now (a 429, a new header rate). */
  #urgent = false;
  #rate: number | null;
  #pauseUntil = 0;
  #pauseCountedUntil = 0;
  readonly #pauseListeners: Array<() => void> = [];
  #retryMs = MIN_RETRY_MS;
  /** Not before then does the budget have a batch to grant (its last `waitMs`). */
  #nextFetchAt = 0;
  #failing = false;
  #closed = false;
  /** With no rate in force: a report to Redis is due (see #syncSoon). */
  #syncDue = false;
  #syncTimer: NodeJS.Timeout | undefined;

  constructor(opts: RequestBudgetOptions) {
    this.#source = opts.source;
    this.#settings = opts.settings;
    this.#clock = opts.clock ?? Date.now;
    this.#metrics = opts.metrics;
    this.#log = opts.logger;
    this.#rate = opts.settings.limit > 0 ? opts.settings.limit : null;
    this.#metrics?.rate?.set(this.#rate ?? 0);
  }

  /** The shared rate last heard of, requests/s; null while none is in force. */
  get rate(): number | null {
    return this.#rate;
  }

  /** End of the shared pause as last heard of (ms); in the past when there is none. */
  get pausedUntil(): number {
    return this.#pauseUntil;
  }

  paused(now = this.#clock()): boolean {
    return now < this.#pauseUntil;
  }

  /** Callers waiting for a permit. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /**
   * About how many requests may start within `horizonMs`: what is held plus what the shared
   * rate grants meanwhile (Infinity with no rate in force). The loop claims no more than this,
   * so jobs wait in the schedule, in its order, rather than on a lease.
   */
  headroom(horizonMs: number, now = this.#clock()): number {
    if (now < this.#pauseUntil) return 0;
    if (this.#rate === null) return Number.POSITIVE_INFINITY;
    return this.#permits.held(now) + (this.#rate * horizonMs) / 1000 - this.#waiters.length;
  }

  /** Takes a held permit if there is one; never waits. */
  tryTake(): boolean {
    if (this.#waiters.length > 0) return false;
    const now = this.#clock();
    if (now < this.#pauseUntil || !this.#take(now)) return false;
    this.#metrics?.permits?.inc();
    // Fetch the next batch before this one runs out, so steady demand rarely waits on Redis.
    if (
      this.#rate !== null &&
      this.#permits.held(now) < batchSize(this.#rate, this.#settings) / 2
    ) {
      this.#pump();
    }
    return true;
  }

  /** One permit, if one is usable now: with no rate in force every permit is. */
  #take(now: number): boolean {
    if (this.#rate === null) {
      this.#syncSoon();
    } else if (!this.#permits.take(now)) {
      return false;
    }
    this.#report.sent += 1;
    return true;
  }

  /** With no rate in force: report what was sent within BATCH_MS, and hear what changed. */
  #syncSoon(): void {
    if (this.#syncTimer !== undefined || this.#closed) return;
    this.#syncTimer = setTimeout(() => {
      this.#syncTimer = undefined;
      this.#syncDue = true;
      this.#pump();
    }, BATCH_MS);
    this.#syncTimer.unref();
  }

  /**
   * Resolves true once a permit is taken; false when `signal` aborts, `timeoutMs` passes first
   * (the caller's request could no longer end in time), or the budget closes.
   */
  acquire(signal?: AbortSignal, timeoutMs?: number): Promise<boolean> {
    if (this.#closed || signal?.aborted) return Promise.resolve(false);
    if (this.tryTake()) return Promise.resolve(true);
    if (timeoutMs !== undefined && timeoutMs <= 0) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const waiter: Waiter = {
        since: this.#clock(),
        resolve,
        signal,
        onAbort: undefined,
        timer: undefined,
      };
      const giveUp = () => {
        const at = this.#waiters.indexOf(waiter);
        if (at !== -1) this.#waiters.splice(at, 1);
        this.#settle(waiter, false, this.#clock());
      };
      if (signal !== undefined) {
        waiter.onAbort = giveUp;
        signal.addEventListener("abort", giveUp, { once: true });
      }
      if (timeoutMs !== undefined) waiter.timer = setTimeout(giveUp, Math.ceil(timeoutMs));
      this.#waiters.push(waiter);
      this.#pump();
    });
  }

  /** Feeds one attempt's answer back: a 429 pauses every replica, headers set the rate. */
  record(answer: AttemptAnswer): void {
    if (this.#closed) return;
    const now = this.#clock();
    const r = this.#report;
    if (answer.status === 429) {
      this.#metrics?.throttled?.inc();
      r.throttled = true;
      this.#pause(answer.retryAfterMs ?? DEFAULT_PAUSE_MS, now);
    } else if (answer.status !== undefined) {
      r.ok += 1;
    }
    const advice = answer.advice;
    if (advice != null) {
      if (advice.rate !== undefined && advice.rate > 0) {
        const rate =
          this.#settings.limit > 0 ? Math.min(advice.rate, this.#settings.limit) : advice.rate;
        r.headerRate = advice.rate;
        // Heard on every answer; only a change is worth a round trip of its own.
        if (this.#rate === null || Math.abs(rate - this.#rate) > this.#rate * 0.01) {
          this.#urgent = true;
        }
      }
      if (advice.pauseMs !== undefined && advice.pauseMs > 0) this.#pause(advice.pauseMs, now);
    }
    if (this.#urgent) this.#pump();
  }

  /** `listener` runs, synchronously, each time this replica hears of a new pause. */
  onPause(listener: () => void): void {
    this.#pauseListeners.push(listener);
  }

  /** Ends every wait with false and stops asking Redis. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    clearTimeout(this.#syncTimer);
    this.#syncTimer = undefined;
    for (const w of this.#waiters.splice(0)) this.#settle(w, false, this.#clock());
  }

  #pause(ms: number, now: number): void {
    this.#report.pauseMs = Math.max(this.#report.pauseMs, ms);
    // Held permits would only earn more 429s: this replica stops at once, the others when they
    // hear of the pause (within HOLD_MS).
    this.#permits.drop();
    this.#notePause(now + ms, now);
    this.#urgent = true;
  }

  #notePause(until: number, now: number): void {
    const began = until > now && this.#pauseUntil <= now;
    if (until > this.#pauseUntil) this.#pauseUntil = until;
    if (began) for (const listener of this.#pauseListeners) listener();
    const from = Math.max(now, this.#pauseCountedUntil);
    if (until > from) {
      this.#metrics?.pauseSeconds?.inc((until - from) / 1000);
      this.#pauseCountedUntil = until;
    }
  }

  #settle(w: Waiter, granted: boolean, now: number): void {
    if (w.onAbort !== undefined) w.signal?.removeEventListener("abort", w.onAbort);
    clearTimeout(w.timer);
    if (granted) {
      this.#metrics?.permits?.inc();
      const waited = now - w.since;
      if (waited > 0) this.#metrics?.waitSeconds?.inc(waited / 1000);
    }
    w.resolve(granted);
  }

  /** Starts one Redis call if one is needed and none is out or scheduled. */
  #pump(): void {
    if (this.#closed || this.#fetching) return;
    const pressing = this.#urgent || this.#syncDue;
    if (this.#timer !== undefined && !pressing) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const now = this.#clock();
    // With no rate in force there is nothing to fetch, only news to exchange.
    const local = this.#rate === null;
    const batch = local ? 0 : batchSize(this.#rate, this.#settings);
    const reserved = this.#permits.nextUsableAt(now);
    const needed =
      !local &&
      ((this.#waiters.length > 0 && reserved === null) || this.#permits.held(now) < batch / 2);
    if (!needed && !pressing) {
      // Waiters are covered by permits reserved for later: wake them then.
      if (this.#waiters.length > 0 && reserved !== null) this.#wake(reserved - now);
      return;
    }
    if (now < this.#nextFetchAt && !pressing) {
      // Asking before the budget has a batch would cost a round trip for nothing.
      this.#wake(this.#nextFetchAt - now);
      return;
    }
    if (now < this.#pauseUntil && !pressing) {
      this.#wake(this.#pauseUntil - now);
      return;
    }
    const want = now < this.#pauseUntil ? 0 : batch;
    const report = this.#report;
    this.#report = emptyReport();
    this.#urgent = false;
    this.#syncDue = false;
    this.#fetching = true;
    this.#source
      .take({
        now,
        want,
        limit: this.#settings.limit,
        burst: this.#settings.burst,
        reserveMs: RESERVE_MS,
        ...report,
      })
      .then(
        (reply) => {
          this.#fetching = false;
          this.#granted(reply, want);
        },
        (err: unknown) => {
          this.#fetching = false;
          this.#failed(err, report);
        },
      )
      .finally(() => {
        // News that arrived while the call was out (a 429) goes out now.
        if (this.#urgent || this.#syncDue) this.#pump();
      });
  }

  #granted(reply: TakeReply, want: number): void {
    if (this.#closed) return;
    const now = this.#clock();
    if (this.#failing) {
      this.#failing = false;
      this.#log?.info("request budget: Redis answers again");
    }
    this.#retryMs = MIN_RETRY_MS;
    if (reply.rate !== this.#rate) {
      this.#rate = reply.rate;
      this.#metrics?.rate?.set(reply.rate ?? 0);
    }
    this.#notePause(reply.pauseUntil, now);
    this.#permits.add(reply.granted, now, reply.readyAt);
    this.#nextFetchAt = reply.granted < want ? now + reply.waitMs : 0;
    this.#serve(now);
    if (this.#waiters.length === 0) return;
    // Demand is left: wake when reserved permits become usable, else ask again when the
    // budget says more exist (or the pause ends).
    const reserved = this.#permits.nextUsableAt(now);
    if (reserved !== null) {
      this.#wake(reserved - now);
      return;
    }
    const paused = this.#pauseUntil - now;
    const wait = reply.granted < want || want === 0 ? Math.max(reply.waitMs, paused, 1) : 0;
    if (wait > 0) this.#wake(wait);
    else this.#pump();
  }

  /** Hands usable permits to waiters, in the order they asked. */
  #serve(now: number): void {
    if (now < this.#pauseUntil) return;
    while (this.#waiters.length > 0 && this.#take(now)) {
      this.#settle(this.#waiters.shift() as Waiter, true, now);
    }
  }

  #failed(err: unknown, report: BudgetReport): void {
    if (this.#closed) return;
    this.#metrics?.redisErrors?.inc({ op: "budget" });
    if (!this.#failing) {
      this.#failing = true;
      this.#log?.error({ err: coerceError(err) }, "request budget: Redis call failed; retrying");
    }
    // What was not delivered is delivered with the next call: a 429 must still pause everyone.
    const r = this.#report;
    r.ok += report.ok;
    r.sent += report.sent;
    r.throttled ||= report.throttled;
    r.pauseMs = Math.max(r.pauseMs, report.pauseMs);
    if (r.headerRate === 0) r.headerRate = report.headerRate;
    this.#wake(this.#retryMs);
    this.#retryMs = Math.min(this.#retryMs * 2, MAX_RETRY_MS);
  }

  #wake(ms: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        this.#serve(this.#clock());
        this.#pump();
      },
      Math.max(1, Math.ceil(ms)),
    );
    // Only a retry with nobody waiting may let the process exit.
    if (this.#waiters.length === 0) this.#timer.unref();
  }
}
