import { setTimeout as sleepTimer } from "node:timers/promises";
import type { DestinationStream, Logger } from "pino";
import { JobsClient } from "../api/client.js";
import {
  CIRCUIT_MAX_COOLDOWN_MS,
  CIRCUIT_MIN_COOLDOWN_MS,
  circuitThreshold,
  pollBudgetMs,
  RECONCILE_INTERVAL_MS,
  retryBudgetMs,
  shutdownPhases,
} from "../config/budgets.js";
import { type Config, readApiKeyFile, redactedConfig } from "../config/index.js";
import { coerceError } from "../lib/errors.js";
import { createLogger, setSecretsForScrubbing } from "../log/logger.js";
import { RequestBudget } from "../poller/budget.js";
import type { DurationStats } from "../poller/duration-stats.js";
import { Poller, type PollerSettings } from "../poller/loop.js";
import { type Readiness, startHttpServer } from "../server/http.js";
import { Metrics } from "../server/metrics.js";
import { BudgetStore } from "../store/budget.js";
import { connectRedis, type RedisClient, redisReady } from "../store/connection.js";
import { DurationStore } from "../store/durations.js";
import { Store } from "../store/store.js";

function sleepMs(ms: number): Promise<void> {
  return sleepTimer(ms, undefined, { ref: false });
}

export interface Daemon {
  readonly store: Store;
  readonly poller: Poller;
  readonly metrics: Metrics;
  /** The learned phase durations this replica schedules from. */
  readonly durations: DurationStats | null;
  readonly logger: Logger;
  /** The bound port of the HTTP server, or null when it is off. */
  readonly httpPort: number | null;
  readiness(): Readiness;
  /** Graceful stop; safe to call more than once. */
  stop(): Promise<void>;
}

export interface DaemonOptions {
  logDestination?: DestinationStream;
  logger?: Logger;
}

export function pollerSettings(config: Config): PollerSettings {
  return {
    minIntervalMs: config.minIntervalMs,
    maxIntervalMs: config.maxIntervalMs,
    backoffFactor: config.backoffFactor,
    jitter: config.jitter,
    notFoundGraceMs: config.notFoundGraceMs,
    failureAlertAfter: config.failureAlertAfter,
    eventSource: config.eventSource,
    concurrency: config.concurrency,
    leaseMs: config.leaseMs,
    claimBatch: config.claimBatch,
    intakeIntervalMs: config.intakeIntervalMs,
    idleWakeMs: config.idleWakeMs,
    authRetryMs: config.authRetryMs,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    reconcileIntervalMs: RECONCILE_INTERVAL_MS,
    circuitThreshold: circuitThreshold(config.concurrency),
    circuitMinCooldownMs: CIRCUIT_MIN_COOLDOWN_MS,
    circuitMaxCooldownMs: CIRCUIT_MAX_COOLDOWN_MS,
    pollBudgetMs: pollBudgetMs(config),
    schedule: config.schedule,
    scheduleSyncMs: config.scheduleSyncMs,
  };
}

/**
 * Wires the daemon: Redis, the API client, the poll loop and the HTTP server. Everything it
 * opens, `stop()` closes, in the order that loses nothing: stop claiming, drain polls, write
 * decisions, close the API pool and the HTTP server, then Redis.
 */
