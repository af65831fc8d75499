import { entryFields } from "../events/cloudevents.js";
import type { CloudEvent } from "../events/types.js";
import { isJobId } from "../lib/job-id.js";
import { isFinal } from "../poller/rules.js";
import type { Keys } from "../store/keys.js";
import {
  abortReason,
  ClosedError,
  FinalEventUnavailableError,
  InvalidArgumentError,
  WaitTimeoutError,
} from "./errors.js";
import { blockingDuplicate, type RedisLike } from "./redis.js";

/** The event that ends a job: its status change to a final state, or `not_found`. */
export type FinalJobEvent = CloudEvent<"status_changed"> | CloudEvent<"not_found">;

export interface WaitOptions {
  /** Reject with `WaitTimeoutError` after this long; no limit when absent. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Longest single XREAD BLOCK: also how often the `finals` record is looked at again. */
const BLOCK_MS = 2000;

type Entry = [string, string[]];

/** The ending event of `jobId` in a stream entry, if the entry is one. */
function endingEvent(jobId: string, flat: readonly string[]): FinalJobEvent | undefined {
  const fields = entryFields(flat);
  if (fields["subject"] !== jobId) return undefined;
  const type = fields["type"];
  if (type !== "idunox.job.status_changed" && type !== "idunox.job.not_found") return undefined;
  const event = JSON.parse(fields["data"] ?? "null") as FinalJobEvent;
  if (event.type === "idunox.job.not_found") return event;
  return isFinal(event.data.job) ? event : undefined;
}

/**
 * Resolves with the job's ending event. No start-up race: the `finals` record and the events
 * stream's last entry id are read in one MULTI, so an event written after that read has a
 * larger id and the XREAD that follows starts right before it; one written before it is found
 * through the record. A job done with earlier resolves at once, for as long as its state is
 * kept.
 */
export async function waitForJob(
  redis: RedisLike,
  keys: Pick<Keys, "events" | "finals">,
  jobIdIn: string,
  options: WaitOptions,
  closing: AbortSignal,
): Promise<FinalJobEvent> {
  if (typeof jobIdIn !== "string" || !isJobId(jobIdIn)) {
    throw new InvalidArgumentError("waitFor needs a job id (a UUID)");
  }
  const { timeoutMs, signal } = options;
  if (timeoutMs !== undefined && !(timeoutMs >= 0)) {
    throw new InvalidArgumentError("timeoutMs must be a number >= 0");
  }
  if (signal?.aborted) throw abortReason(signal);
  if (closing.aborted) throw new ClosedError();
  const jobId = jobIdIn.toLowerCase();
  const deadline = timeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + timeoutMs;

  /** The ending event from the `finals` record, when the job is done with; else undefined. */
  const recorded = async (value: string | null): Promise<FinalJobEvent | undefined> => {
    if (value === null || !value.startsWith("f")) return undefined;
    const entryId = value.slice(1);
    const entries = (await redis.xrange(keys.events, entryId, entryId)) as Entry[];
    const flat = entries[0]?.[1];
    if (!flat) throw new FinalEventUnavailableError(jobId, null);
    const event = JSON.parse(entryFields(flat)["data"] ?? "null") as FinalJobEvent;
    return event;
  };

  const snapshot = (await redis
    .multi()
    .hget(keys.finals, jobId)
    .xrevrange(keys.events, "+", "-", "COUNT", 1)
    .exec()) as Array<[Error | null, unknown]> | null;
  if (!snapshot) throw new Error("the MULTI reading the job's record was discarded");
  for (const [err] of snapshot) if (err) throw err;
  const already = await recorded(snapshot[0]?.[1] as string | null);
  if (already) return already;
  let lastId = ((snapshot[1]?.[1] ?? []) as Entry[])[0]?.[0] ?? "0-0";

  const reader = blockingDuplicate(redis, "wait");
  let stop: ((reason: unknown) => void) | undefined;
  const stopped = new Promise<never>((_, reject) => {
    stop = reject;
  });
  stopped.catch(() => {});
  const onAbort = () => stop?.(signal ? abortReason(signal) : new Error("aborted"));
  signal?.addEventListener("abort", onAbort, { once: true });
  const onClose = () => stop?.(new ClosedError());
  closing.addEventListener("abort", onClose, { once: true });
  // Either may have fired while the snapshot was read, before the listeners existed.
  if (signal?.aborted) onAbort();
  else if (closing.aborted) onClose();
  const timer =
    Number.isFinite(deadline) && timeoutMs !== undefined
      ? setTimeout(() => stop?.(new WaitTimeoutError(jobId, timeoutMs)), timeoutMs)
      : undefined;
  try {
    const follow = async (): Promise<FinalJobEvent> => {
      for (;;) {
        const reply = (await reader.xread(
          "COUNT",
          500,
          "BLOCK",
          BLOCK_MS,
          "STREAMS",
          keys.events,
          lastId,
        )) as Array<[string, Entry[]]> | null;
        for (const [, entries] of reply ?? []) {
          for (const [id, flat] of entries) {
            lastId = id;
            const event = endingEvent(jobId, flat);
            if (event) return event;
          }
        }
        // A job can end without an event of its own (see applyDecisions); the record says so.
        if (!reply) {
          const late = await recorded(await redis.hget(keys.finals, jobId));
          if (late) return late;
        }
      }
    };
    return await Promise.race([follow(), stopped]);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    closing.removeEventListener("abort", onClose);
    // Ends a blocked XREAD at once; its rejection is the race's loser and is ignored.
    reader.disconnect();
  }
}
