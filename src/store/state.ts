import type { JobStatus, JobType } from "../api/schema.js";
import { JOB_STATUSES, JOB_TYPES } from "../api/schema.js";

/**
 * What the poller remembers about one job between polls. It lives in Redis (one field of the
 * `<prefix>state` hash), never in the daemon's memory, and is written only by the replica that
 * holds the job's lease, through a compare-and-set on `version`.
 */
export interface JobState {
  /** Incremented on every write; the compare-and-set token of the apply script. */
  version: number;
  /** Random per history, part of event ids (see `eventId`). */
  epoch: string;
  /** Sequence of the last event emitted for this job. */
  sequence: number;
  status: JobStatus | null;
  updatedAtMs: number | null;
  intervalMs: number | null;
  consecutiveFailures: number;
  pollFailedReported: boolean;
  firstNotFoundAtMs: number | null;
  slaReported: boolean;
  slaDeadlineMs: number | null;
  final: boolean;
  /** The job's type as last observed; null before the first observation. */
  type: JobType | null;
  /** When the job entered its current phase (queued or running), by the API's clock. */
  phaseStartMs: number | null;
}

// Stored as `<version>|<json array>`: the version prefix is what the Lua compare-and-set reads,
// and a positional array keeps the per-job footprint small with many thousands of jobs.
// Fields added later go at the end, so a state written by an older version still decodes.
const STATUS_INDEX = new Map<JobStatus, number>(JOB_STATUSES.map((s, i) => [s, i]));
const TYPE_INDEX = new Map<JobType, number>(JOB_TYPES.map((t, i) => [t, i]));

export function encodeState(s: JobState): string {
  const body = [
    s.epoch,
    s.sequence,
    s.status === null ? -1 : STATUS_INDEX.get(s.status),
    s.updatedAtMs,
    s.intervalMs,
    s.consecutiveFailures,
    s.pollFailedReported ? 1 : 0,
    s.firstNotFoundAtMs,
    s.slaReported ? 1 : 0,
    s.slaDeadlineMs,
    s.final ? 1 : 0,
    s.type === null ? -1 : TYPE_INDEX.get(s.type),
    s.phaseStartMs,
  ];
  return `${s.version}|${JSON.stringify(body)}`;
}

export class StateDecodeError extends Error {
  readonly code = "STATE_CORRUPT";
}

function num(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

export function decodeState(raw: string): JobState {
  const bar = raw.indexOf("|");
  const version = Number(raw.slice(0, bar));
  let body: unknown;
  try {
    body = JSON.parse(raw.slice(bar + 1));
  } catch {
    throw new StateDecodeError("stored job state is not valid JSON");
  }
  if (bar <= 0 || !Number.isInteger(version) || !Array.isArray(body) || body.length < 11) {
    throw new StateDecodeError("stored job state has an unknown layout");
  }
  const statusIndex = num(body[2]);
  const status =
    statusIndex === null || statusIndex < 0 ? null : (JOB_STATUSES[statusIndex] ?? null);
  const typeIndex = num(body[11]);
  const type = typeIndex === null || typeIndex < 0 ? null : (JOB_TYPES[typeIndex] ?? null);
  return {
    version,
    epoch: String(body[0]),
    sequence: num(body[1]) ?? 0,
    status,
    updatedAtMs: num(body[3]),
    intervalMs: num(body[4]),
    consecutiveFailures: num(body[5]) ?? 0,
    pollFailedReported: body[6] === 1,
    firstNotFoundAtMs: num(body[7]),
    slaReported: body[8] === 1,
    slaDeadlineMs: num(body[9]),
    final: body[10] === 1,
    type,
    phaseStartMs: num(body[12]),
  };
}

export function initialState(epoch: string): JobState {
  return {
    version: 0,
    epoch,
    sequence: 0,
    status: null,
    updatedAtMs: null,
    intervalMs: null,
    consecutiveFailures: 0,
    pollFailedReported: false,
    firstNotFoundAtMs: null,
    slaReported: false,
    slaDeadlineMs: null,
    final: false,
    type: null,
    phaseStartMs: null,
  };
}
