import type { JobStatus } from "../api/schema.js";
import type { AnyCloudEvent } from "../events/types.js";
import type { ScriptedResponse, SimJobSpec, SimStep } from "../sim/simulator.js";

/**
 * The demo's dozen jobs, chosen so that every run shows every kind of event. Each step lasts
 * long enough (>= 2.5 s) for a poller that polls every 0.5–2 s to see it, except where a job is
 * meant to be too quick to see. The longest job ends after about 12 s.
 */

/** The demo's poller settings the timings below are made for. */
export const DEMO_SETTINGS = {
  minIntervalMs: 500,
  maxIntervalMs: 2000,
  notFoundGraceMs: 5000,
  failureAlertAfter: 3,
} as const;

/** What the demo saw of one job, for the closing summary. */
export interface Seen {
  events: AnyCloudEvent[];
  /** Ids of the events that also reached the alerts stream. */
  alerts: ReadonlySet<string>;
}

export interface DemoScenario {
  name: string;
  /** Absent: the API never knows this job (it answers 404). */
  spec?: SimJobSpec;
  /** Answers the API gives before the lifecycle's own, in order. */
  script?: ScriptedResponse[];
  /** One line: what the events of this job mean. */
  meaning: string;
  /** True when the job's events show what this scenario is about. */
  shown(seen: Seen): boolean;
}

function steps(...list: Array<[number, JobStatus, Partial<SimStep>?]>): SimStep[] {
  return list.map(([afterMs, status, extra]) => ({ afterMs, status, ...extra }));
}

const statuses = (seen: Seen) =>
  seen.events.flatMap((e) => (e.type === "idunox.job.status_changed" ? [e.data.status] : []));
const ofType = (seen: Seen, type: AnyCloudEvent["type"]) =>
  seen.events.filter((e) => e.type === type);
const breachBy = (seen: Seen, by: "api" | "deadline") =>
  seen.events.some((e) => e.type === "idunox.job.sla_breached" && e.data.detectedBy === by);
const last = (seen: Seen) => statuses(seen).at(-1);

export const DEMO_SCENARIOS: readonly DemoScenario[] = [
  {
    name: "success",
    spec: { steps: steps([1000, "queued"], [3500, "running"], [6500, "succeeded"]) },
    meaning:
      "status_changed, one per status a poll saw; the last one is final (succeeded) and the job leaves the pending set",
    shown: (s) => last(s) === "succeeded",
  },
  {
    name: "failed, retried",
    spec: {
      maxAttempts: 3,
      lastError: "model server returned 503",
      steps: steps(
        [500, "running"],
        [3000, "failed"],
        [6000, "queued"],
        [8500, "running"],
        [11500, "succeeded"],
      ),
    },
    meaning:
      "status_changed to failed, then on: `failed` with attempts left is not final, the pipeline retried and it succeeded",
    shown: (s) => {
      const seen = statuses(s);
      return seen.includes("failed") && seen.at(-1) === "succeeded";
    },
  },
  {
    name: "dead letter",
    spec: {
      maxAttempts: 2,
      lastError: "FHIR store rejected bundle: 422",
      steps: steps([500, "running"], [3000, "failed"], [5500, "running"], [8500, "dead_letter"]),
    },
    meaning:
      "dead_lettered beside status_changed, also on the alerts stream: the attempts are used up and a person must look",
    shown: (s) => ofType(s, "idunox.job.dead_lettered").some((e) => s.alerts.has(e.id)),
  },
  {
    name: "SLA breach (API)",
    spec: {
      slaDeadlineInMs: null,
      steps: steps([500, "running"], [3500, "running", { slaBreached: true }], [7500, "succeeded"]),
    },
    meaning:
      "sla_breached detectedBy=api: the API flagged the job as late (once per job, on alerts)",
    shown: (s) => breachBy(s, "api"),
  },
  {
    name: "SLA breach (deadline)",
    spec: {
      slaDeadlineInMs: 4000,
      flagsDeadlineBreach: false,
      steps: steps([500, "running"], [9000, "succeeded"]),
    },
    meaning:
      "sla_breached detectedBy=deadline: slaDeadlineAt passed on the poller's clock while the job ran; the poller polls at the deadline",
    shown: (s) => breachBy(s, "deadline"),
  },
  {
    name: "404, then visible",
    spec: {
      visibleAfterMs: 2500,
      steps: steps([500, "queued"], [4000, "running"], [7000, "succeeded"]),
    },
    meaning:
      "no not_found: the API answered 404 for 2.5 s, inside the 5 s grace, then the job appeared and its transitions followed",
    shown: (s) => ofType(s, "idunox.job.not_found").length === 0 && last(s) === "succeeded",
  },
  {
    name: "never known",
    meaning:
      "not_found: the API answered 404 for longer than the grace; the id leaves the pending set (on alerts)",
    shown: (s) => ofType(s, "idunox.job.not_found").length === 1,
  },
  {
    name: "bad answers",
    spec: { steps: steps([500, "running"], [8000, "succeeded"]) },
    script: Array.from({ length: DEMO_SETTINGS.failureAlertAfter }, () => ({
      status: 200,
      headers: { "content-type": "text/html" },
      body: "<html><body>Scheduled maintenance</body></html>",
    })),
    meaning: `poll_failed: ${DEMO_SETTINGS.failureAlertAfter} invalid answers in a row (an HTML page); polling went on and the job was still followed to its end`,
    shown: (s) => ofType(s, "idunox.job.poll_failed").length === 1 && last(s) === "succeeded",
  },
  {
    name: "cancelled",
    spec: { steps: steps([500, "queued"], [4000, "cancelled"]) },
    meaning: "status_changed to cancelled: final, like succeeded and dead_letter",
    shown: (s) => last(s) === "cancelled",
  },
  {
    name: "failed, final",
    spec: {
      maxAttempts: 1,
      lastError: "validation failed: missing required element",
      steps: steps([500, "running"], [4000, "failed"]),
    },
    meaning: "status_changed to failed with no attempts left: final, no dead letter",
    shown: (s) => last(s) === "failed",
  },
  {
    name: "too quick to see",
    // Over within 3 ms of its creation: the first poll comes later than that (the id is only
    // added to the pending set after the simulator has the job), so it can only see the end.
    spec: { steps: steps([1, "queued"], [2, "running"], [3, "succeeded"]) },
    meaning:
      "one status_changed, (new) -> succeeded: statuses that came and went between two polls are not invented",
    shown: (s) => statuses(s).join() === "succeeded",
  },
  {
    name: "slow success",
    spec: { steps: steps([500, "running"], [12000, "succeeded"]) },
    meaning:
      "two status_changed over 12 s: while nothing changes the poll interval backs off, so a slow job costs few requests",
    shown: (s) => last(s) === "succeeded",
  },
];

/** Members that are not job ids: never sent to the API, moved to <prefix>rejected. */
export const DEMO_BAD_MEMBERS = ["not-a-job-id", "../../etc/passwd"] as const;

export const BAD_MEMBERS_MEANING =
  "rejected: members that are not job ids are never sent to the API; they move to <prefix>rejected (on alerts)";
