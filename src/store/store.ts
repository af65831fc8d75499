import { randomBytes } from "node:crypto";
import { streamFields } from "../events/cloudevents.js";
import type { AnyCloudEvent } from "../events/types.js";
import type { RedisClient } from "./connection.js";
import { decodeHeartbeat, encodeHeartbeat, type ReplicaHeartbeat } from "./heartbeat.js";
import { type Keys, keysFor } from "./keys.js";
import { defineScripts, type ScriptCommands } from "./scripts.js";
import type { JobState } from "./state.js";
import { decodeState, encodeState, initialState, StateDecodeError } from "./state.js";

/** What applyDecisions returns per decision. */
export enum ApplyCode {
  Written = 1,
  /** Another replica holds the job now (or it left the schedule): the decision is dropped. */
  LeaseLost = 2,
  /** The state moved on since the claim (the same decision was already written). */
  Conflict = 3,
}

export function describeApplyCode(code: ApplyCode): string {
  switch (code) {
    case ApplyCode.Written:
      return "written";
    case ApplyCode.LeaseLost:
      return "lease lost: the job was claimed again or untracked";
    case ApplyCode.Conflict:
      return "version conflict: the state changed since it was claimed";
  }
}

export interface ClaimedJob {
  id: string;
  /** The claimed schedule score: the lease token. */
  lease: number;
  /** The recorded state, or a fresh one for a job never polled. */
  state: JobState;
  /** The stored state could not be read and a new history was started. */
  stateReset: boolean;
}

export interface ClaimResult {
  jobs: ClaimedJob[];
  /** When the earliest job is due, if nothing is due now. */
  nextDueAt: number | null;
}

export interface DecisionWrite {
  id: string;
  lease: number;
  expectedVersion: number;
  state: JobState;
  /** null: done with, leaves the pending set. */
  nextDueAt: number | null;
  events: readonly AnyCloudEvent[];
  /** Whether each event (same index) also goes to the alerts stream. */
  alerts: readonly boolean[];
}

export interface IntakeResult {
  added: number;
  invalid: Array<{ member: string; lastSequence: number }>;
  /** New members still waiting in the scratch set: call again. */
  remaining: number;
  untracked: number;
  /** Whether this call computed the O(N) diff of pending against tracked. */
  diffed: boolean;
}

export interface StoreOptions {
  prefix: string;
  streamMaxLen: number;
  stateTtlMs: number;
}

export interface StoreStats {
  tracked: number;
  dueBacklog: number;
  scheduleLagSeconds: number;
  rejected: number;
  groups: Array<{
    stream: "events" | "alerts";
    group: string;
    lag: number | null;
    pending: number;
  }>;
}

export interface StoredJob {
  state: JobState | null;
  /** Due time in ms; 0 = never polled; absent when the job is not scheduled. */
  dueAt: number | null;
  pending: boolean;
}

function newEpoch(): string {
  return randomBytes(6).toString("hex");
}

/**
 * Everything the poller does to Redis, as typed calls over the Lua scripts. Each method is one
 * round trip; batches are the caller's to size.
 */
export class Store {
  readonly keys: Keys;
  private readonly scripts: ScriptCommands;

  constructor(
    readonly redis: RedisClient,
    private readonly options: StoreOptions,
  ) {
    this.keys = keysFor(options.prefix);
    this.scripts = defineScripts(redis);
  }

