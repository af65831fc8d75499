/** Why a pending-set member is not a job id, in a few fixed words (never the member itself). */
export function rejectionReason(member: string): string {
  if (member.length === 0) return "empty";
  if (member.length > 36) return "too long for a job id";
  if (/[/\\?#%]|\.\./.test(member)) return "contains path or URL characters";
  if (/[\u0000-\u001f\u007f]/.test(member)) return "contains control characters";
  return "not a UUID";
}
