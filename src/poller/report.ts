import type { Logger } from "pino";
import type { PollOutcome, PollOutcomeKind } from "../api/outcome.js";
import { kindOfType } from "../events/cloudevents.js";
import { ApplyCode, type ClaimedJob, describeApplyCode } from "../store/store.js";
import type { Decision } from "./decide.js";
import type { LoopMetrics } from "./ports.js";
import type { DurationSample } from "./schedule.js";

/**
 * What reporting needs of one poll, taken when it is decided. The write callback holds this
 * rather than the poll's outcome and claim, so the parsed response body and the stored state
 * it replaced can be collected while the write is out: under load that is the difference
 * between dying young and being promoted to the old generation (docs/benchmarks.md).
 */
export interface PollReport {
  jobId: string;
  /** The `polls_total` outcome once written. */
  outcome: "stale" | Exclude<PollOutcomeKind, "auth">;
  /** Why the response was invalid (outcome "invalid"). */
  invalidReason: string | undefined;
  /** A status change seen by this poll: its job type and when the API says it happened. */
  change: { type: string; updatedAtMs: number } | null;
}

/** Takes what `reportWrite` needs from one decided poll. */
export function pollReport(
  job: ClaimedJob,
  outcome: Exclude<PollOutcome, { kind: "auth" }>,
  decision: Decision,
): PollReport {
  const stale = decision.verdict === "stale";
  let change: PollReport["change"] = null;
  if (outcome.kind === "ok" && job.state.status !== null && !stale) {
    const body = outcome.job;
    if (body.status !== job.state.status) {
      change = { type: body.type, updatedAtMs: Date.parse(body.updatedAt) };
    }
  }
  return {
    jobId: job.id,
    outcome: stale ? "stale" : outcome.kind,
    invalidReason: outcome.kind === "invalid" ? outcome.reason : undefined,
    change,
  };
}

/**
 * What one poll came to once its decision was written (or dropped, or given up on): the poll
 * and event metrics and the per-event log lines. Counted here, after the write, so that a
 * metric never reports an event that did not reach the stream.
 */
export function reportWrite(
  log: Logger,
  metrics: LoopMetrics | undefined,
  poll: PollReport,
  decision: Decision,
  code: ApplyCode | null,
  /** When the decision was made: the observation time of the detection delay. */
  decidedAt: number,
  learn?: (samples: readonly DurationSample[]) => void,
): void {
  if (code === null) {
    metrics?.polls?.inc({ outcome: "not_written" });
    return;
  }
  if (code !== ApplyCode.Written) {
    metrics?.polls?.inc({ outcome: code === ApplyCode.LeaseLost ? "lease_lost" : "conflict" });
    log.warn({ jobId: poll.jobId, code }, `decision dropped: ${describeApplyCode(code)}`);
    return;
  }
  metrics?.polls?.inc({ outcome: poll.outcome });
  if (decision.scheduledBy !== null) metrics?.scheduled?.inc({ schedule: decision.scheduledBy });
  // Learned and measured only once written: a dropped decision's change is seen again by
  // whoever writes it, so each change counts once.
  if (decision.samples.length > 0) learn?.(decision.samples);
  if (poll.change !== null) {
    metrics?.detectionDelay?.observe(
      { type: poll.change.type },
      (decidedAt - poll.change.updatedAtMs) / 1000,
    );
  }
  for (let i = 0; i < decision.events.length; i++) {
    const event = decision.events[i] as Decision["events"][number];
    const kind = kindOfType(event.type);
    metrics?.events?.inc({ type: kind ?? "unknown" });
    const fields = {
      jobId: poll.jobId,
      eventId: event.id,
      type: event.type,
      sequence: event.sequence,
    };
    if (decision.alerts[i] === true) log.warn(fields, "alert event emitted");
    else log.info(fields, "event emitted");
  }
  if (poll.invalidReason !== undefined) {
    log.warn({ jobId: poll.jobId, reason: poll.invalidReason }, "invalid API response");
  }
}
