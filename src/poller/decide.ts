import type { PollOutcome } from "../api/outcome.js";
import type { Job } from "../api/schema.js";
import { buildEvent, isAlert } from "../events/cloudevents.js";
import type { AnyCloudEvent, EventDataByKind, EventKind } from "../events/types.js";
import type { DurationSnapshot } from "./durations.js";
import {
  type BackoffSettings,
  isFinal,
  isStale,
  jittered,
  nextDueAt,
  nextInterval,
  notFoundExpired,
  shouldAlertPollFailure,
  slaBreachDetection,
} from "./rules.js";
import { choosePredictive, type DurationSample, phaseSamples, phaseStartOf } from "./schedule.js";
import type { JobState } from "./state.js";

export interface DecideSettings extends BackoffSettings {
  notFoundGraceMs: number;
  failureAlertAfter: number;
  eventSource: string;
}

export interface DecideInput {
  jobId: string;
  /** The stored state; a job never polled before has a fresh `initialState`. */
  state: JobState;
  outcome: Exclude<PollOutcome, { kind: "auth" }>;
  now: number;
  /** In [0, 1); injected so the rules stay pure. */
  random: number;
  settings: DecideSettings;
  /**
   * What was learned about phase durations (POLLER_SCHEDULE=predictive), frozen when the
   * snapshot was read; absent or null: the backoff schedules every poll.
   */
  durations?: DurationSnapshot | null;
}

export interface Decision {
  state: JobState;
  events: AnyCloudEvent[];
  /**
   * Whether each event (same index) is an alert, which the store also appends to the alerts
   * stream: decided here with the events, never worked out again from their type strings.
   */
  alerts: boolean[];
  /** When to poll next; null when the job is done with and leaves the pending set. */
  nextDueAt: number | null;
  /** For metrics and logs: what the poll came to after the rules. */
  verdict: "changed" | "unchanged" | "stale" | "not_found" | "failed" | "removed";
  /** Phase durations this change revealed, to be learned once the decision is written. */
  samples: DurationSample[];
  /** Which schedule placed nextDueAt (null when the job leaves). */
  scheduledBy: "backoff" | "predictive" | null;
}

/**
 * Applies one poll outcome to a job's recorded state. Pure: the same input always gives the same
 * decision, which the store then writes atomically (state, events, schedule) or not at all.
 */
export function decide(input: DecideInput): Decision {
  const { outcome } = input;
  switch (outcome.kind) {
    case "ok":
      return decideOk(input, outcome.job);
    case "not_found":
      return decideNotFound(input);
    case "invalid":
    case "transient":
      return decideFailure(input, outcome.reason, outcome.kind === "transient" ? outcome : null);
  }
}

class Emitter {
  readonly events: AnyCloudEvent[] = [];
  readonly alerts: boolean[] = [];
  constructor(
    private readonly input: DecideInput,
    private sequence: number,
  ) {}
  emit<K extends EventKind>(kind: K, data: EventDataByKind[K]): void {
    this.sequence += 1;
    const event = buildEvent({
      kind,
      source: this.input.settings.eventSource,
      subject: this.input.jobId,
      epoch: this.input.state.epoch,
      sequence: this.sequence,
      timeMs: this.input.now,
      data,
    });
    this.events.push(event as AnyCloudEvent);
    this.alerts.push(isAlert(kind));
  }
  get lastSequence(): number {
    return this.sequence;
  }
}

function decideOk(input: DecideInput, job: Job): Decision {
  const { state, now, settings } = input;
  const updatedAtMs = Date.parse(job.updatedAt);

  if (isStale(updatedAtMs, state.updatedAtMs)) {
    const intervalMs = nextInterval(state.intervalMs, false, settings);
    return {
      state: {
        ...state,
        consecutiveFailures: 0,
        pollFailedReported: false,
        firstNotFoundAtMs: null,
        version: state.version + 1,
        intervalMs,
      },
      events: [],
      alerts: [],
      nextDueAt: schedule(input, intervalMs, state.slaDeadlineMs, state.slaReported),
      verdict: "stale",
      samples: [],
      scheduledBy: "backoff",
    };
  }

  const out = new Emitter(input, state.sequence);
  const changed = job.status !== state.status;
  if (changed) {
    out.emit("status_changed", {
      jobId: input.jobId,
      previousStatus: state.status,
      status: job.status,
      job,
    });
    if (job.status === "dead_letter") {
      out.emit("dead_lettered", {
        jobId: input.jobId,
        attempts: job.attempts,
        maxAttempts: job.maxAttempts,
        lastError: job.lastError,
        job,
      });
    }
  }
  const detectedBy = slaBreachDetection(job, now, state.slaReported);
  if (detectedBy !== null) {
    out.emit("sla_breached", {
      jobId: input.jobId,
      status: job.status,
      slaDeadlineAt: job.slaDeadlineAt,
      detectedBy,
      job,
    });
  }

  const final = isFinal(job);
  const slaDeadlineMs = job.slaDeadlineAt === null ? null : Date.parse(job.slaDeadlineAt);
  const slaReported = state.slaReported || detectedBy !== null;
  const intervalMs = nextInterval(state.intervalMs, changed, settings);
  const phaseStartMs = phaseStartOf(job);
  const samples = changed ? phaseSamples(state, job) : [];
  let nextDue: number | null = null;
  let scheduledBy: Decision["scheduledBy"] = null;
  if (!final) {
    const predicted = predictiveDueAt(input, job, phaseStartMs, slaDeadlineMs, slaReported);
    scheduledBy = predicted === null ? "backoff" : "predictive";
    nextDue = predicted ?? schedule(input, intervalMs, slaDeadlineMs, slaReported);
  }
  return {
    // Every field is set here: a literal, not a copy of `state`, on the path of every poll.
    state: {
      version: state.version + 1,
      epoch: state.epoch,
      sequence: out.lastSequence,
      status: job.status,
      updatedAtMs,
      intervalMs,
      consecutiveFailures: 0,
      pollFailedReported: false,
      firstNotFoundAtMs: null,
      slaReported,
      slaDeadlineMs,
      final,
      type: job.type,
      phaseStartMs,
    },
    events: out.events,
    alerts: out.alerts,
    nextDueAt: nextDue,
    verdict: final ? "removed" : changed ? "changed" : "unchanged",
    samples,
    scheduledBy,
  };
}

