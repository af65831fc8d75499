import { isJobId } from "../api/schema.js";
import { EXIT, parseCommandArgs, UsageError } from "./common.js";
import { REDIS_HELP, REDIS_OPTIONS, withStore } from "./redis-args.js";

const HELP = `Usage: idunox-poller status [options] [jobId]

Without a job id: tracked jobs, due backlog, schedule lag, rejected members, consumer groups
and the replicas' heartbeats (API key state, leases). With a job id: its stored state and
when it is polled next.

Options:
${REDIS_HELP}
  --json            print JSON
Exit codes: 0 ok, 1 Redis failed or job unknown, 2 usage.`;

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
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
      out({
        jobId: id,
        pending: job.pending,
        scheduled: job.dueAt !== null,
        nextPollAt:
          job.dueAt === null ? null : job.dueAt === 0 ? "now (never polled)" : iso(job.dueAt),
        status: s?.status ?? null,
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
    const beats = await redis.hgetall(store.keys.replicas);
    const replicas = Object.entries(beats).map(([id, raw]) => {
      const beat = JSON.parse(raw) as { at: number } & Record<string, unknown>;
      return { id, ageSeconds: Math.round((now - beat.at) / 1000), ...beat, at: undefined };
    });
    out({
      pendingKey: store.keys.pending,
      tracked: stats.tracked,
      dueBacklog: stats.dueBacklog,
      scheduleLagSeconds: stats.scheduleLagSeconds,
      rejected: stats.rejected,
      consumerGroups: stats.groups,
      replicas,
    });
    return EXIT.ok;
  });
}
