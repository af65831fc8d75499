import { isJobId } from "../api/schema.js";
import { SETTINGS } from "../config/schema.js";
import { DurationSnapshot } from "../poller/durations.js";
import { explainSchedule, type IntervalBounds } from "../poller/schedule.js";
import { DurationStore } from "../store/durations.js";
import { EXIT, parseCommandArgs, UsageError } from "./common.js";
import { REDIS_HELP, REDIS_OPTIONS, withStore } from "./redis-args.js";

const HELP = `Usage: idunox-poller status [options] [jobId]

Without a job id: tracked jobs, due backlog, schedule lag, rejected members, consumer groups,
the replicas' heartbeats (API key state, leases) and the phase durations learned per job type
(samples, p50, p90). With a job id: its stored state, when it is polled next and why (read
with POLLER_SCHEDULE, POLLER_MIN_INTERVAL_MS and POLLER_MAX_INTERVAL_MS from the environment,
as the daemon would).

Options:
${REDIS_HELP}
  --json            print JSON
Exit codes: 0 ok, 1 Redis failed or job unknown, 2 usage.`;

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** A setting as the daemon would read it from this environment; its default if unset or bad. */
function envSetting<T>(s: {
  env: string;
  fallback: unknown;
  schema: { safeParse(v: string): { success: boolean; data?: T } };
}): T {
  const raw = process.env[s.env]?.trim();
  const parsed = raw === undefined || raw === "" ? undefined : s.schema.safeParse(raw);
  if (parsed?.success) return parsed.data as T;
  return s.schema.safeParse(String(s.fallback)).data as T;
}

function scheduleSettings(): { predictive: boolean; bounds: IntervalBounds } {
  return {
    predictive: envSetting<string>(SETTINGS.schedule) === "predictive",
    bounds: {
      minIntervalMs: envSetting<number>(SETTINGS.minIntervalMs),
      maxIntervalMs: envSetting<number>(SETTINGS.maxIntervalMs),
    },
  };
}

const seconds = (ms: number) => Math.round(ms) / 1000;

/** The learned durations, one row per type and phase, for operators. */
function learned(snapshot: DurationSnapshot): Array<Record<string, unknown>> {
  return snapshot.entries().map(({ type, phase, distribution: d }) => ({
    type,
    phase,
    samples: d.samples,
    weight: Math.round(d.total),
    p50Seconds: seconds(d.quantile(0.5)),
    p90Seconds: seconds(d.quantile(0.9)),
    updatedAt: iso(d.updatedAtMs),
  }));
}

export async function runStatusCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    { ...REDIS_OPTIONS, json: { type: "boolean" } },
    true,
  );
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  if (positionals.length > 1) throw new UsageError("status takes at most one job id");
  return withStore(values, async ({ redis, store }) => {
    const out = (obj: Record<string, unknown>) => {
      if (values.json) process.stdout.write(`${JSON.stringify(obj)}\n`);
      else
        for (const [k, v] of Object.entries(obj))
          process.stdout.write(
            `${k.padEnd(22)} ${typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)}\n`,
          );
    };
    const [member] = positionals;
    if (member !== undefined) {
      if (!isJobId(member)) throw new UsageError(`"${member.slice(0, 40)}" is not a job id (UUID)`);
      const id = member.toLowerCase();
      const job = await store.job(id);
      if (job.state === null && job.dueAt === null && !job.pending) {
        process.stderr.write(`idunox-poller status: job ${id} is not known here\n`);
        return EXIT.failure;
      }
      const s = job.state;
      const now = Date.now();
      const { predictive, bounds } = scheduleSettings();
      const snapshot = predictive
        ? new DurationSnapshot(
            (await new DurationStore(redis, store.keys.durations).read()).histograms,
          )
        : null;
      let why: string;
      if (job.dueAt === null) why = "not scheduled: done with (final, not found or untracked)";
      else if (job.dueAt === 0) why = "never polled: due now";
      else if ((s?.consecutiveFailures ?? 0) > 0) why = "backoff: the last poll failed";
      else
        why = explainSchedule(
          snapshot,
          s ?? { type: null, status: null, phaseStartMs: null },
          now,
          bounds,
        );
      out({
        jobId: id,
        pending: job.pending,
        scheduled: job.dueAt !== null,
        nextPollAt:
          job.dueAt === null ? null : job.dueAt === 0 ? "now (never polled)" : iso(job.dueAt),
        whyThen: why,
        status: s?.status ?? null,
        type: s?.type ?? null,
        phaseStartedAt: iso(s?.phaseStartMs ?? null),
        updatedAt: iso(s?.updatedAtMs ?? null),
        lastSequence: s?.sequence ?? 0,
        intervalMs: s?.intervalMs ?? null,
        consecutiveFailures: s?.consecutiveFailures ?? 0,
        slaBreachReported: s?.slaReported ?? false,
        slaDeadlineAt: iso(s?.slaDeadlineMs ?? null),
        notFoundSince: iso(s?.firstNotFoundAtMs ?? null),
        final: s?.final ?? false,
      });
      return EXIT.ok;
    }
    const now = Date.now();
    const stats = await store.stats(now);
    const replicas = (await store.heartbeats()).map(({ id, beat }) => ({
      id,
      ageSeconds: Math.round((now - beat.at) / 1000),
      ...beat,
      at: undefined,
    }));
    out({
      pendingKey: store.keys.pending,
      tracked: stats.tracked,
      dueBacklog: stats.dueBacklog,
      scheduleLagSeconds: stats.scheduleLagSeconds,
      rejected: stats.rejected,
      consumerGroups: stats.groups,
      replicas,
      learnedDurations: learned(
        new DurationSnapshot(
          (await new DurationStore(redis, store.keys.durations).read()).histograms,
        ),
      ),
    });
    return EXIT.ok;
  });
}
