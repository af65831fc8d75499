import { describe, expect, it } from "vitest";
import type { JobStatus } from "../../../src/api/schema.js";
import { buildEvent } from "../../../src/events/cloudevents.js";
import type { AnyCloudEvent } from "../../../src/events/types.js";
import { jobBody } from "../../fixtures/job.js";
import { checkExactlyOnce } from "../../helpers/invariants.js";

const JOB = "6f1c2a9e-1b7d-4c3e-9a10-2f4b5c6d7e8f";
const SOURCE = "urn:test";

function change(
  sequence: number,
  previousStatus: JobStatus | null,
  status: JobStatus,
  attempts = 1,
): AnyCloudEvent {
  const updatedAt = new Date(Date.UTC(2026, 3, 20, 9, 0, sequence)).toISOString();
  return buildEvent({
    kind: "status_changed",
    source: SOURCE,
    subject: JOB,
    epoch: "e1",
    sequence,
    timeMs: 0,
    data: {
      jobId: JOB,
      previousStatus,
      status,
      job: jobBody({ jobId: JOB, status, attempts, updatedAt }),
    },
  }) as AnyCloudEvent;
}

const finals = new Map<string, JobStatus>([[JOB, "succeeded"]]);

/** queued -> running -> failed -> queued -> running -> succeeded: a retry repeats transitions. */
function retriedLifecycle(): AnyCloudEvent[] {
  return [
    change(1, null, "queued", 0),
    change(2, "queued", "running", 1),
    change(3, "running", "failed", 1),
    change(4, "failed", "queued", 1),
    change(5, "queued", "running", 2),
    change(6, "running", "succeeded", 2),
  ];
}

describe("checkExactlyOnce", () => {
  it("accepts a clean history, retries included", () => {
    const report = checkExactlyOnce({ events: retriedLifecycle(), finals, pending: [] });
    expect(report.problems).toEqual([]);
    expect(report.finished).toBe(1);
    expect(report.counts).toEqual({ status_changed: 6 });
  });

  it("flags a duplicated event", () => {
    const events = retriedLifecycle();
    events.splice(2, 0, events[1] as AnyCloudEvent);
    const { problems } = checkExactlyOnce({ events, finals });
    expect(problems.some((p) => p.startsWith("duplicate event id"))).toBe(true);
    expect(problems.some((p) => p.includes("emitted twice"))).toBe(true);
  });

  it("flags a sequence gap and a broken previousStatus chain", () => {
    const events = retriedLifecycle();
    events.splice(3, 1);
    const { problems } = checkExactlyOnce({ events, finals });
    expect(problems.some((p) => p.includes("has sequence 0000000005"))).toBe(true);
    expect(problems.some((p) => p.includes("does not follow the last status failed"))).toBe(true);
  });

  it("flags a missing final, a job left pending and an alert missing from alerts", () => {
    const events = retriedLifecycle().slice(0, 5);
    const breach = buildEvent({
      kind: "sla_breached",
      source: SOURCE,
      subject: JOB,
      epoch: "e1",
      sequence: 6,
      timeMs: 0,
      data: {
        jobId: JOB,
        status: "running",
        slaDeadlineAt: null,
        detectedBy: "api",
        job: jobBody({ jobId: JOB }),
      },
    }) as AnyCloudEvent;
    const report = checkExactlyOnce({ events: [...events, breach], finals, alerts: [] });
    expect(report.finished).toBe(0);
    expect(report.problems.some((p) => p.includes("final succeeded not emitted"))).toBe(true);
    expect(report.problems.some((p) => p.includes("missing from alerts"))).toBe(true);

    const done = checkExactlyOnce({ events: retriedLifecycle(), finals, pending: [JOB] });
    expect(done.problems.some((p) => p.includes("still pending"))).toBe(true);
  });
});
