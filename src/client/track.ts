import { judgeMember } from "../poller/members.js";
import type { Keys } from "../store/keys.js";
import type { RedisLike } from "./redis.js";
import { runScript } from "./redis.js";

export interface TrackResult {
  /** Ids added to the pending set by this call (a repeat within one call counts once). */
  added: number;
  /** Ids that were already pending: nothing was written for them. */
  alreadyTracked: number;
  /** Ids the daemon would reject, with why; none of them was written. */
  rejected: Array<{ id: string; reason: string }>;
}

/** Ids per script call: one call's arguments stay small, so Redis is never held up for long. */
const BATCH = 1000;

/**
 * Adds job ids to the pending set with the intake hint (`trackJobs-2.lua`). Ids are judged by
 * the rule the daemon applies (`judgeMember`); one that fails is reported back, not written,
 * so the producer learns of its mistake now rather than from a `rejected` event later.
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
    const flags = (await runScript(
      redis,
      "trackJobs",
      [keys.pending, keys.hints],
      valid.slice(i, i + BATCH),
    )) as number[];
    for (const flag of flags) {
      if (flag === 1) result.added += 1;
      else result.alreadyTracked += 1;
    }
  }
  return result;
}
