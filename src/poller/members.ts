/**
 * What the daemon accepts as a job id in the pending set. The intake script applies the same
 * rule in Lua (the intake script); the library's `track()` and the CLI use these, so a producer is
 * told at once what the daemon would reject. No dependencies: the client library imports this.
 * The id shape itself is shared and dependency-free (`src/lib/job-id.ts`); these are the
 * pending-set rules on top.
 */

import { isJobId } from "../lib/job-id.js";

export { isJobId, JOB_ID_PATTERN } from "../lib/job-id.js";

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

/** One member judged: the reason is set exactly when the daemon would reject it. */
export function judgeMember(member: string): { ok: true } | { ok: false; reason: string } {
  return isJobId(member) ? { ok: true } : { ok: false, reason: rejectionReason(member) };
}
