import { randomUUID } from "node:crypto";
import pino from "pino";
import { loadConfig } from "../config/index.js";
import { startDaemon } from "../daemon/daemon.js";
import { entryFields } from "../events/cloudevents.js";
import type { AnyCloudEvent } from "../events/types.js";
import { createLogger } from "../log/logger.js";
import { startSimulator } from "../sim/simulator.js";
import { deleteKeysWithPrefix } from "../store/connection.js";
import { EXIT, parseCommandArgs, watchInterrupt } from "./common.js";
import { formatEvent } from "./tail.js";

const HELP = `Usage: idunox-poller demo [--jobs N] [--seconds S]

Starts the built-in Jobs API simulator, runs the daemon against it on a fresh key prefix of
the local Redis ($REDIS_URL, default redis://127.0.0.1:6379), adds N jobs with realistic
lifecycles (and two members that are not job ids), and prints the events as they arrive
with a running summary. Stops when every job is done or after S seconds (default 60).
The demo's keys are deleted afterwards.`;

export async function runDemoCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {
    jobs: { type: "string", default: "12" },
    seconds: { type: "string", default: "60" },
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  const jobCount = Math.max(1, Math.min(1000, Number(values.jobs) || 12));
  const seconds = Math.max(5, Number(values.seconds) || 60);
  const apiKey = `demo-${randomUUID()}`;
  const sim = await startSimulator({ apiKey, port: 0, host: "127.0.0.1" });
  const prefix = `idunox-demo:${randomUUID().slice(0, 8)}:`;
  const config = loadConfig({
    ...process.env,
    IDUNOX_API_URL: sim.url,
    IDUNOX_API_KEY: apiKey,
    IDUNOX_API_KEY_FILE: undefined,
    POLLER_KEY_PREFIX: prefix,
    POLLER_MIN_INTERVAL_MS: "500",
    POLLER_MAX_INTERVAL_MS: "4000",
    POLLER_NOT_FOUND_GRACE_MS: "5000",
    POLLER_HTTP_PORT: process.env.POLLER_HTTP_PORT ?? "0",
    LOG_LEVEL: process.env.LOG_LEVEL ?? "error",
  });
  // Logs go to stderr so the event lines on stdout stay readable.
  const logger = createLogger({ level: config.logLevel, destination: pino.destination(2) });
  const daemon = await startDaemon(config, { logger });
  const redis = daemon.store.redis.duplicate();
  const keys = daemon.store.keys;
  const out = (line: string) => process.stdout.write(`${line}\n`);

  const ids = sim.addRandomJobs(jobCount);
  await redis.sadd(keys.pending, ...ids, "not-a-job-id", "../../etc/passwd");
  out(`demo: simulator at ${sim.url}, ${jobCount} jobs + 2 bad members added to ${keys.pending}`);
  out(`demo: events stream ${keys.events} (Ctrl-C to stop)\n`);

  const counts = new Map<string, number>();
  const finished = new Set<string>();
  const deadline = Date.now() + seconds * 1000;
  let last = "0";
  const signals = watchInterrupt();
  try {
    while (!signals.interrupted && Date.now() < deadline && finished.size < jobCount) {
      const reply = (await redis.xread(
        "COUNT",
        100,
        "BLOCK",
        500,
        "STREAMS",
        keys.events,
        last,
      )) as Array<[string, Array<[string, string[]]>]> | null;
      for (const [, entries] of reply ?? []) {
        for (const [id, flat] of entries) {
          last = id;
          const event = JSON.parse(entryFields(flat)["data"] ?? "null") as AnyCloudEvent;
          out(formatEvent(event));
          const kind = event.type.replace("idunox.job.", "");
          counts.set(kind, (counts.get(kind) ?? 0) + 1);
          if (
            event.type === "idunox.job.status_changed" &&
            !(await redis.sismember(keys.pending, event.subject))
          ) {
            finished.add(event.subject);
          }
          if (event.type === "idunox.job.not_found") finished.add(event.subject);
        }
      }
      const summary = [...counts].map(([k, v]) => `${k}=${v}`).join(" ");
      if (reply) out(`   -- ${finished.size}/${jobCount} jobs done | ${summary}`);
    }
    out(
      `\ndemo: ${finished.size}/${jobCount} jobs done; events by type: ${JSON.stringify(Object.fromEntries(counts))}`,
    );
    return EXIT.ok;
  } finally {
    signals.dispose();
    await daemon.stop();
    await deleteKeysWithPrefix(redis, prefix);
    redis.disconnect();
    await sim.close();
  }
}
