import { judgeMember } from "../poller/members.js";
import type { Keys } from "../store/keys.js";
import type { RedisLike } from "./redis.js";

export interface TrackResult {
  /** Ids added to the pending set by this call (a repeat within one call counts once). */
  added: number;
  /** Ids that were already pending: nothing was written for them. */
  alreadyTracked: number;
  /** Ids the daemon would reject, with why; none of them was written. */
  rejected: Array<{ id: string; reason: string }>;
}

/** Ids per round trip: each pipeline stays small, so Redis is never held up for long. */
const BATCH = 1000;

/**
 * Adds job ids to the pending set, then leaves the intake hint for the ones that were new. Ids
 * are judged by the rule the daemon applies (`judgeMember`); one that fails is reported back,
 * not written, so the producer learns of its mistake now rather than from a `rejected` event.
 *
 * Plain commands, no script: a producer's Redis user needs only SADD and RPUSH on two keys
 * (config/redis/users.acl). The hint is written after the SADD, so it never names an id that
 * is not pending; if the hint is lost (the process dies in between), the daemon's diff of the
 * pending set still finds the id, later. A hint for an id the diff found first is skipped.
 */
export async function trackIds(
  redis: RedisLike,
  keys: Pick<Keys, "pending" | "hints">,
  ids: Iterable<string> | string,
): Promise<TrackResult> {
  const result: TrackResult = { added: 0, alreadyTracked: 0, rejected: [] };
  const valid: string[] = [];
  // A lone string would otherwise be iterated character by character.
  for (const id of typeof ids === "string" ? [ids] : ids) {
    if (typeof id !== "string") {
      result.rejected.push({ id: String(id), reason: "not a string" });
      continue;
    }
    const verdict = judgeMember(id);
    if (verdict.ok) valid.push(id);
    else result.rejected.push({ id, reason: verdict.reason });
  }
  for (let i = 0; i < valid.length; i += BATCH) {
    const batch = valid.slice(i, i + BATCH);
    const pipeline = redis.pipeline();
    for (const id of batch) pipeline.sadd(keys.pending, id);
    const replies = (await pipeline.exec()) ?? [];
    const fresh: string[] = [];
    batch.forEach((id, j) => {
      const [err, added] = replies[j] ?? [new Error("no reply")];
      if (err) throw err;
      if (added === 1) fresh.push(id);
      else result.alreadyTracked += 1;
    });
    if (fresh.length > 0) await redis.rpush(keys.hints, ...fresh);
    result.added += fresh.length;
  }
  return result;
}
