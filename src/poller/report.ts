import type { Logger } from "pino";
import type { PollOutcome } from "../api/outcome.js";
import { isAlert, kindOfType } from "../events/cloudevents.js";
import { ApplyCode, type ClaimedJob, describeApplyCode } from "../store/store.js";
import type { Decision } from "./decide.js";
import type { LoopMetrics } from "./ports.js";

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
  for (const event of decision.events) {
    const kind = kindOfType(event.type);
    metrics?.events?.inc({ type: kind ?? "unknown" });
    const fields = {
      jobId: job.id,
      eventId: event.id,
      type: event.type,
      sequence: event.sequence,
    };
    if (kind !== undefined && isAlert(kind)) log.warn(fields, "alert event emitted");
    else log.info(fields, "event emitted");
  }
  if (outcome.kind === "invalid") {
    log.warn({ jobId: job.id, reason: outcome.reason }, "invalid API response");
  }
}