  /**
   * Schedules new pending members, at most `limit` per call. `mayDiff` false limits the call
   * to O(limit) work: the O(N) diff that finds new members is then skipped.
   */
  async intake(
    limit: number,
    reconcile: boolean,
    mayDiff = true,
    now = Date.now(),
  ): Promise<IntakeResult> {
    const k = this.keys;
    const reply = (await this.scripts.intake(
      k.pending,
      k.tracked,
      k.schedule,
      k.aliases,
      k.intake,
      k.rejectSeq,
      k.expiry,
      k.hints,
      limit,
      reconcile ? "1" : "0",
      mayDiff ? "1" : "0",
      now + this.options.stateTtlMs,
    )) as [number, Array<string | number>, number, number, number];
    const invalid: IntakeResult["invalid"] = [];
    const flat = reply[1];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      invalid.push({ member: String(flat[i]), lastSequence: Number(flat[i + 1]) });
    }
    return {
      added: reply[0],
      invalid,
      remaining: reply[2],
      untracked: reply[3],
      diffed: reply[4] === 1,
    };
  }

  async claim(now: number, limit: number, leaseMs: number): Promise<ClaimResult> {
    const lease = now + leaseMs;
    const reply = (await this.scripts.claimDue(
      this.keys.schedule,
      this.keys.state,
      now,
      limit,
      lease,
    )) as [string[], Array<string | null>, string | null];
    const [ids, states, next] = reply;
    const jobs: ClaimedJob[] = ids.map((id, i) => {
      const raw = states[i] ?? null;
      if (raw === null) return { id, lease, state: initialState(newEpoch()), stateReset: false };
      try {
        return { id, lease, state: decodeState(raw), stateReset: false };
      } catch (err) {
        if (!(err instanceof StateDecodeError)) throw err;
        // Keep the stored version so the compare-and-set still holds; a new epoch keeps the
        // new history's event ids apart from the old ones.
        // Read the version exactly as the Lua compare-and-set does, or the write never lands.
        const match = /^(\d+)\|/.exec(raw);
        const state = { ...initialState(newEpoch()), version: match ? Number(match[1]) : -1 };
        return { id, lease, state, stateReset: true };
      }
    });
    return { jobs, nextDueAt: next === null ? null : Number(next) };
  }

  async apply(writes: readonly DecisionWrite[], now: number): Promise<ApplyCode[]> {
    if (writes.length === 0) return [];
    const k = this.keys;
    const args: Array<string | number> = [
      k.schedule,
      k.state,
      k.pending,
      k.tracked,
      k.aliases,
      k.expiry,
      k.events,
      k.alerts,
      k.finals,
      this.options.streamMaxLen,
      now + this.options.stateTtlMs,
      writes.length,
    ];
    for (const w of writes) {
      args.push(
        w.id,
        w.lease,
        w.expectedVersion,
        encodeState(w.state),
        w.nextDueAt === null ? "" : Math.round(w.nextDueAt),
        w.events.length,
      );
      for (let i = 0; i < w.events.length; i++) {
        args.push(w.alerts[i] === true ? "1" : "0", ...streamFields(w.events[i] as AnyCloudEvent));
      }
    }
    return (await this.scripts.applyDecisions(...args)) as ApplyCode[];
  }

  async release(
    items: ReadonlyArray<{ id: string; lease: number; dueAt: number }>,
  ): Promise<number> {
    if (items.length === 0) return 0;
    const args: Array<string | number> = [this.keys.schedule];
    for (const item of items) args.push(item.id, item.lease, Math.round(item.dueAt));
    return (await this.scripts.releaseLeases(...args)) as number;
  }

  /**
   * Moves a member that is not a job id to the rejected set with its `rejected` event, which
   * `eventFor` builds for the sequence the member is at (the rule is the poller's, not the
   * store's). Returns false when the member had already left the pending set.
   */
  async reject(
    member: string,
    lastSequence: number,
    eventFor: (sequence: number) => AnyCloudEvent,
  ): Promise<boolean> {
    const k = this.keys;
    let expected = lastSequence;
    for (let attempt = 0; attempt < 5; attempt++) {
      const [data, id, type, , time] = streamFields(eventFor(expected + 1));
      const reply = (await this.scripts.rejectMember(
        k.pending,
        k.rejected,
        k.rejectSeq,
        k.events,
        k.alerts,
        member,
        expected,
        this.options.streamMaxLen,
        data,
        id,
        type,
        time,
      )) as number | [number, number];
      if (reply === 1) return true;
      if (reply === 2) return false;
      expected = Number((reply as [number, number])[1]);
    }
    throw new Error("rejecting a member kept conflicting with another replica");
  }

  async expire(now: number, limit: number): Promise<number> {
    return (await this.scripts.expireStates(
      this.keys.expiry,
      this.keys.state,
      this.keys.schedule,
      this.keys.finals,
      now,
      limit,
    )) as number;
  }

  async stats(now: number): Promise<StoreStats> {
    const k = this.keys;
    const [tracked, dueBacklog, oldest, rejected, eventsGroups, alertsGroups] = await Promise.all([
      this.redis.zcard(k.schedule),
      this.redis.zcount(k.schedule, "-inf", now),
      // Score 0 marks jobs never polled; lag is measured on the ones that have a due time.
      this.redis.zrangebyscore(k.schedule, "(0", "+inf", "WITHSCORES", "LIMIT", 0, 1),
      this.redis.scard(k.rejected),
      this.groups(k.events),
      this.groups(k.alerts),
    ]);
    const oldestDue = oldest[1] === undefined ? null : Number(oldest[1]);
    return {
      tracked,
      dueBacklog,
      scheduleLagSeconds: oldestDue !== null && oldestDue < now ? (now - oldestDue) / 1000 : 0,
      rejected,
      groups: [
        ...eventsGroups.map((g) => ({ stream: "events" as const, ...g })),
        ...alertsGroups.map((g) => ({ stream: "alerts" as const, ...g })),
      ],
    };
  }

  private async groups(
    stream: string,
  ): Promise<Array<{ group: string; lag: number | null; pending: number }>> {
    let reply: unknown;
    try {
      reply = await this.redis.xinfo("GROUPS", stream);
    } catch (err) {
      // No stream yet: no groups to report.
      if (err instanceof Error && /no such key/i.test(err.message)) return [];
      throw err;
    }
    return (reply as unknown[][]).map((flat) => {
      const info: Record<string, unknown> = {};
      for (let i = 0; i + 1 < flat.length; i += 2) info[String(flat[i])] = flat[i + 1];
      const lag = info["lag"];
      return {
        group: String(info["name"]),
        lag: lag === null || lag === undefined ? null : Number(lag),
        pending: Number(info["pending"] ?? 0),
      };
    });
  }

  async writeHeartbeat(replicaId: string, beat: ReplicaHeartbeat): Promise<void> {
    await this.redis.hset(this.keys.replicas, replicaId, encodeHeartbeat(beat));
  }

  async removeHeartbeat(replicaId: string): Promise<void> {
    await this.redis.hdel(this.keys.replicas, replicaId);
  }

  /** Drops heartbeats older than `maxAgeMs` (replicas killed without a clean stop) or unreadable. */
  async pruneHeartbeats(now: number, maxAgeMs: number): Promise<number> {
    const all = await this.redis.hgetall(this.keys.replicas);
    const stale = Object.entries(all)
      .filter(([, raw]) => {
        const beat = decodeHeartbeat(raw);
        return beat === null || now - beat.at > maxAgeMs;
      })
      .map(([id]) => id);
    if (stale.length > 0) await this.redis.hdel(this.keys.replicas, ...stale);
    return stale.length;
  }

  /** Every readable heartbeat, by replica id. */
  async heartbeats(): Promise<Array<{ id: string; beat: ReplicaHeartbeat }>> {
    const all = await this.redis.hgetall(this.keys.replicas);
    const out: Array<{ id: string; beat: ReplicaHeartbeat }> = [];
    for (const [id, raw] of Object.entries(all)) {
      const beat = decodeHeartbeat(raw);
      if (beat !== null) out.push({ id, beat });
    }
    return out;
  }

  /** One job's stored state, due time and membership, for `status <jobId>`. */
  async job(id: string): Promise<StoredJob> {
    const k = this.keys;
    const [raw, score, pending] = await Promise.all([
      this.redis.hget(k.state, id),
      this.redis.zscore(k.schedule, id),
      this.redis.sismember(k.pending, id),
    ]);
    return {
      state: raw === null ? null : decodeState(raw),
      dueAt: score === null ? null : Number(score),
      pending: pending === 1,
    };
  }
}
