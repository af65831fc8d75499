/**
 * Every Redis key the poller uses, derived from one prefix. All of them share the prefix, so a
 * prefix with a hash tag (`{idunox}:jobs:`) puts them in one Redis Cluster slot, which the
 * multi-key scripts need.
 */
export interface Keys {
  /** Producers' input (contract): SADD job ids here. */
  pending: string;
  /** Members that are not job ids, moved here with a `rejected` event (contract). */
  rejected: string;
  /** Every event (contract). */
  events: string;
  /** Events that need a person (contract). */
  alerts: string;
  /** Pending members already scheduled, as written. */
  tracked: string;
  /** Job id -> due time (ms); 0 for never polled; a claimed job's score is its lease expiry. */
  schedule: string;
  /** Job id -> encoded JobState. */
  state: string;
  /** Job id -> when the state of a finished job may be dropped. */
  expiry: string;
  /** Job id -> the pending members that spell it in another case, comma-separated. */
  aliases: string;
  /** New members found by the last reconciliation, handed out in batches. */
  intake: string;
  /**
   * List of ids that `track()` added to `pending`: the intake hint. Intake pops it before any
   * diff, so a tracked id is scheduled in O(1); the diff stays the reconciliation.
   */
  hints: string;
  /**
   * Job id -> entry id in `events` of its last status event (status_changed, not_found), with
   * an `f` in front once the job is done with: how `waitFor` answers for a finished job.
   */
  finals: string;
  /** Rejected member -> last event sequence. */
  rejectSeq: string;
  /** Replica id -> heartbeat JSON (auth state, leases), for `status` and operators. */
  replicas: string;
  /** The request budget shared by every replica (takePermits). */
  budget: string;
  /** "<type>|<phase>" -> learned phase-duration histogram (predictive schedule). */
  durations: string;
}

export function keysFor(prefix: string): Keys {
  return {
    pending: `${prefix}pending`,
    rejected: `${prefix}rejected`,
    events: `${prefix}events`,
    alerts: `${prefix}alerts`,
    tracked: `${prefix}tracked`,
    schedule: `${prefix}schedule`,
    state: `${prefix}state`,
    expiry: `${prefix}expiry`,
    aliases: `${prefix}aliases`,
    intake: `${prefix}intake`,
    hints: `${prefix}intake:hints`,
    finals: `${prefix}finals`,
    rejectSeq: `${prefix}rejected:seq`,
    replicas: `${prefix}replicas`,
    budget: `${prefix}budget`,
    durations: `${prefix}durations`,
  };
}
