import { buildEvent } from "../events/cloudevents.js";
import type { AnyCloudEvent } from "../events/types.js";

/** Why a pending-set member is not a job id, in a few fixed words (never the member itself). */
export function rejectionReason(member: string): string {
  if (member.length === 0) return "empty";
  if (member.length > 36) return "too long for a job id";
  if (/[/\\?#%]|\.\./.test(member)) return "contains path or URL characters";
  for (let i = 0; i < member.length; i++) {
    const c = member.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return "contains control characters";
  }
  return "not a UUID";
}

/**
 * The `rejected` event of a member that is not a job id, for whichever sequence the store finds
 * free (another replica may have rejected the same member meanwhile). Its own epoch keeps its
 * ids apart from any job's history; the member rides in `data`, the one place it is ever shown.
 */
export function rejectedEvent(
  member: string,
  reason: string,
  source: string,
  now: number,
): (sequence: number) => AnyCloudEvent {
  return (sequence) =>
    buildEvent({
      kind: "rejected",
      source,
      subject: member,
      epoch: "rejected",
      sequence,
      timeMs: now,
      data: { member, reason },
    }) as AnyCloudEvent;
}
