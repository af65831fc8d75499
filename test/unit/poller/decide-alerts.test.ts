import { describe, expect, it } from "vitest";
import type { PollOutcome } from "../../../src/api/outcome.js";
import { isAlert, kindOfType } from "../../../src/events/cloudevents.js";
import { decide } from "../../../src/poller/decide.js";
import { initialState, type JobState } from "../../../src/poller/state.js";
import { decideSettings, T0, TEST_JOB_ID } from "../../fixtures/decide.js";
import { jobBody } from "../../fixtures/job.js";

const settings = decideSettings({ failureAlertAfter: 2 });
const jobId = TEST_JOB_ID;

describe("decide: each event carries its alert flag", () => {
  it("flags exactly the alert kinds, in the order of the events", () => {
    const at = (ms: number) => new Date(ms).toISOString();
    const steps: Array<{ outcome: Exclude<PollOutcome, { kind: "auth" }>; now: number }> = [
      {
        outcome: { kind: "ok", job: jobBody({ jobId, status: "running", updatedAt: at(T0) }) },
        now: T0,
      },
      { outcome: { kind: "transient", reason: "timeout" }, now: T0 + 1000 },
      { outcome: { kind: "transient", reason: "timeout" }, now: T0 + 2000 },
      {
        outcome: {
          kind: "ok",
          job: jobBody({ jobId, status: "dead_letter", updatedAt: at(T0 + 3000) }),
        },
        now: T0 + 3000,
      },
    ];
    let state: JobState = initialState("e");
    const seen: Array<[string, boolean]> = [];
    for (const { outcome, now } of steps) {
      const d = decide({ jobId, state, outcome, now, random: 0.5, settings });
      expect(d.alerts).toHaveLength(d.events.length);
      d.events.forEach((e, i) => {
        seen.push([e.type, d.alerts[i] as boolean]);
      });
      state = d.state;
    }
    for (const [type, alert] of seen) {
      const kind = kindOfType(type);
      expect({ type, alert }).toEqual({ type, alert: kind !== undefined && isAlert(kind) });
    }
    // The run produced both kinds, so the flag was checked each way.
    expect(seen.some(([, a]) => a)).toBe(true);
    expect(seen.some(([, a]) => !a)).toBe(true);
  });
});
