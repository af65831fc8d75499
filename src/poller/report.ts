import type { Logger } from "pino";
import type { PollOutcome } from "../api/outcome.js";
import { kindOfType } from "../events/cloudevents.js";
import { ApplyCode, type ClaimedJob, describeApplyCode } from "../store/store.js";
import type { Decision } from "./decide.js";
import type { LoopMetrics } from "./ports.js";
import type { DurationSample } from "./schedule.js";

/**
 * What one poll came to once its decision was written (or dropped, or given up on): the poll
 * and event metrics and the per-event log lines. Counted here, after the write, so that a
 * metric never reports an event that did not reach the stream.
 */
export function reportWrite(
  log: Logger,
  metrics: LoopMetrics | undefined,
  job: ClaimedJob,
  outcome: Exclude<PollOutcome, { kind: "auth" }>,
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
    log.warn({ jobId: job.id, code }, `decision dropped: ${describeApplyCode(code)}`);
    return;
  }
  metrics?.polls?.inc({ outcome: decision.verdict === "stale" ? "stale" : outcome.kind });
  if (decision.scheduledBy !== null) metrics?.scheduled?.inc({ schedule: decision.scheduledBy });
  // Learned and measured only once written: a dropped decision's change is seen again by
  // whoever writes it, so each change counts once.
  if (decision.samples.length > 0) learn?.(decision.samples);
  if (outcome.kind === "ok" && job.state.status !== null && decision.verdict !== "stale") {
    const body = outcome.job;
    if (body.status !== job.state.status) {
      metrics?.detectionDelay?.observe(
        { type: body.type },
        (decidedAt - Date.parse(body.updatedAt)) / 1000,
      );
    }
  }
  for (let i = 0; i < decision.events.length; i++) {
    const event = decision.events[i] as Decision["events"][number];
    const kind = kindOfType(event.type);
    metrics?.events?.inc({ type: kind ?? "unknown" });
    const fields = {
      jobId: job.id,
      eventId: event.id,
      type: event.type,
      sequence: event.sequence,
    };
    if (decision.alerts[i] === true) log.warn(fields, "alert event emitted");
    else log.info(fields, "event emitted");
  }
  if (outcome.kind === "invalid") {
    log.warn({ jobId: job.id, reason: outcome.reason }, "invalid API response");
  }
}
