import type { RedisClient } from "./connection.js";
import { defineScripts, type ScriptCommands } from "./scripts.js";

/** What one replica saw since its last call, folded into the shared budget with the next take. */
export interface BudgetReport {
  /** Answers that came back without a 429. */
  ok: number;
  /** Requests sent (permits spent): granted permits may lapse unspent, so they are no measure. */
  sent: number;
  /** A 429 came back. */
  throttled: boolean;
  /** A pause asked for (Retry-After, or a rate-limit header's reset); 0 for none. */
  pauseMs: number;
  /** Requests/s named by the API's rate-limit headers; 0 for none. */
  headerRate: number;
}

export interface TakeRequest extends BudgetReport {
  now: number;
  /** Permits to take; 0 only reports. */
  want: number;
  /** POLLER_RATE_LIMIT, requests/s; 0 = no fixed limit. */
  limit: number;
  /** POLLER_RATE_BURST, >= 1. */
  burst: number;
  /** How far beyond the bucket permits may be reserved (usable from `readyAt`); default 0. */
  reserveMs?: number;
}

export interface TakeReply {
  granted: number;
  /** When fewer were granted than wanted: ms until the rest could be. */
  waitMs: number;
  /** The shared rate in force, requests/s; null when none is (every permit is granted). */
  rate: number | null;
  /** End of the shared pause in ms; 0 for none. */
  pauseUntil: number;
  /** When the granted permits may be used (ms): `now`, or later for reserved ones. */
  readyAt: number;
}

/** The budget's state is dropped after an hour without any replica asking. */
export const BUDGET_TTL_MS = 3_600_000;

/** The source of permits the client-side limiter draws from. */
export interface PermitSource {
  take(request: TakeRequest): Promise<TakeReply>;
}

/**
 * The request budget in Redis: one hash under the prefix (so it shares the hash tag on a
 * Cluster), changed only by the takePermits script. One call takes a batch of permits and
 * reports what the replica saw since its last call.
 */
export class BudgetStore implements PermitSource {
  private readonly scripts: ScriptCommands;

  constructor(
    redis: RedisClient,
    readonly key: string,
  ) {
    this.scripts = defineScripts(redis);
  }

  async take(r: TakeRequest): Promise<TakeReply> {
    const reply = (await this.scripts.takePermits(
      this.key,
      Math.round(r.now),
      r.want,
      r.limit,
      r.burst,
      r.ok,
      r.throttled ? 1 : 0,
      Math.max(0, Math.round(r.pauseMs)),
      r.headerRate,
      BUDGET_TTL_MS,
      Math.max(0, Math.round(r.reserveMs ?? 0)),
      r.sent,
    )) as [number, number, number, number, number];
    const [granted, waitMs, rateMilli, pauseUntil, readyAt] = reply;
    return {
      granted,
      waitMs,
      rate: rateMilli < 0 ? null : rateMilli / 1000,
      pauseUntil,
      readyAt,
    };
  }
}
