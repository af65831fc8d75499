import { describe, expect, it } from "vitest";
import type { PollOutcome } from "../../../src/api/outcome.js";
import type { JobStatus } from "../../../src/api/schema.js";
import { decide } from "../../../src/poller/decide.js";
import { pollReport, reportWrite } from "../../../src/poller/report.js";
import { initialState, type JobState } from "../../../src/poller/state.js";
import { Metrics } from "../../../src/server/metrics.js";
import { ApplyCode, type ClaimedJob } from "../../../src/store/store.js";
import { decideSettings, T0, TEST_JOB_ID } from "../../fixtures/decide.js";
import { jobBody } from "../../fixtures/job.js";
import { silentLogger } from "./fakes.js";

const settings = decideSettings({ jitter: 0 });
const jobId = TEST_JOB_ID;

type Outcome = Exclude<PollOutcome, { kind: "auth" }>;

function ok(status: JobStatus, updatedAtMs: number): Outcome {
  return {
    kind: "ok",
    job: jobBody({ jobId, status, updatedAt: new Date(updatedAtMs).toISOString() }),
  };
}

/** A claim of the job whose recorded state is what `first` (polled at T0) left. */
function claimAfter(first: Outcome | null): ClaimedJob {
  let state: JobState = initialState("e1");
  if (first !== null)
    state = decide({ jobId, state, outcome: first, now: T0, random: 0, settings }).state;
  return { id: jobId, lease: 7, state, stateReset: false };
}

function decided(job: ClaimedJob, outcome: Outcome, now: number) {
  const decision = decide({ jobId, state: job.state, outcome, now, random: 0, settings });
  return { decision, report: pollReport(job, outcome, decision) };
}

async function polls(metrics: Metrics, outcome: string): Promise<number> {
  return (await metrics.polls.get()).values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
}

async function events(metrics: Metrics, type: string): Promise<number> {
  return (await metrics.events.get()).values.find((v) => v.labels.type === type)?.value ?? 0;
}

describe("pollReport", () => {
  it("keeps a seen status change's type and time, not the response body", () => {
    const job = claimAfter(ok("queued", T0));
    const { report } = decided(job, ok("running", T0 + 4000), T0 + 5000);
    expect(report).toEqual({
      jobId,
      outcome: "ok",
      invalidReason: undefined,
      change: { type: jobBody({ jobId }).type, updatedAtMs: T0 + 4000 },
    });
    expect(Object.keys(report)).not.toContain("job");
  });

  it("sees no change on the first observation, an unchanged status or a stale answer", () => {
    expect(decided(claimAfter(null), ok("queued", T0), T0).report.change).toBeNull();
    const job = claimAfter(ok("running", T0));
    expect(decided(job, ok("running", T0 + 1000), T0 + 2000).report.change).toBeNull();
    const stale = decided(job, ok("queued", T0 - 1000), T0 + 2000).report;
    expect(stale.outcome).toBe("stale");
    expect(stale.change).toBeNull();
  });

  it("carries the reason of an invalid answer", () => {
    const job = claimAfter(null);
    const { report } = decided(job, { kind: "invalid", reason: "body is not json" }, T0);
    expect(report.outcome).toBe("invalid");
    expect(report.invalidReason).toBe("body is not json");
  });
});

describe("reportWrite", () => {
  /** queued, then running (changed at T0 + 4 s) seen at `now`. */
  const runningSeenAt = (now: number) =>
    decided(claimAfter(ok("queued", T0)), ok("running", T0 + 4000), now);

  it("counts a written poll, its events and its detection delay", async () => {
    const metrics = new Metrics();
    const { decision, report } = runningSeenAt(T0 + 5500);
    reportWrite(silentLogger, metrics, report, decision, ApplyCode.Written, T0 + 5500);
    expect(await polls(metrics, "ok")).toBe(1);
    expect(await events(metrics, "status_changed")).toBe(1);
    const delay = (await metrics.detectionDelay.get()).values.find(
      (v) => v.metricName?.endsWith("_sum") === true && v.labels.type === report.change?.type,
    );
    expect(delay?.value).toBeCloseTo(1.5, 6);
  });

  it("counts a dropped or abandoned write as such, with no events", async () => {
    const metrics = new Metrics();
    const { decision, report } = runningSeenAt(T0 + 5000);
    reportWrite(silentLogger, metrics, report, decision, ApplyCode.LeaseLost, T0 + 5000);
    reportWrite(silentLogger, metrics, report, decision, null, T0 + 5000);
    expect(await polls(metrics, "lease_lost")).toBe(1);
    expect(await polls(metrics, "not_written")).toBe(1);
    expect(await polls(metrics, "ok")).toBe(0);
    expect(await events(metrics, "status_changed")).toBe(0);
  });
});
