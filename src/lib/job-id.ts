/**
 * The job-id rule: what the daemon accepts as a job id in the pending set. The intake script
 * applies the same rule in Lua; the library's `track()` and the CLI use this one, so a producer
 * is told at once what the daemon would reject. No dependencies (zod included): the client
 * library imports this.
 */

/** A pending-set member names a job when it has the UUID shape, in any case. */
export const JOB_ID_PATTERN =
  /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

export function isJobId(member: string): boolean {
  return member.length === 36 && JOB_ID_PATTERN.test(member);
}
