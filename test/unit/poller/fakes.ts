import pino from "pino";
import type { PollOutcome } from "../../../src/api/outcome.js";
import type { JobsApi, PollerStore } from "../../../src/poller/ports.js";
import { initialState } from "../../../src/poller/state.js";
import {
  ApplyCode,
  type ClaimedJob,
  type ClaimResult,
  type DecisionWrite,
  type IntakeResult,
} from "../../../src/store/store.js";

export const silentLogger = pino({ level: "silent" });

/** A clock the test moves by hand. */
export class FakeClock {
  constructor(public t = 1_000_000) {}
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

/** A promise whose settling the test decides. */
export function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Resolves once `condition` holds, looking after every turn of the event loop. */
export async function until(condition: () => boolean, what: string, turns = 10_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (condition()) return;
    await nextTurn();
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * An in-memory PollerStore: a schedule of due times and leases, like the Lua scripts keep. It
 * records every release and apply, and can be made to fail like an unreachable Redis.
 */
export class FakeStore implements PollerStore {
  readonly schedule = new Map<string, number>();
  readonly released: string[] = [];
  readonly applyCalls: DecisionWrite[][] = [];
  claimCalls = 0;
  /** While set, every call rejects with this error. */
  outage: Error | null = null;

  /** Like Redis, every call answers in a later turn of the event loop, never synchronously. */
  private roundTrip(): Promise<void> {
    return nextTurn();
  }

  constructor(ids: readonly string[] = [], dueAt = 0) {
    for (const id of ids) this.schedule.set(id, dueAt);
  }

  async claim(now: number, limit: number, leaseMs: number): Promise<ClaimResult> {
    this.claimCalls += 1;
    await this.roundTrip();
    if (this.outage) throw this.outage;
    const lease = now + leaseMs;
    const jobs: ClaimedJob[] = [];
    for (const [id, due] of this.schedule) {
      if (jobs.length >= limit) break;
      if (due > now) continue;
      this.schedule.set(id, lease);
      jobs.push({ id, lease, state: initialState("e1"), stateReset: false });
    }
    const later = [...this.schedule.values()].filter((d) => d > now);
    return { jobs, nextDueAt: jobs.length === 0 && later.length > 0 ? Math.min(...later) : null };
  }

  async release(items: ReadonlyArray<{ id: string; lease: number; dueAt: number }>) {
    await this.roundTrip();
    if (this.outage) throw this.outage;
    let n = 0;
    for (const item of items) {
      this.released.push(item.id);
      if (this.schedule.get(item.id) === item.lease) {
        this.schedule.set(item.id, item.dueAt);
        n += 1;
      }
    }
    return n;
  }

  async apply(writes: readonly DecisionWrite[]): Promise<ApplyCode[]> {
    this.applyCalls.push([...writes]);
    await this.roundTrip();
    if (this.outage) throw this.outage;
    return writes.map(() => ApplyCode.Written);
  }

  async intake(): Promise<IntakeResult> {
    await this.roundTrip();
    if (this.outage) throw this.outage;
    return { added: 0, invalid: [], remaining: 0, untracked: 0, diffed: false };
  }

  async reject(): Promise<boolean> {
    await this.roundTrip();
    if (this.outage) throw this.outage;
    return false;
  }

  async expire(): Promise<number> {
    await this.roundTrip();
    if (this.outage) throw this.outage;
    return 0;
  }
}

/** A JobsApi whose polls the test answers one by one, and whose probes answer from a script. */
export class FakeApi implements JobsApi {
  readonly polls = new Map<string, ReturnType<typeof deferred<PollOutcome>>>();
  readonly probes: Array<"ok" | "auth" | "down"> = [];
  probeCount = 0;

  poll(jobId: string): Promise<PollOutcome> {
    const d = deferred<PollOutcome>();
    this.polls.set(jobId, d);
    return d.promise;
  }

  async probeAuth(): Promise<"ok" | "auth" | "down"> {
    this.probeCount += 1;
    return this.probes.shift() ?? "down";
  }

  answer(jobId: string, outcome: PollOutcome): void {
    const d = this.polls.get(jobId);
    if (d === undefined) throw new Error(`no poll out for ${jobId}`);
    this.polls.delete(jobId);
    d.resolve(outcome);
  }
}
