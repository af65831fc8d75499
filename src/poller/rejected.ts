import { buildEvent } from "../events/cloudevents.js";
import type { AnyCloudEvent } from "../events/types.js";

/**
 * The `rejected` event of a member that is not a job id (see `rejectionReason`), for whichever
 * sequence the store finds free: another replica may have rejected the same member meanwhile.
 * Its own epoch keeps its ids apart from any job's history; the member rides in `data`, the one
 * place it is ever shown. Built here, beside the other decisions, so the store only writes it.
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
