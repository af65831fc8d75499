import { randomUUID } from "node:crypto";
import pino from "pino";
import { loadConfig } from "../config/index.js";
import { startDaemon } from "../daemon/daemon.js";
import { entryFields } from "../events/cloudevents.js";
import type { AnyCloudEvent } from "../events/types.js";
import { createLogger } from "../log/logger.js";
import { startSimulator } from "../sim/simulator.js";
import { deleteKeysWithPrefix } from "../store/connection.js";
import { rememberRedisErrors } from "../store/redis-errors.js";
import { EXIT, parseCommandArgs, watchInterrupt } from "./common.js";
import {
  BAD_MEMBERS_MEANING,
  DEMO_BAD_MEMBERS,
  DEMO_SCENARIOS,
  DEMO_SETTINGS,
  type Seen,
} from "./demo-jobs.js";
import { type PrivateRedis, RedisServerMissingError, startPrivateRedis } from "./demo-redis.js";
import { redisProblemAt } from "./redis-args.js";
import { formatEvent } from "./tail.js";

/**
 * Where the demo looks for a Redis when REDIS_URL is not set. Tests point it at a closed port,
 * so they exercise the private redis-server without touching the machine's Redis on 6379.
 */
export const DEMO_DEFAULT_REDIS_ENV = "DEMO_DEFAULT_REDIS_URL";
const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";

/** Problems that mean "nothing is there", as opposed to a Redis that answered and refused. */
const NOTHING_THERE = new Set(["refused", "host_not_found", "timeout", "closed"]);

export const REDIS_SERVER_HINT =
  "the demo needs Redis: nothing answers at %s and redis-server is not installed; install it (e.g. `apt-get install redis-server`, `brew install redis`) or start one with `docker compose up redis`, or set REDIS_URL";

const HELP = `Usage: idunox-poller demo [--jobs N] [--seconds S]

Starts the built-in Jobs API simulator and runs the daemon against it on a fresh key prefix
of Redis, with a dozen chosen jobs (a success, a retry, a dead letter, SLA breaches by the API
flag and by the deadline, a late 404, an unknown job, invalid answers ...) and two members
that are not job ids. Prints the events as they arrive, then what each kind meant.
Stops when every job is done or after S seconds (default 60); N more random jobs (default 0).
The demo's keys are deleted afterwards.

Redis: $REDIS_URL if set. Otherwise redis://127.0.0.1:6379 if something answers there, else
a private redis-server (free port, temporary directory, no persistence) that the demo stops
and removes when it ends. ($${DEMO_DEFAULT_REDIS_ENV} replaces the default address; for tests.)
Exit codes: 0 ok, 1 Redis failed, 2 usage, 69 no Redis and no redis-server to start.`;

