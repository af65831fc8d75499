import { randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import type { Redis } from "ioredis";
import { afterEach, beforeEach } from "vitest";
import type { Job } from "../../src/api/schema.js";
import { loadConfig } from "../../src/config/index.js";
import { type Daemon, startDaemon } from "../../src/daemon/daemon.js";
import type { AnyCloudEvent } from "../../src/events/types.js";
import { type ScriptedResponse, type Simulator, startSimulator } from "../../src/sim/simulator.js";
import { type Keys, keysFor } from "../../src/store/keys.js";
import { jobBody } from "../fixtures/job.js";
import { cleanPrefix, redisClient, TEST_REDIS_URL, testPrefix } from "./redis.js";
import type { StreamEvent } from "./streams.js";

export { freePort } from "../../src/lib/net.js";

/** The key a test simulator is started with unless a test needs its own. */
export const TEST_API_KEY = `test-key-${randomUUID()}`;

/** One pino line as written; a line that is not JSON is kept as `{ unparsed }`, never lost. */
export type LogLine = Record<string, unknown>;

export interface TestDaemonOptions {
  sim: Simulator;
  /** Overrides of the fast test defaults below; `""` unsets a variable. */
  env?: Record<string, string>;
  /** Default TEST_API_KEY; ignored when `env` sets IDUNOX_API_KEY_FILE. */
  apiKey?: string;
  /** Runs against the fresh prefix before the daemon starts (jobs added while it is down). */
  beforeStart?: (redis: Redis, keys: Keys) => Promise<unknown>;
}

export interface TestDaemon {
  /** The daemon running now (a new one after `restart`). */
  daemon: Daemon;
  redis: Redis;
  prefix: string;
  keys: Keys;
  /** Every log line of every daemon this helper started, parsed. */
  logs: LogLine[];
  /** Stops the daemon (without cleaning) and starts another on the same prefix and config. */
  restart(): Promise<Daemon>;
  /** Stops the daemon and deletes every key under the prefix. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Fast settings: a scripted lifecycle takes well under a second, yet the loops do not spin a
 * loaded CI core. Auth retry and lease are the schema's minimums; the request timeout stays
 * under half the lease, as the config requires. The HTTP server is off unless a test gives it
 * a port (the daemon reads 0 as "off").
 */
const FAST_ENV: Record<string, string> = {
  POLLER_MIN_INTERVAL_MS: "50",
  POLLER_MAX_INTERVAL_MS: "400",
  POLLER_INTAKE_INTERVAL_MS: "50",
  POLLER_IDLE_WAKE_MS: "50",
  POLLER_REQUEST_TIMEOUT_MS: "400",
  POLLER_LEASE_MS: "1000",
  POLLER_RETRIES: "2",
  POLLER_AUTH_RETRY_MS: "100",
  POLLER_NOT_FOUND_GRACE_MS: "60000",
  POLLER_SHUTDOWN_TIMEOUT_MS: "2000",
  POLLER_HTTP_PORT: "0",
  LOG_LEVEL: "debug",
};

export async function startTestDaemon(opts: TestDaemonOptions): Promise<TestDaemon> {
  const redis = redisClient();
  const prefix = testPrefix();
  const keys = keysFor(prefix);
  const logs: LogLine[] = [];
  let partial = "";
  const sink = new Writable({
    write(chunk, _encoding, done) {
      const lines = (partial + String(chunk)).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        if (line === "") continue;
        try {
          logs.push(JSON.parse(line) as LogLine);
        } catch {
          logs.push({ unparsed: line });
        }
      }
      done();
    },
  });

  const env: Record<string, string> = {
    IDUNOX_API_URL: opts.sim.url,
    REDIS_URL: TEST_REDIS_URL,
    POLLER_KEY_PREFIX: prefix,
    ...FAST_ENV,
    ...opts.env,
  };
  if (!env["IDUNOX_API_KEY_FILE"]) env["IDUNOX_API_KEY"] ??= opts.apiKey ?? TEST_API_KEY;
  const config = loadConfig(env);

  let stopped: Promise<void> | null = null;
  try {
    await opts.beforeStart?.(redis, keys);
    const t: TestDaemon = {
      daemon: await startDaemon(config, { logDestination: sink }),
      redis,
      prefix,
      keys,
      logs,
      async restart() {
        await t.daemon.stop();
        t.daemon = await startDaemon(config, { logDestination: sink });
        return t.daemon;
      },
      stop() {
        stopped ??= (async () => {
          try {
            await t.daemon.stop();
          } finally {
            await cleanPrefix(redis, prefix);
            redis.disconnect();
          }
        })();
        return stopped;
      },
    };
    return t;
  } catch (err) {
    await cleanPrefix(redis, prefix).catch(() => {});
    redis.disconnect();
    throw err;
  }
}

/** Log lines whose `msg` is exactly `msg`. */
export function logsWith(logs: readonly LogLine[], msg: string): LogLine[] {
  return logs.filter((line) => line["msg"] === msg);
}

const SCRIPT_EPOCH = Date.parse("2026-04-20T09:00:00.000Z");

/**
 * Scripted 200 answers for one job, one per poll, each a full valid body with `updatedAt` one
 * second after the previous one, so none of them is stale.
 */
export function answers(jobId: string, steps: ReadonlyArray<Partial<Job>>): ScriptedResponse[] {
  return steps.map((step, i) => ({
    status: 200,
    body: jobBody({
      jobId,
      updatedAt: new Date(SCRIPT_EPOCH + (i + 1) * 1000).toISOString(),
      ...step,
    }),
  }));
}

/** The events of one subject, in stream order. */
export function eventsOf(events: readonly StreamEvent[], subject: string): AnyCloudEvent[] {
  return events.filter((e) => e.event.subject === subject).map((e) => e.event);
}

/** `previous>status` of each status_changed event of `subject`, in stream order. */
export function transitions(events: readonly StreamEvent[], subject: string): string[] {
  return eventsOf(events, subject).flatMap((e) =>
    e.type === "idunox.job.status_changed"
      ? [`${e.data.previousStatus ?? "null"}>${e.data.status}`]
      : [],
  );
}

/** A readUntil condition: `subject` has a status_changed event to `status`. */
export function reached(subject: string, status: string) {
  return (events: readonly StreamEvent[]): boolean =>
    eventsOf(events, subject).some(
      (e) => e.type === "idunox.job.status_changed" && e.data.status === status,
    );
}

/** `reached` for every one of `subjects`. */
export function allReached(subjects: readonly string[], status: string) {
  const each = subjects.map((subject) => reached(subject, status));
  return (events: readonly StreamEvent[]): boolean => each.every((done) => done(events));
}

export interface SimulatorScope {
  /** This test's simulator. */
  readonly sim: Simulator;
  /** Starts this test's daemon against the simulator; it is stopped after the test. */
  start(opts?: Omit<TestDaemonOptions, "sim">): Promise<TestDaemon>;
}

/**
 * Registers the per-test hooks the daemon suites share: a fresh simulator (seeded) before each
 * test, and after it the test's daemon stopped (its prefix cleaned) and the simulator closed.
 */
export function simulatorPerTest(seed: number): SimulatorScope {
  let sim: Simulator | null = null;
  let daemon: TestDaemon | null = null;
  beforeEach(async () => {
    sim = await startSimulator({ apiKey: TEST_API_KEY, seed });
  });
  afterEach(async () => {
    await daemon?.stop();
    daemon = null;
    await sim?.close();
    sim = null;
  });
  return {
    get sim() {
      if (sim === null) throw new Error("the simulator exists only inside a test");
      return sim;
    },
    async start(opts = {}) {
      daemon = await startTestDaemon({ ...opts, sim: this.sim });
      return daemon;
    },
  };
}
