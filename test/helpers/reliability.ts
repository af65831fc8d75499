import type { Redis } from "ioredis";
import type { JobStatus } from "../../src/api/schema.js";
import type { AnyCloudEvent } from "../../src/events/types.js";
import { randomSpec } from "../../src/sim/lifecycle.js";
import type { Rng } from "../../src/sim/random.js";
import type { SimJobSpec, SimStep, Simulator } from "../../src/sim/simulator.js";
import { type CliProcess, runCli } from "./processes.js";
import { readAll, readUntil } from "./streams.js";

/** Shared by the reliability tests: short seeded workloads and a fast-cycling daemon. */

export interface PlannedJob {
  spec: SimJobSpec & { jobId: string; steps: SimStep[] };
  /** The status the lifecycle ends in (always a final one). */
  final: JobStatus;
}

/**
 * `n` lifecycles from the simulator's realistic mix, squeezed by `scale` (0.2 turns its
 * 2–20 s into 0.4–4 s) so a test sees hundreds of jobs finish in seconds. Steps stay strictly
 * increasing and the SLA deadline is scaled along, so breaches still fall mid-run.
 */
export function plannedJobs(rng: Rng, n: number, scale: number): PlannedJob[] {
  return Array.from({ length: n }, () => {
    const drawn = randomSpec(rng);
    let last = 0;
    const steps = drawn.steps.map((step, i) => {
      const afterMs = i === 0 ? 0 : Math.max(last + 1, Math.round(step.afterMs * scale));
      last = afterMs;
      return { ...step, afterMs };
    });
    const sla = drawn.slaDeadlineInMs;
    const final = (steps[steps.length - 1] as SimStep).status;
    return {
      spec: {
        ...drawn,
        jobId: rng.uuid(),
        steps,
        slaDeadlineInMs: sla === null || sla === undefined ? null : Math.round(sla * scale),
      },
      final,
    };
  });
}

/** Creates the jobs in the simulator (their lifecycles start now) and hands them to the daemon. */
export async function submit(
  sim: Simulator,
  redis: Redis,
  pendingKey: string,
  jobs: readonly PlannedJob[],
): Promise<void> {
  if (jobs.length === 0) return;
  for (const job of jobs) sim.addJob(job.spec);
  await redis.sadd(pendingKey, ...jobs.map((j) => j.spec.jobId));
}

export function finalsOf(jobs: readonly PlannedJob[]): Map<string, JobStatus> {
  return new Map(jobs.map((j) => [j.spec.jobId, j.final]));
}

export interface DaemonEnvOptions {
  apiUrl: string;
  apiKey: string;
  redisUrl: string;
  prefix: string;
  replicaId: string;
  leaseMs?: number;
  requestTimeoutMs?: number;
  httpPort?: number;
  concurrency?: number;
  maxIntervalMs?: number;
}

/**
 * Settings that make a daemon cycle fast: polls every 100–800 ms, a lease of 1.5 s (so a
 * killed replica's jobs come back quickly) and a request timeout under half of it, as the
 * config requires.
 */
export function daemonEnv(o: DaemonEnvOptions): Record<string, string> {
  return {
    IDUNOX_API_URL: o.apiUrl,
    IDUNOX_API_KEY: o.apiKey,
    REDIS_URL: o.redisUrl,
    POLLER_KEY_PREFIX: o.prefix,
    POLLER_REPLICA_ID: o.replicaId,
    LOG_LEVEL: "info",
    POLLER_HTTP_PORT: String(o.httpPort ?? 0),
    POLLER_HTTP_HOST: "127.0.0.1",
    POLLER_MIN_INTERVAL_MS: "100",
    POLLER_MAX_INTERVAL_MS: String(o.maxIntervalMs ?? 800),
    POLLER_LEASE_MS: String(o.leaseMs ?? 1500),
    POLLER_REQUEST_TIMEOUT_MS: String(o.requestTimeoutMs ?? 500),
    POLLER_RETRIES: "1",
    POLLER_CONCURRENCY: String(o.concurrency ?? 16),
    POLLER_INTAKE_INTERVAL_MS: "50",
    POLLER_IDLE_WAKE_MS: "50",
    POLLER_SHUTDOWN_TIMEOUT_MS: "3000",
  };
}

/** Spawns `run` without waiting for anything. */
export function runDaemon(env: Record<string, string>): CliProcess {
  return runCli(["run"], env);
}

/** Starts `run` and waits for the poll loop to be up. */
export async function startDaemonProcess(env: Record<string, string>): Promise<CliProcess> {
  const daemon = runDaemon(env);
  try {
    await daemon.waitForLine(/"msg":"poller started"/, 20_000);
  } catch (err) {
    await killHard(daemon);
    throw err;
  }
  return daemon;
}

/** SIGKILL, then wait for the exit (a no-op if it already exited). */
export async function killHard(daemon: CliProcess): Promise<void> {
  if (daemon.child.exitCode === null && daemon.child.signalCode === null) {
    daemon.child.kill("SIGKILL");
  }
  await daemon.exited;
}

/** Graceful stop; resolves with the exit code. */
export async function stopGracefully(daemon: CliProcess): Promise<number | string> {
  if (daemon.child.exitCode === null && daemon.child.signalCode === null) {
    daemon.child.kill("SIGTERM");
  }
  return daemon.exited;
}

function finalEmitted(event: AnyCloudEvent, finals: ReadonlyMap<string, JobStatus>): boolean {
  if (event.type === "idunox.job.not_found") return finals.has(event.subject);
  return (
    event.type === "idunox.job.status_changed" && finals.get(event.subject) === event.data.status
  );
}

/** Blocks on the stream until every job of `finals` has its final event; returns all events. */
export async function waitForFinals(
  redis: Redis,
  stream: string,
  finals: ReadonlyMap<string, JobStatus>,
  timeoutMs: number,
): Promise<AnyCloudEvent[]> {
  const done = new Set<string>();
  let seen = 0;
  const events = await readUntil(
    redis,
    stream,
    (all) => {
      for (; seen < all.length; seen++) {
        const event = (all[seen] as (typeof all)[number]).event;
        if (finalEmitted(event, finals)) done.add(event.subject);
      }
      return done.size >= finals.size;
    },
    timeoutMs,
  );
  return events.map((e) => e.event);
}

export async function allEvents(redis: Redis, stream: string): Promise<AnyCloudEvent[]> {
  return (await readAll(redis, stream)).map((e) => e.event);
}
