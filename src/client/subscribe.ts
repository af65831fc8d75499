import { entryFields } from "../events/cloudevents.js";
import type { AnyCloudEvent } from "../events/types.js";
import { sleep, Wakeup } from "../lib/signal.js";
import type { Keys } from "../store/keys.js";
import { InvalidArgumentError } from "./errors.js";
import { blockingDuplicate, type RedisLike } from "./redis.js";

/** One event as a handler receives it: a union discriminated on `type`, with typed `data`. */
export type JobEvent = AnyCloudEvent;

export interface DeliveryInfo {
  /** The stream entry id. */
  entryId: string;
  /** How many times the group has delivered this entry, this delivery included. */
  deliveries: number;
}

export interface SubscribeOptions {
  /** The consumer group; created (with MKSTREAM) when missing. */
  group: string;
  /** This consumer's name in the group. Keep it stable across restarts of one instance. */
  consumer: string;
  /** Which stream: `events` (every event, default) or `alerts`. */
  stream?: "events" | "alerts";
  /**
   * Called once per event; the entry is acknowledged after it resolves. A rejection leaves the
   * entry pending: it is delivered again once it was idle `minIdleMs`, up to `maxDeliveries`.
   * Events of one job (one `subject`) are handled one at a time, in stream order.
   */
  handler: (event: JobEvent, delivery: DeliveryInfo) => unknown;
  /** Entries idle this long in any consumer's pending list are claimed (XAUTOCLAIM). 60000. */
  minIdleMs?: number;
  /** Deliveries after which a failing entry is parked in the dead-letter stream. 5. */
  maxDeliveries?: number;
  /** Where parked entries go. Default `<prefix><stream>:dead-letter`. */
  deadLetterStream?: string;
  /** Handlers running at once. 1. */
  concurrency?: number;
  /**
   * Entries read ahead and held (queued or running), at least `concurrency`. Default
   * max(10, concurrency). Held entries age in the group's pending list: keep `minIdleMs` well
   * above the time a held entry waits plus its handler, or another consumer claims it too.
   */
  prefetch?: number;
  /** Called when an entry is skipped as a duplicate of an event handled lately. */
  onDuplicate?: (event: JobEvent, delivery: DeliveryInfo) => void;
  /** Where a group created here starts: `$` (only new events, default) or `0` (all kept). */
  startId?: string;
  /** How many recent CloudEvent ids are remembered to skip duplicates. 10000. */
  dedupWindow?: number;
  /** Stops the subscription, like `close()`. */
  signal?: AbortSignal;
  /** Called with Redis errors the loop retries after (default: ignored). Never with payloads. */
  onError?: (err: Error) => void;
}

export interface Subscription {
  /** Resolves once the group exists and reading has begun; rejects if it could not start. */
  readonly ready: Promise<void>;
  /**
   * Stops reading, lets the handlers under way finish and acknowledges them, then closes the
   * subscription's own connection. Safe to call twice. Entries read but not handled stay
   * pending and are claimed again later (by this consumer name or another).
   */
  close(): Promise<void>;
}

/** Longest XREADGROUP BLOCK: a close is noticed within this long at worst. */
const BLOCK_MS = 1000;
const DEAD_LETTER_MAXLEN = 1_000_000;

type Entry = [string, string[] | null];

interface Work {
  entryId: string;
  flat: string[] | null;
  deliveries: number;
}

