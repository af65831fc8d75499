import type { Job } from "./schema.js";

/**
 * What one poll of one job came to, after the client's own retries. The poller's pure rules
 * decide on this value alone; nothing here carries the raw body or the API key.
 */
export type PollOutcome =
  | { kind: "ok"; job: Job }
  | { kind: "not_found" }
  /** Not JSON, not the schema, a value outside the enums, a wrong jobId, a redirect, too big. */
  | { kind: "invalid"; reason: string }
  /**
   * Connection error, timeout or 408/425/429/5xx that outlived the retries. `throttled`: the
   * last answer was 429, the quota of the key and not a failure of this job.
   */
  | { kind: "transient"; reason: string; retryAfterMs?: number; throttled?: true }
  /** 401/403: the key is wrong for everyone. The job must be handed back untouched. */
  | { kind: "auth"; status: number };

export type PollOutcomeKind = PollOutcome["kind"];