export async function runDemoCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {
    jobs: { type: "string", default: "0" },
    seconds: { type: "string", default: "60" },
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  const extraJobs = Math.max(0, Math.min(1000, Number(values.jobs) || 0));
  const seconds = Math.max(5, Number(values.seconds) || 60);
  const out = (line: string) => process.stdout.write(`${line}\n`);

  // The first SIGINT/SIGTERM ends the demo through the finally blocks, which stop the daemon,
  // delete the keys and stop the private redis-server; a second one, while that runs, exits at
  // once and still takes the private server and its directory along.
  const signals = watchInterrupt();
  let own: PrivateRedis | null = null;
  let signalsSeen = 0;
  const onSignal = () => {
    signalsSeen += 1;
    if (signalsSeen > 1) {
      own?.killNow();
      process.exit(EXIT.failure);
    }
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const redis = await chooseRedis(out);
    if (typeof redis === "number") return redis;
    own = redis.own;
    if (signals.interrupted) return EXIT.ok;
    return await runDemo(redis.url, extraJobs, seconds, signals, out);
  } finally {
    await own?.stop();
    if (own) out(`demo: stopped the private redis-server and removed ${own.dir}`);
    signals.dispose();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** The Redis to use, or the exit code when there is none. */
async function chooseRedis(
  out: (line: string) => void,
): Promise<{ url: string; own: PrivateRedis | null } | number> {
  const explicit = process.env.REDIS_URL;
  if (explicit !== undefined && explicit !== "") {
    const problem = await redisProblemAt(explicit);
    if (problem === null) return { url: explicit, own: null };
    process.stderr.write(`idunox-poller demo: ${problem.line}\n`);
    return EXIT.failure;
  }
  const fallback = process.env[DEMO_DEFAULT_REDIS_ENV] || DEFAULT_REDIS_URL;
  const problem = await redisProblemAt(fallback);
  if (problem === null) return { url: fallback, own: null };
  if (!NOTHING_THERE.has(problem.kind)) {
    // Something answers there but refuses us (a password, TLS ...): starting another Redis
    // beside it would hide that, so say it and let the user set REDIS_URL.
    process.stderr.write(`idunox-poller demo: ${problem.line} (set REDIS_URL to use it)\n`);
    return EXIT.failure;
  }
  try {
    const own = await startPrivateRedis();
    out(
      `demo: nothing answers at ${fallback}: started a private redis-server at ${own.url} (pid ${own.pid}, dir ${own.dir}, no persistence), stopped when the demo ends`,
    );
    return { url: own.url, own };
  } catch (err) {
    if (!(err instanceof RedisServerMissingError)) throw err;
    process.stderr.write(`idunox-poller demo: ${REDIS_SERVER_HINT.replace("%s", fallback)}\n`);
    return EXIT.unavailable;
  }
}

async function runDemo(
  redisUrl: string,
  extraJobs: number,
  seconds: number,
  signals: { readonly interrupted: boolean },
  out: (line: string) => void,
): Promise<number> {
  const apiKey = `demo-${randomUUID()}`;
  const sim = await startSimulator({ apiKey, port: 0, host: "127.0.0.1" });
  const prefix = `idunox-demo:${randomUUID().slice(0, 8)}:`;
  const config = loadConfig({
    ...process.env,
    REDIS_URL: redisUrl,
    IDUNOX_API_URL: sim.url,
    IDUNOX_API_KEY: apiKey,
    IDUNOX_API_KEY_FILE: undefined,
    POLLER_KEY_PREFIX: prefix,
    POLLER_MIN_INTERVAL_MS: String(DEMO_SETTINGS.minIntervalMs),
    POLLER_MAX_INTERVAL_MS: String(DEMO_SETTINGS.maxIntervalMs),
    POLLER_NOT_FOUND_GRACE_MS: String(DEMO_SETTINGS.notFoundGraceMs),
    POLLER_FAILURE_ALERT_AFTER: String(DEMO_SETTINGS.failureAlertAfter),
    POLLER_HTTP_PORT: process.env.POLLER_HTTP_PORT ?? "0",
    LOG_LEVEL: process.env.LOG_LEVEL ?? "error",
  });
  // Logs go to stderr so the event lines on stdout stay readable.
  const logger = createLogger({ level: config.logLevel, destination: pino.destination(2) });
  const daemon = await startDaemon(config, { logger });
  const redis = daemon.store.redis.duplicate();
  rememberRedisErrors(redis);
  const keys = daemon.store.keys;
  const started = Date.now();

  const scenarioOf = new Map<string, string>();
  for (const scenario of DEMO_SCENARIOS) {
    const id = scenario.spec === undefined ? randomUUID() : sim.addJob(scenario.spec);
    if (scenario.script !== undefined) sim.script(id, scenario.script);
    scenarioOf.set(id, scenario.name);
  }
  const ids = [...scenarioOf.keys(), ...sim.addRandomJobs(extraJobs)];
  await redis.sadd(keys.pending, ...ids, ...DEMO_BAD_MEMBERS);
  out(
    `demo: simulator at ${sim.url}; ${DEMO_SCENARIOS.length} chosen jobs${extraJobs > 0 ? ` + ${extraJobs} random` : ""} + ${DEMO_BAD_MEMBERS.length} bad members added to ${keys.pending}`,
  );
  out(`demo: events stream ${keys.events} (Ctrl-C to stop)\n`);

  const counts = new Map<string, number>();
  const bySubject = new Map<string, AnyCloudEvent[]>();
  const finished = new Set<string>();
  const deadline = started + seconds * 1000;
  let last = "0";
  try {
    while (!signals.interrupted && Date.now() < deadline && finished.size < ids.length) {
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
          const scenario = scenarioOf.get(event.subject);
          out(`${formatEvent(event)}${scenario === undefined ? "" : `  [${scenario}]`}`);
          const kind = event.type.replace("idunox.job.", "");
          counts.set(kind, (counts.get(kind) ?? 0) + 1);
          bySubject.set(event.subject, [...(bySubject.get(event.subject) ?? []), event]);
          if (
            (event.type === "idunox.job.status_changed" &&
              !(await redis.sismember(keys.pending, event.subject))) ||
            event.type === "idunox.job.not_found"
          ) {
            finished.add(event.subject);
          }
        }
      }
      const summary = [...counts].map(([k, v]) => `${k}=${v}`).join(" ");
      if (reply) out(`   -- ${finished.size}/${ids.length} jobs done | ${summary}`);
    }
    const alerts = new Set(
      (await redis.xrange(keys.alerts, "-", "+")).map(([, flat]) => entryFields(flat)["id"] ?? ""),
    );
    const seenOf = (subject: string): Seen => ({ events: bySubject.get(subject) ?? [], alerts });
    const secondsTaken = ((Date.now() - started) / 1000).toFixed(1);
    out(
      `\ndemo: ${finished.size}/${ids.length} jobs done in ${secondsTaken} s; events by type: ${[...counts].map(([k, v]) => `${k}=${v}`).join(" ")}`,
    );
    out("demo: what each kind of event meant:");
    let missing = 0;
    for (const [id, name] of scenarioOf) {
      const scenario = DEMO_SCENARIOS.find((s) => s.name === name);
      if (scenario === undefined) continue;
      const ok = scenario.shown(seenOf(id));
      if (!ok) missing += 1;
      out(`  ${ok ? "ok  " : "MISS"} ${name.padEnd(22)} ${scenario.meaning}`);
    }
    const rejected = DEMO_BAD_MEMBERS.filter((m) =>
      seenOf(m).events.some((e) => e.type === "idunox.job.rejected"),
    ).length;
    if (rejected < DEMO_BAD_MEMBERS.length) missing += 1;
    out(
      `  ${rejected === DEMO_BAD_MEMBERS.length ? "ok  " : "MISS"} ${"bad members".padEnd(22)} ${BAD_MEMBERS_MEANING}`,
    );
    if (missing > 0) {
      const why = signals.interrupted
        ? "interrupted"
        : finished.size < ids.length
          ? `stopped after ${seconds} s`
          : "the machine may be very slow";
      out(`demo: ${missing} kind(s) not shown (${why})`);
    }
    out(
      "demo: next: `idunox-poller tail` follows the events stream, `idunox-poller status` shows the backlog, lag and consumer groups, and docs/consumers.md shows how to consume the streams.",
    );
    return EXIT.ok;
  } finally {
    await daemon.stop();
    await deleteKeysWithPrefix(redis, prefix).catch(() => 0);
    redis.disconnect();
    await sim.close();
  }
}