/**
 * The predictive placement, or null when the backoff decides (no snapshot, too little history,
 * no learned phase). The interval is jittered like the backoff's, then held inside
 * [min, max]: the bounds hold whatever the statistics say. The SLA deadline still comes first.
 */
function predictiveDueAt(
  input: DecideInput,
  job: Job,
  phaseStartMs: number | null,
  slaDeadlineMs: number | null,
  slaReported: boolean,
): number | null {
  const { durations, settings, now } = input;
  if (durations == null) return null;
  const choice = choosePredictive(
    durations,
    { type: job.type, status: job.status, phaseStartMs },
    now,
    settings,
  );
  if (choice === null) return null;
  const delayMs = Math.min(
    settings.maxIntervalMs,
    Math.max(settings.minIntervalMs, jittered(choice.intervalMs, settings.jitter, input.random)),
  );
  return nextDueAt({ now, delayMs, slaDeadlineMs, slaReported });
}

function decideNotFound(input: DecideInput): Decision {
  const { state, now, settings } = input;
  if (state.final) {
    // A finished job added again that the API has since purged: its final event was already
    // emitted, so it leaves quietly rather than raising a not_found alert.
    return {
      state: { ...state, version: state.version + 1 },
      events: [],
      alerts: [],
      nextDueAt: null,
      verdict: "removed",
      samples: [],
      scheduledBy: null,
    };
  }
  const firstNotFoundAtMs = state.firstNotFoundAtMs ?? now;
  const intervalMs = nextInterval(state.intervalMs, false, settings);
  const base = {
    ...state,
    version: state.version + 1,
    consecutiveFailures: 0,
    pollFailedReported: false,
  };

  if (notFoundExpired(firstNotFoundAtMs, now, settings.notFoundGraceMs)) {
    const out = new Emitter(input, state.sequence);
    out.emit("not_found", {
      jobId: input.jobId,
      firstNotFoundAt: new Date(firstNotFoundAtMs).toISOString(),
    });
    // The streak is closed: if a producer adds the id again, it gets a fresh grace period.
    return {
      state: { ...base, sequence: out.lastSequence, firstNotFoundAtMs: null, intervalMs: null },
      events: out.events,
      alerts: out.alerts,
      nextDueAt: null,
      verdict: "removed",
      samples: [],
      scheduledBy: null,
    };
  }
  // Poll again no later than the end of the grace period, so `not_found` is not late.
  const due = nextDueAt({
    now,
    delayMs: jittered(intervalMs, settings.jitter, input.random),
    slaDeadlineMs: null,
    slaReported: true,
    notAfterMs: firstNotFoundAtMs + settings.notFoundGraceMs,
  });
  return {
    state: { ...base, firstNotFoundAtMs, intervalMs },
    events: [],
    alerts: [],
    nextDueAt: due,
    verdict: "not_found",
    samples: [],
    scheduledBy: "backoff",
  };
}

function decideFailure(
  input: DecideInput,
  reason: string,
  transient: { retryAfterMs?: number } | null,
): Decision {
  const { state, now, settings } = input;
  const consecutiveFailures = state.consecutiveFailures + 1;
  const out = new Emitter(input, state.sequence);
  const alert = shouldAlertPollFailure(
    consecutiveFailures,
    settings.failureAlertAfter,
    state.pollFailedReported,
  );
  if (alert) {
    out.emit("poll_failed", { jobId: input.jobId, consecutiveFailures, reason });
  }
  const intervalMs = nextInterval(state.intervalMs, false, settings);
  const retryAfterMs = transient?.retryAfterMs;
  return {
    state: {
      ...state,
      version: state.version + 1,
      sequence: out.lastSequence,
      consecutiveFailures,
      pollFailedReported: state.pollFailedReported || alert,
      intervalMs,
    },
    events: out.events,
    alerts: out.alerts,
    nextDueAt: schedule(
      input,
      intervalMs,
      state.slaDeadlineMs,
      state.slaReported,
      retryAfterMs === undefined ? null : now + retryAfterMs,
    ),
    verdict: "failed",
    samples: [],
    scheduledBy: "backoff",
  };
}

function schedule(
  input: DecideInput,
  intervalMs: number,
  slaDeadlineMs: number | null,
  slaReported: boolean,
  notBeforeMs: number | null = null,
): number {
  return nextDueAt({
    now: input.now,
    delayMs: jittered(intervalMs, input.settings.jitter, input.random),
    slaDeadlineMs,
    slaReported,
    notBeforeMs,
  });
}