function errorText(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`.slice(0, 1000);
  return `non-error thrown: ${typeof err}`;
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1) throw new InvalidArgumentError(`${name} must be >= 1`);
  return v;
}

/**
 * Consumer-group reading of the events or alerts stream with everything a consumer otherwise
 * writes by hand: ack after the handler, reclaim of entries a dead consumer left behind,
 * a delivery limit with a dead-letter stream, and deduplication by CloudEvent id.
 *
 * Invariant: an entry is acknowledged only after its handler resolved, it was recognised as a
 * duplicate of one whose handler resolved, or it was written to the dead-letter stream (in the
 * same MULTI as the ack). So no event is lost, whatever stops the process.
 */
export function subscribeStream(
  redis: RedisLike,
  keys: Pick<Keys, "events" | "alerts">,
  prefix: string,
  options: SubscribeOptions,
  closing: AbortSignal,
): Subscription {
  const which = options.stream ?? "events";
  if (which !== "events" && which !== "alerts") {
    throw new InvalidArgumentError('stream must be "events" or "alerts"');
  }
  if (typeof options.handler !== "function") throw new InvalidArgumentError("handler is required");
  if (!options.group || !options.consumer) {
    throw new InvalidArgumentError("group and consumer are required");
  }
  const stream = keys[which];
  const { group, consumer, handler } = options;
  const minIdleMs = positiveInt("minIdleMs", options.minIdleMs, 60_000);
  const maxDeliveries = positiveInt("maxDeliveries", options.maxDeliveries, 5);
  const concurrency = positiveInt("concurrency", options.concurrency, 1);
  const dedupWindow = positiveInt("dedupWindow", options.dedupWindow, 10_000);
  const prefetch = Math.max(
    concurrency,
    positiveInt("prefetch", options.prefetch, Math.max(10, concurrency)),
  );
  const deadLetter = options.deadLetterStream ?? `${prefix}${which}:dead-letter`;
  const onError = options.onError ?? (() => {});

  const stopController = new AbortController();
  const stopSignal = stopController.signal;
  const reader = blockingDuplicate(redis, "subscribe");
  const slotFreed = new Wakeup();
  /** CloudEvent ids handled lately, oldest first (a Map keeps insertion order). */
  const seen = new Map<string, true>();
  /** Per subject, the tail of its chain of handlers: one job's events run in order. */
  const chains = new Map<string, Promise<void>>();
  const inFlight = new Set<Promise<void>>();
  /** Entries held here right now, so a reclaim round does not hand them out twice. */
  const held = new Set<string>();
  /** Handlers running; at most `concurrency`. A finished one hands its slot to the next. */
  let running = 0;
  const slotWaiters: Array<() => void> = [];
  const acquire = (): Promise<void> => {
    if (running < concurrency) {
      running += 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => slotWaiters.push(resolve));
  };
  const release = () => {
    const next = slotWaiters.shift();
    if (next) next();
    else running -= 1;
  };

  const stop = () => {
    if (stopSignal.aborted) return;
    stopController.abort();
    slotFreed.fire();
    // A blocked XREADGROUP would hold the close up for a whole block; ending the connection
    // ends it now. Whatever it had read stays pending in the group and is read again later.
    reader.disconnect();
  };
  options.signal?.addEventListener("abort", stop, { once: true });
  closing.addEventListener("abort", stop, { once: true });
  if (options.signal?.aborted || closing.aborted) stop();

  const remember = (id: string) => {
    seen.set(id, true);
    if (seen.size > dedupWindow) {
      const oldest = seen.keys().next().value;
      if (oldest !== undefined) seen.delete(oldest);
    }
  };

  const ack = async (entryId: string) => {
    await redis.xack(stream, group, entryId);
  };

  /** Moves an entry to the dead-letter stream with why, and acks it, atomically. */
  const park = async (work: Work, reason: string) => {
    const fields = work.flat ?? [];
    await redis
      .multi()
      .xadd(
        deadLetter,
        "MAXLEN",
        "~",
        DEAD_LETTER_MAXLEN,
        "*",
        ...fields,
        "reason",
        reason,
        "stream",
        stream,
        "group",
        group,
        "consumer",
        consumer,
        "entryId",
        work.entryId,
        "deliveries",
        String(work.deliveries),
      )
      .xack(stream, group, work.entryId)
      .exec();
  };

  const handleOne = async (work: Work): Promise<void> => {
    if (work.flat === null) {
      // Trimmed from the stream while pending: nothing left to handle.
      await ack(work.entryId);
      return;
    }
    let event: JobEvent;
    try {
      event = JSON.parse(entryFields(work.flat)["data"] ?? "") as JobEvent;
      if (typeof event?.id !== "string" || typeof event.type !== "string") throw new Error();
    } catch {
      await park(work, "not a CloudEvent: the data field is not the structured event JSON");
      return;
    }
    if (seen.has(event.id)) {
      await ack(work.entryId);
      options.onDuplicate?.(event, { entryId: work.entryId, deliveries: work.deliveries });
      return;
    }
    if (work.deliveries > maxDeliveries) {
      // Delivered more often than allowed without an ack: the handler keeps dying with its
      // process (or outlives minIdleMs). Parked before it can take another consumer down.
      await park(work, `delivered ${work.deliveries} times without an ack`);
      return;
    }
    try {
      await handler(event, { entryId: work.entryId, deliveries: work.deliveries });
    } catch (err) {
      if (work.deliveries >= maxDeliveries) {
        await park(work, `handler failed on delivery ${work.deliveries}: ${errorText(err)}`);
      }
      // Otherwise it stays pending and is claimed again after minIdleMs.
      return;
    }
    // Remembered before the ack: if the ack is lost, the redelivery is skipped, not re-handled.
    remember(event.id);
    await ack(work.entryId);
  };

  const dispatch = (work: Work) => {
    held.add(work.entryId);
    const subject = work.flat ? (entryFields(work.flat)["subject"] ?? "") : "";
    const previous = chains.get(subject) ?? Promise.resolve();
    const run = previous
      .then(acquire)
      .then(() => handleOne(work).finally(release))
      .catch((err: unknown) => onError(err instanceof Error ? err : new Error(errorText(err))))
      .finally(() => {
        held.delete(work.entryId);
        inFlight.delete(run);
        if (chains.get(subject) === run) chains.delete(subject);
        slotFreed.fire();
      });
    chains.set(subject, run);
    inFlight.add(run);
  };

  /** Delivery counts of entries this consumer holds, from the group's pending list. */
  const deliveryCounts = async (ids: string[]): Promise<Map<string, number>> => {
    const counts = new Map<string, number>();
    if (ids.length === 0) return counts;
    const sorted = [...ids].sort(compareIds);
    const rows = (await redis.xpending(
      stream,
      group,
      sorted[0] as string,
      sorted.at(-1) as string,
      // Entries held here may lie in the same range: room for them too.
      ids.length + held.size,
      consumer,
    )) as Array<[string, string, number, number]>;
    for (const [id, , , n] of rows) counts.set(id, Number(n));
    return counts;
  };

  const takeEntries = async (entries: Entry[], known?: number) => {
    const fresh = entries.filter(([id]) => !held.has(id));
    const counts = known === undefined ? await deliveryCounts(fresh.map(([id]) => id)) : null;
    for (const [entryId, flat] of fresh) {
      dispatch({ entryId, flat, deliveries: counts?.get(entryId) ?? known ?? 1 });
    }
  };

  const waitForSlot = async () => {
    while (held.size >= prefetch && !stopSignal.aborted) await slotFreed.wait(BLOCK_MS);
  };

  const ensureGroup = async () => {
    try {
      await redis.xgroup("CREATE", stream, group, options.startId ?? "$", "MKSTREAM");
    } catch (err) {
      if (!(err instanceof Error && err.message.includes("BUSYGROUP"))) throw err;
    }
  };

  /** Entries idle at least minIdleMs in anyone's pending list, this consumer's own included. */
  const reclaim = async () => {
    let cursor = "0-0";
    do {
      await waitForSlot();
      if (stopSignal.aborted) return;
      const reply = (await redis.xautoclaim(
        stream,
        group,
        consumer,
        minIdleMs,
        cursor,
        "COUNT",
        Math.max(1, prefetch - held.size),
      )) as [string, Entry[], string[]?];
      cursor = reply[0];
      await takeEntries(reply[1].filter(([, flat]) => flat !== null));
    } while (cursor !== "0-0");
  };

  let readyResolve: () => void = () => {};
  let readyReject: (err: unknown) => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    readyResolve = resolve;
    readyReject = reject;
  });
  ready.catch(() => {});

  const loop = (async () => {
    try {
      await ensureGroup();
    } catch (err) {
      readyReject(err);
      return;
    }
    readyResolve();
    // After a restart under the same name: entries this consumer was given and never acked.
    let ownCursor = "0";
    let nextReclaimAt = 0;
    let backoff = 100;
    while (!stopSignal.aborted) {
      try {
        await waitForSlot();
        if (stopSignal.aborted) break;
        if (ownCursor !== ">") {
          const reply = (await redis.xreadgroup(
            "GROUP",
            group,
            consumer,
            "COUNT",
            Math.max(1, prefetch - held.size),
            "STREAMS",
            stream,
            ownCursor,
          )) as Array<[string, Entry[]]> | null;
          const entries = (reply?.[0]?.[1] ?? []).filter(([id]) => !held.has(id));
          if (entries.length === 0) ownCursor = ">";
          else {
            ownCursor = entries.at(-1)?.[0] as string;
            await takeEntries(entries);
          }
          continue;
        }
        if (Date.now() >= nextReclaimAt) {
          await reclaim();
          nextReclaimAt = Date.now() + Math.max(100, Math.floor(minIdleMs / 2));
          continue;
        }
        const reply = (await reader.xreadgroup(
          "GROUP",
          group,
          consumer,
          "COUNT",
          Math.max(1, prefetch - held.size),
          "BLOCK",
          Math.min(BLOCK_MS, Math.max(1, nextReclaimAt - Date.now())),
          "STREAMS",
          stream,
          ">",
        )) as Array<[string, Entry[]]> | null;
        await takeEntries(reply?.[0]?.[1] ?? [], 1);
        backoff = 100;
      } catch (err) {
        if (stopSignal.aborted) break;
        onError(err instanceof Error ? err : new Error(errorText(err)));
        await sleep(backoff, stopSignal);
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  })();

  let closed: Promise<void> | undefined;
  return {
    ready,
    close() {
      closed ??= (async () => {
        stop();
        await loop;
        while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
        reader.disconnect();
        options.signal?.removeEventListener("abort", stop);
        closing.removeEventListener("abort", stop);
      })();
      return closed;
    },
  };
}

/** Orders stream entry ids (`<ms>-<seq>`) numerically. */
function compareIds(a: string, b: string): number {
  const [am = "0", as = "0"] = a.split("-");
  const [bm = "0", bs = "0"] = b.split("-");
  const ms = BigInt(am) - BigInt(bm);
  if (ms !== 0n) return ms < 0n ? -1 : 1;
  const s = BigInt(as) - BigInt(bs);
  return s === 0n ? 0 : s < 0n ? -1 : 1;
}