export async function startDaemon(config: Config, options: DaemonOptions = {}): Promise<Daemon> {
  let apiKey = config.apiKey;
  setSecretsForScrubbing([apiKey]);
  const logger =
    options.logger ??
    createLogger({
      level: config.logLevel,
      ...(options.logDestination ? { destination: options.logDestination } : {}),
      base: { replica: config.replicaId },
    });
  logger.info({ config: redactedConfig(config) }, "starting idunox-job-poller");
  if (config.allowInsecureHttp) {
    logger.warn(
      { apiUrl: config.apiUrl },
      "POLLER_ALLOW_INSECURE_HTTP=true: an http:// API URL is accepted on any host and the API key may travel in clear text; for test rigs only",
    );
  }

  const redis: RedisClient = connectRedis(config.redisUrl);
  redis.on("error", (err: unknown) => {
    // ioredis reconnects by itself; log at debug to avoid one line per retry.
    logger.debug({ err: coerceError(err) }, "redis connection error");
  });

  const store = new Store(redis, {
    prefix: config.keyPrefix,
    streamMaxLen: config.streamMaxLen,
    stateTtlMs: config.stateTtlMs,
  });
  const metrics = new Metrics({ collectStoreStats: () => store.stats(Date.now()) });
  metrics.authOk.set(1);
  metrics.streamMaxLen.set(config.streamMaxLen);

  // One budget for every HTTP attempt of this replica, shared with the others through Redis.
  const budget = new RequestBudget({
    source: new BudgetStore(redis, store.keys.budget),
    settings: { limit: config.rateLimit, burst: config.rateBurst },
    metrics: {
      permits: metrics.budgetPermits,
      waitSeconds: metrics.budgetWaitSeconds,
      rate: metrics.budgetRate,
      throttled: metrics.apiThrottled,
      pauseSeconds: metrics.budgetPauseSeconds,
      redisErrors: metrics.redisErrors,
    },
    logger,
  });

  const client = new JobsClient({
    baseUrl: config.apiUrl,
    apiKey: () => apiKey,
    concurrency: config.concurrency,
    requestTimeoutMs: config.requestTimeoutMs,
    retries: config.retries,
    maxBodyBytes: config.maxBodyBytes,
    retryBudgetMs: retryBudgetMs(config),
    logger,
    onAttempt: (info) => metrics.requests.inc({ outcome: info.outcome }),
    permits: budget,
  });

  const poller = new Poller({
    store,
    api: client,
    settings: pollerSettings(config),
    logger,
    metrics,
    budget,
    // Learning runs under either schedule (status shows what was learned, and switching to
    // predictive starts warm); only the predictive schedule lets decide read it.
    durationStore: new DurationStore(redis, store.keys.durations),
    onAuthRetry: () => {
      if (config.apiKeyFile === null) return;
      const read = readApiKeyFile(config.apiKeyFile);
      if (read.ok && read.key !== apiKey) {
        apiKey = read.key;
        setSecretsForScrubbing([apiKey]);
        logger.info("API key file changed: using the new key");
      } else if (!read.ok) {
        logger.error({ problem: read.problem }, "cannot re-read IDUNOX_API_KEY_FILE");
      }
    },
  });

  metrics.readLoopFrom(() => ({ leases: poller.leases, inFlight: poller.requestsInFlight }));

  const readiness = (): Readiness => {
    const redisOk = redisReady(redis) && poller.redisHealthy.ok;
    const checks: Readiness["checks"] = {
      redis: redisOk
        ? { ok: true }
        : {
            ok: false,
            reason: redisReady(redis) ? "redis commands failing" : `redis ${redis.status}`,
          },
      apiKey: poller.apiKeyAccepted
        ? { ok: true }
        : { ok: false, reason: "API key rejected (401/403)" },
      api: poller.circuitOpen ? { ok: false, reason: "API failing: circuit open" } : { ok: true },
    };
    // An open circuit is reported but does not take the replica out: it recovers by itself and
    // no other replica would do better against the same API.
    const ready = checks["redis"]?.ok === true && checks["apiKey"]?.ok === true;
    metrics.ready.set(ready ? 1 : 0);
    metrics.redisUp.set(redisOk ? 1 : 0);
    return { ready, checks };
  };

  const server =
    config.httpPort === 0
      ? null
      : await startHttpServer({
          port: config.httpPort,
          host: config.httpHost,
          metrics,
          readiness,
          logger,
        });

  poller.start();
  logger.info({ httpPort: server?.port ?? null }, "poller started");

  // A heartbeat per replica, for `status` and for operators looking at Redis directly.
  let beats = 0;
  const beat = async () => {
    const now = Date.now();
    // Replicas that died without a clean stop (kill -9) leave an entry: drop those an hour old.
    if (beats++ % 60 === 0) await store.pruneHeartbeats(now, 3_600_000);
    await store.writeHeartbeat(config.replicaId, {
      at: now,
      pid: process.pid,
      apiKeyAccepted: poller.apiKeyAccepted,
      circuitOpen: poller.circuitOpen,
      leases: poller.leases,
    });
  };
  // The readiness gauges are refreshed here too, not only when something asks /readyz.
  const heartbeat = setInterval(() => {
    readiness();
    beat().catch(() => {});
  }, 5000);
  heartbeat.unref();
  redis.on("ready", () => readiness());
  redis.on("close", () => readiness());
  beat().then(
    () => readiness(),
    () => readiness(),
  );

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      logger.info("stopping: no new claims, draining in-flight polls");
      clearInterval(heartbeat);
      const deadline = Date.now() + shutdownPhases(config.shutdownTimeoutMs).daemonMs;
      // Each step after the drain gets what is left of the budget, so a Redis or API that
      // does not answer cannot push the exit past POLLER_SHUTDOWN_TIMEOUT_MS.
      const bounded = (p: Promise<unknown>) =>
        Promise.race([p.catch(() => {}), sleepMs(Math.max(0, deadline - Date.now()))]);
      await poller.stop();
      client.abortInFlight();
      budget.close();
      await bounded(store.removeHeartbeat(config.replicaId));
      await bounded(client.close());
      await bounded(server?.close() ?? Promise.resolve());
      if (redisReady(redis)) await bounded(redis.quit());
      redis.disconnect();
      logger.info("stopped");
      await new Promise<void>((resolve) => logger.flush(() => resolve()));
    })();
    return stopping;
  };

  return {
    store,
    poller,
    metrics,
    durations: poller.durations,
    logger,
    httpPort: server?.port ?? null,
    readiness,
    stop,
  };
}
