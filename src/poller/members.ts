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
