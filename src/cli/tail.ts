import { entryFields } from "../events/cloudevents.js";
import type { AnyCloudEvent } from "../events/types.js";
import { EXIT, parseCommandArgs, UsageError, watchInterrupt } from "./common.js";
import { REDIS_HELP, REDIS_OPTIONS, withStore } from "./redis-args.js";

const HELP = `Usage: idunox-poller tail [options]

Follows the events stream. Readable lines by default (type, job, status; never patient
fields), or one CloudEvent JSON per line with --json.

Options:
${REDIS_HELP}
  --stream NAME       events (default) or alerts
  --from ID           start after this stream id: $ (default, new only) or 0 (from the start)
  --group NAME        read as this consumer group (created at --from if missing) and XACK
  --consumer NAME     consumer name within the group (default: tail-<pid>)
  --count N           exit after N events
  --json              print each event as JSON
Exit codes: 0 ok, 1 Redis failed, 2 usage.`;

/** One readable line per event. Only ids, types and statuses: nothing a patient field holds. */
export function formatEvent(event: AnyCloudEvent): string {
  const head = `${event.time} ${event.type.replace("idunox.job.", "").padEnd(14)} ${event.subject.length > 36 ? `${event.subject.slice(0, 33)}...` : event.subject} #${Number(event.sequence)}`;
  switch (event.type) {
    case "idunox.job.status_changed":
      return `${head} ${event.data.previousStatus ?? "(new)"} -> ${event.data.status}`;
    case "idunox.job.sla_breached":
      return `${head} status=${event.data.status} detectedBy=${event.data.detectedBy} deadline=${event.data.slaDeadlineAt ?? "-"}`;
    case "idunox.job.dead_lettered":
      return `${head} attempts=${event.data.attempts}/${event.data.maxAttempts}`;
    case "idunox.job.poll_failed":
      return `${head} failures=${event.data.consecutiveFailures} reason=${event.data.reason}`;
    case "idunox.job.not_found":
      return `${head} since=${event.data.firstNotFoundAt}`;
    case "idunox.job.rejected":
      return `${head} reason=${event.data.reason}`;
  }
}

export async function runTailCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {
    ...REDIS_OPTIONS,
    stream: { type: "string", default: "events" },
    from: { type: "string", default: "$" },
    group: { type: "string" },
    consumer: { type: "string" },
    count: { type: "string" },
    json: { type: "boolean" },
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  if (values.stream !== "events" && values.stream !== "alerts") {
    throw new UsageError("--stream must be events or alerts");
  }
  const limit = values.count === undefined ? Number.POSITIVE_INFINITY : Number(values.count);
  if (!(limit > 0)) throw new UsageError("--count must be a positive number");
  const group = values.group;
  const consumer = values.consumer ?? `tail-${process.pid}`;
  const signals = watchInterrupt();
  try {
    return await withStore(values, async ({ redis, store }) => {
      const stream = values.stream === "events" ? store.keys.events : store.keys.alerts;
      if (group !== undefined) {
        try {
          await redis.xgroup("CREATE", stream, group, values.from, "MKSTREAM");
        } catch (err) {
          if (!/BUSYGROUP/.test((err as Error).message)) throw err;
        }
      }
      // Pin "$" to the current last id once, so events arriving between two reads are not skipped.
      let last = values.from;
      if (group === undefined && last === "$") {
        last = (await redis.xrevrange(stream, "+", "-", "COUNT", 1))[0]?.[0] ?? "0-0";
      }
      let seen = 0;
      while (!signals.interrupted && seen < limit) {
        const reply = (
          group === undefined
            ? await redis.xread("COUNT", 100, "BLOCK", 1000, "STREAMS", stream, last)
            : await redis.xreadgroup(
                "GROUP",
                group,
                consumer,
                "COUNT",
                100,
                "BLOCK",
                1000,
                "STREAMS",
                stream,
                ">",
              )
        ) as Array<[string, Array<[string, string[]]>]> | null;
        if (!reply) continue;
        for (const [, entries] of reply) {
          for (const [id, flat] of entries) {
            last = id;
            const fields = entryFields(flat);
            const data = fields["data"];
            if (data !== undefined) {
              const event = JSON.parse(data) as AnyCloudEvent;
              process.stdout.write(`${values.json ? data : formatEvent(event)}\n`);
            }
            if (group !== undefined) await redis.xack(stream, group, id);
            seen += 1;
            if (seen >= limit) break;
          }
        }
      }
      return EXIT.ok;
    });
  } finally {
    signals.dispose();
  }
}
