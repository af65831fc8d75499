import type { JobStatus } from "../../src/api/schema.js";
import type { AnyCloudEvent } from "../../src/events/types.js";
import { ALERT_KINDS, type EventKind } from "../../src/events/types.js";

/**
 * The exactly-once contract, checked from the outside: everything here is derived from the
 * events stream (in stream order) and what the simulator says each job ended as.
 */
export interface InvariantInput {
  /** Every event of `<prefix>events`, in stream order. */
  events: readonly AnyCloudEvent[];
  /** Job id -> the final status the simulator reached. Only these jobs are checked for finals. */
  finals: ReadonlyMap<string, JobStatus>;
  /** Members of `<prefix>pending` now; they must all be jobs whose final was not emitted. */
  pending?: readonly string[];
  /** Every event of `<prefix>alerts`, when the alerts stream is to be checked too. */
  alerts?: readonly AnyCloudEvent[];
}

export interface InvariantReport {
  /** Empty when every invariant holds; otherwise one line per violation. */
  problems: string[];
  /** Events per kind, for the test's summary line. */
  counts: Record<string, number>;
  /** Jobs of `finals` whose final status (or not_found) is in the stream. */
  finished: number;
}

const TYPE_PREFIX = "idunox.job.";

function kindOf(event: AnyCloudEvent): EventKind {
  return event.type.slice(TYPE_PREFIX.length) as EventKind;
}

function short(id: string): string {
  return id.slice(0, 8);
}

export function checkExactlyOnce(input: InvariantInput): InvariantReport {
  const problems: string[] = [];
  const counts: Record<string, number> = {};
  const ids = new Set<string>();
  const bySubject = new Map<string, AnyCloudEvent[]>();

  for (const event of input.events) {
    const kind = kindOf(event);
    counts[kind] = (counts[kind] ?? 0) + 1;
    if (ids.has(event.id)) problems.push(`duplicate event id ${event.id} (${kind})`);
    ids.add(event.id);
    const list = bySubject.get(event.subject) ?? [];
    list.push(event);
    bySubject.set(event.subject, list);
  }

  for (const [subject, list] of bySubject) {
    const s = short(subject);
    // Per subject, sequence is 1..n in stream order: no gap, no repeat, no reordering.
    list.forEach((event, i) => {
      if (Number(event.sequence) !== i + 1) {
        problems.push(`${s}: event #${i + 1} (${kindOf(event)}) has sequence ${event.sequence}`);
      }
    });

    // A logical transition is (previous, status, attempts): a retried job may legitimately
    // go running -> failed more than once, but never twice within the same attempt.
    const transitions = new Set<string>();
    let previous: JobStatus | null = null;
    let lastUpdatedAt = "";
    const once = new Map<EventKind, number>();
    for (const event of list) {
      const kind = kindOf(event);
      if (kind === "status_changed" && event.type === "idunox.job.status_changed") {
        const d = event.data;
        const key = `${d.previousStatus}->${d.status}@${d.job.attempts}`;
        if (transitions.has(key)) problems.push(`${s}: transition ${key} emitted twice`);
        transitions.add(key);
        if (d.previousStatus !== previous) {
          problems.push(
            `${s}: ${d.previousStatus}->${d.status} does not follow the last status ${previous}`,
          );
        }
        if (d.status === d.previousStatus)
          problems.push(`${s}: status_changed without a change (${d.status})`);
        if (d.job.updatedAt < lastUpdatedAt) {
          problems.push(`${s}: went back in time (${d.job.updatedAt} < ${lastUpdatedAt})`);
        }
        lastUpdatedAt = d.job.updatedAt;
        previous = d.status;
      } else if (kind !== "poll_failed") {
        // sla_breached, dead_lettered, not_found and rejected happen at most once per subject.
        once.set(kind, (once.get(kind) ?? 0) + 1);
      }
    }
    for (const [kind, n] of once) if (n > 1) problems.push(`${s}: ${kind} emitted ${n} times`);
  }

  let finished = 0;
  const finishedIds = new Set<string>();
  for (const [jobId, final] of input.finals) {
    const list = bySubject.get(jobId) ?? [];
    const notFound = list.some((e) => kindOf(e) === "not_found");
    const statuses = list.flatMap((e) =>
      e.type === "idunox.job.status_changed" ? [e.data.status] : [],
    );
    const last = statuses[statuses.length - 1];
    if (last === final || notFound) {
      finished++;
      finishedIds.add(jobId);
    } else {
      problems.push(
        `${short(jobId)}: final ${final} not emitted (last emitted: ${last ?? "none"})`,
      );
    }
    const deadLettered = list.filter((e) => kindOf(e) === "dead_lettered").length;
    if (final === "dead_letter" && last === final && deadLettered !== 1) {
      problems.push(`${short(jobId)}: dead_letter reached with ${deadLettered} dead_lettered`);
    }
  }

  for (const member of input.pending ?? []) {
    if (finishedIds.has(member.toLowerCase())) {
      problems.push(`${short(member)}: still pending after its final event`);
    }
  }

  if (input.alerts !== undefined) {
    const expected = input.events.filter((e) => ALERT_KINDS.has(kindOf(e))).map((e) => e.id);
    const got = input.alerts.map((e) => e.id);
    const seen = new Set<string>();
    for (const id of got) {
      if (seen.has(id)) problems.push(`duplicate alert id ${id}`);
      seen.add(id);
    }
    for (const id of expected) if (!seen.has(id)) problems.push(`alert ${id} missing from alerts`);
    const expectedSet = new Set(expected);
    for (const id of seen) if (!expectedSet.has(id)) problems.push(`alert ${id} not in events`);
  }

  return { problems, counts, finished };
}

/** One line for the test output: what the checker saw. */
export function describeReport(report: InvariantReport): string {
  const kinds = Object.entries(report.counts)
    .map(([k, n]) => `${k}=${n}`)
    .join(" ");
  return `events: ${kinds}; finished jobs: ${report.finished}; problems: ${report.problems.length}`;
}
