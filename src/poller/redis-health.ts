import type { Logger } from "pino";
import { coerceError } from "../lib/errors.js";
import { describeAclRefusal } from "../store/acl.js";

export interface RedisHealthMetrics {
  redisErrors?: { inc(labels: { op: string }): void };
}

/**
 * Whether Redis answers, as the poller's own calls see it. Every Redis call of the poller goes
 * through `run`, so none can forget to report.
 *
 * Invariant: the call begun last decides. ioredis hands back a pipeline's replies only when the
 * whole pipeline is done, so a reply that arrived before a black hole can land after a later
 * call's timeout, and must not make readiness say "up" again. Calls are numbered as they begin;
 * an ending call changes the state only if no later-begun call has ended already.
 */
export class RedisHealth {
  private ok = true;
  private lastError: string | null = null;
  /** Calls begun so far, and the number of the one that last set `ok`. */
  private begun = 0;
  private decidedBy = 0;

  /** The current failure was logged at error level, so its end is logged at info. */
  private failureLogged = false;

  constructor(
    private readonly log: Logger,
    private readonly metrics?: RedisHealthMetrics,
    /** See PollerDeps.redisConnectionUp: a lost connection is someone else's line. */
    private readonly connectionUp: () => boolean = () => true,
  ) {}

  get state(): { ok: boolean; reason: string | null } {
    return { ok: this.ok, reason: this.ok ? null : this.lastError };
  }

  /** Runs one Redis call, records how it ended, and passes its result or error on. */
  async run<T>(op: string, call: () => Promise<T>): Promise<T> {
    this.begun += 1;
    const number = this.begun;
    let result: T;
    try {
      result = await call();
    } catch (err) {
      this.record(false, op, number, err);
      throw err;
    }
    this.record(true, op, number);
    return result;
  }

  private record(ok: boolean, op: string, number: number, err?: unknown): void {
    if (!ok) this.metrics?.redisErrors?.inc({ op });
    if (number < this.decidedBy) return;
    this.decidedBy = number;
    if (!ok) {
      const error = coerceError(err);
      // An ACL refusal is not an outage that waiting cures: say which rule is missing and how
      // to get it, in the log and in readiness, next to Redis's own words.
      const fix = describeAclRefusal(error.message);
      this.lastError = fix === null ? error.message : `${error.message} (${fix})`;
      if (this.ok) {
        const live = this.connectionUp();
        const fields = fix === null ? { err: error, op } : { err: error, op, fix };
        this.log[live ? "error" : "debug"](fields, "redis call failed");
        this.failureLogged = live;
      }
    } else if (!this.ok) {
      this.log[this.failureLogged ? "info" : "debug"]({ op }, "redis answers again");
      this.failureLogged = false;
    }
    this.ok = ok;
  }
}
