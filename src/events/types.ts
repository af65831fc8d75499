import type { Job, JobStatus } from "../api/schema.js";

/** Short names of the event kinds; the CloudEvents `type` is `idunox.job.<kind>`. */
export const EVENT_KINDS = [
  "status_changed",
  "sla_breached",
  "dead_lettered",
  "poll_failed",
  "not_found",
  "rejected",
] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

/** Kinds that need a person: they are appended to `<prefix>alerts` as well, with the same id. */
export const ALERT_KINDS: ReadonlySet<EventKind> = new Set<EventKind>([
  "dead_lettered",
  "sla_breached",
  "poll_failed",
  "not_found",
  "rejected",
]);

/**
 * The version of each kind's `data` schema. A change that can break a consumer (a field removed,
 * renamed or retyped) bumps it, and with it the `dataschema` URI and the shipped schema's `$id`.
 */
export const DATA_SCHEMA_VERSIONS: Readonly<Record<EventKind, number>> = {
  status_changed: 1,
  sla_breached: 1,
  dead_lettered: 1,
  poll_failed: 1,
  not_found: 1,
  rejected: 1,
};

export interface StatusChangedData {
  jobId: string;
  previousStatus: JobStatus | null;
  status: JobStatus;
  job: Job;
}

export interface SlaBreachedData {
  jobId: string;
  status: JobStatus;
  slaDeadlineAt: string | null;
  detectedBy: "api" | "deadline";
  job: Job;
}

export interface DeadLetteredData {
  jobId: string;
  attempts: number;
  maxAttempts: number;
  lastError: string | null;
  job: Job;
}

export interface PollFailedData {
  jobId: string;
  consecutiveFailures: number;
  /** Outcome kind and a fixed reason; never a value from a response body. */
  reason: string;
}

export interface NotFoundData {
  jobId: string;
  firstNotFoundAt: string;
}

export interface RejectedData {
  member: string;
  reason: string;
}

export interface EventDataByKind {
  status_changed: StatusChangedData;
  sla_breached: SlaBreachedData;
  dead_lettered: DeadLetteredData;
  poll_failed: PollFailedData;
  not_found: NotFoundData;
  rejected: RejectedData;
}

/** One CloudEvents 1.0 event in structured JSON form. */
export interface CloudEvent<K extends EventKind = EventKind> {
  specversion: "1.0";
  id: string;
  source: string;
  type: `idunox.job.${K}`;
  subject: string;
  time: string;
  datacontenttype: "application/json";
  /** Per subject, from 1, zero-padded to 10 digits so it sorts as text. */
  sequence: string;
  /** `urn:idunox:job-poller:schema:<kind>:<version>`, the `$id` of the JSON Schema of `data`. */
  dataschema: string;
  data: EventDataByKind[K];
}

export type AnyCloudEvent = { [K in EventKind]: CloudEvent<K> }[EventKind];
