import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { JOB_TYPES } from "../api/schema.js";
import { EVENT_KINDS } from "../events/types.js";
import type { StoreStats } from "../store/store.js";

const PREFIX = "idunox_poller_";

/** What a scrape reads from Redis; the store gathers it, the metrics only publish it. */
export type { StoreStats };

/** Every value the `outcome` label of the poll metrics takes. */
export const POLL_OUTCOMES = [
  "ok",
  "not_found",
  "invalid",
  "transient",
  "auth",
  "stale",
  "lease_lost",
  "conflict",
  "handed_back",
  "not_written",
  "throttled",
] as const;
export type PollMetricOutcome = (typeof POLL_OUTCOMES)[number];

/**
 * The daemon's Prometheus metrics, on a registry of their own so that tests and embedders can
 * create several without name clashes. Invariant: no label value is ever a job id or anything
 * taken from a response body, so the series count stays bounded whatever the job count.
 */
export class Metrics {
  readonly registry: Registry;
  readonly polls: Counter<"outcome">;
  readonly requests: Counter<"outcome">;
  readonly pollDuration: Histogram<"outcome">;
  readonly events: Counter<"type">;
  readonly detectionDelay: Histogram<"type">;
  readonly scheduled: Counter<"schedule">;
  readonly redisErrors: Counter<"op">;
  readonly authOk: Gauge;
  readonly redisUp: Gauge;
  readonly ready: Gauge;
  readonly leasesHeld: Gauge;
  readonly inFlight: Gauge;
  readonly circuitOpen: Gauge;
  readonly streamMaxLen: Gauge;
  readonly storeStatsErrors: Counter;
  readonly budgetPermits: Counter;
  readonly budgetWaitSeconds: Counter;
  readonly budgetRate: Gauge;
  readonly budgetPauseSeconds: Counter;
  readonly apiThrottled: Counter;

  private readonly collectStoreStats: (() => Promise<StoreStats>) | undefined;
  private readonly statsCacheMs: number;
  private statsAt = Number.NEGATIVE_INFINITY;
  private statsInFlight: Promise<void> | null = null;
  private readonly statsTimeoutMs: number;
  /** What the poll loop holds right now, read at each scrape (see `readLoopFrom`). */
  private loopState: (() => { leases: number; inFlight: number }) | undefined;
  /** Set once the store gauges exist; writes one set of statistics into them. */
  private applyStats: (stats: StoreStats) => void = () => {};

  /** Makes `leases_held` and `requests_in_flight` read the loop's own counts at each scrape. */
  readLoopFrom(state: () => { leases: number; inFlight: number }): void {
    this.loopState = state;
  }

  constructor(
    opts: {
      collectStoreStats?: () => Promise<StoreStats>;
      statsCacheMs?: number;
      /** A collection that takes longer counts as failed, so a hung Redis cannot hang /metrics. */
      statsTimeoutMs?: number;
    } = {},
  ) {
    this.collectStoreStats = opts.collectStoreStats;
    this.statsCacheMs = opts.statsCacheMs ?? 1000;
    this.statsTimeoutMs = opts.statsTimeoutMs ?? 2000;
    const registry = new Registry();
    this.registry = registry;
    collectDefaultMetrics({ register: registry, prefix: PREFIX });
    const registers = [registry];

    this.polls = new Counter({
      name: `${PREFIX}polls_total`,
      help: "Polls of one job, by outcome after the client's retries.",
      labelNames: ["outcome"],
      registers,
    });
    this.requests = new Counter({
      name: `${PREFIX}api_requests_total`,
      help: "HTTP attempts against the jobs API, retries counted one by one.",
      labelNames: ["outcome"],
      registers,
    });
    this.pollDuration = new Histogram({
      name: `${PREFIX}poll_duration_seconds`,
      help: "Time one poll took, retries included, by outcome.",
      labelNames: ["outcome"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.events = new Counter({
      name: `${PREFIX}events_total`,
      help: "Events appended to the events stream, by short type name.",
      labelNames: ["type"],
      registers,
    });
    // Labelled by the seed's job type enum only (seven values): the series count is fixed.
    this.detectionDelay = new Histogram({
      name: `${PREFIX}detection_delay_seconds`,
      help: "Observation time minus the new state's updatedAt, per observed status change, by job type.",
      labelNames: ["type"],
      buckets: [0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300],
      registers,
    });
    this.scheduled = new Counter({
      name: `${PREFIX}schedule_decisions_total`,
      help: "Next polls placed, by the schedule that placed them: predictive or backoff.",
      labelNames: ["schedule"],
      registers,
    });
    this.redisErrors = new Counter({
      name: `${PREFIX}redis_errors_total`,
      help: "Redis operations that failed, by operation.",
      labelNames: ["op"],
      registers,
    });
    this.storeStatsErrors = new Counter({
      name: `${PREFIX}store_stats_errors_total`,
      help: "Scrapes whose Redis statistics could not be read; the store gauges keep their last values.",
      registers,
      // The registry reads metrics concurrently; waiting here makes a failure of this very
      // scrape show up in it rather than in the next one.
      collect: () => this.refreshStoreStats(),
    });

    const gauge = (name: string, help: string, collect?: () => void) =>
      new Gauge({ name: `${PREFIX}${name}`, help, registers, ...(collect ? { collect } : {}) });
    this.authOk = gauge("api_key_accepted", "1 while the API accepts the key, 0 after a 401/403.");
    this.redisUp = gauge("redis_up", "1 while Redis answers.");
    this.ready = gauge("ready", "1 while /readyz reports ready.");
    // Read when scraped rather than set on every poll: the loop changes them thousands of times
    // a second, a scrape reads them a few times a minute.
    this.leasesHeld = gauge("leases_held", "Job leases this replica holds.", () => {
      const state = this.loopState?.();
      if (state !== undefined) this.leasesHeld.set(state.leases);
    });
    this.inFlight = gauge("requests_in_flight", "API requests in flight.", () => {
      const state = this.loopState?.();
      if (state !== undefined) this.inFlight.set(state.inFlight);
    });
    this.circuitOpen = gauge("api_circuit_open", "1 while API polling is paused.");
    this.budgetRate = gauge(
      "budget_rate",
      "The shared request rate in force for the API key (requests/s); 0 while none is.",
    );
    this.budgetPermits = new Counter({
      name: `${PREFIX}budget_permits_total`,
      help: "Permits this replica took from the shared request budget: one per HTTP attempt.",
      registers,
    });
    this.budgetWaitSeconds = new Counter({
      name: `${PREFIX}budget_wait_seconds_total`,
      help: "Time HTTP attempts of this replica waited for a permit, summed.",
      registers,
    });
    this.budgetPauseSeconds = new Counter({
      name: `${PREFIX}budget_pause_seconds_total`,
      help: "Seconds of shared pause (after a 429, or a rate-limit header at 0) this replica observed.",
      registers,
    });
    this.apiThrottled = new Counter({
      name: `${PREFIX}api_throttled_total`,
      help: "HTTP attempts the API answered with 429 Too Many Requests.",
      registers,
    });
    this.streamMaxLen = gauge(
      "stream_maxlen",
      "POLLER_STREAM_MAXLEN: the approximate cap of the streams, for consumer-lag alerts.",
    );

    // Zero series for every known label value, so rate() and absent() work before the first hit.
    for (const outcome of POLL_OUTCOMES) {
      this.polls.inc({ outcome }, 0);
    }
    for (const type of EVENT_KINDS) this.events.inc({ type }, 0);
    for (const schedule of ["predictive", "backoff"]) this.scheduled.inc({ schedule }, 0);
    for (const type of JOB_TYPES) this.detectionDelay.zero({ type });

    // Without a collector the store gauges would read 0 jobs, which is a claim, not a gap.
    if (this.collectStoreStats !== undefined) this.registerStoreGauges(registers);
  }

  private registerStoreGauges(registers: Registry[]): void {
    const collect = () => this.refreshStoreStats();
    const tracked = new Gauge({
      name: `${PREFIX}tracked_jobs`,
      help: "Jobs in the pending set.",
      registers,
      collect,
    });
    const dueBacklog = new Gauge({
      name: `${PREFIX}due_backlog`,
      help: "Jobs whose next poll is due now or overdue.",
      registers,
      collect,
    });
    const scheduleLag = new Gauge({
      name: `${PREFIX}schedule_lag_seconds`,
      help: "How late the most overdue job is.",
      registers,
      collect,
    });
    const rejected = new Gauge({
      name: `${PREFIX}rejected_members`,
      help: "Members in the rejected set.",
      registers,
      collect,
    });
    const groupLag = new Gauge({
      name: `${PREFIX}consumer_group_lag`,
      help: "Entries a consumer group has not read yet (XINFO GROUPS lag); trimming drops them at the stream cap.",
      labelNames: ["stream", "group"],
      registers,
      collect,
    });
    const groupPending = new Gauge({
      name: `${PREFIX}consumer_group_pending`,
      help: "Entries delivered to a consumer group but not acknowledged.",
      labelNames: ["stream", "group"],
      registers,
      collect,
    });
    this.applyStats = (stats) => {
      tracked.set(stats.tracked);
      dueBacklog.set(stats.dueBacklog);
      scheduleLag.set(stats.scheduleLagSeconds);
      rejected.set(stats.rejected);
      // A deleted group must disappear rather than report its last lag forever.
      groupLag.reset();
      groupPending.reset();
      for (const g of stats.groups) {
        const labels = { stream: g.stream, group: g.group };
        if (g.lag !== null) groupLag.set(labels, g.lag);
        groupPending.set(labels, g.pending);
      }
    };
  }

  /**
   * Reads the store statistics at most once per `statsCacheMs`, shared by the six gauges of one
   * scrape and by concurrent scrapes. A failure is counted, never thrown: /metrics must keep
   * answering while Redis is down, which is exactly when the other metrics matter.
   */
  private refreshStoreStats(): Promise<void> {
    const read = this.collectStoreStats;
    if (read === undefined) return Promise.resolve();
    if (this.statsInFlight !== null) return this.statsInFlight;
    if (performance.now() - this.statsAt < this.statsCacheMs) return Promise.resolve();
    this.statsInFlight = (async () => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("store stats timed out")), this.statsTimeoutMs);
      });
      try {
        this.applyStats(await Promise.race([read(), timeout]));
      } catch {
        this.storeStatsErrors.inc();
      } finally {
        clearTimeout(timer);
        this.statsAt = performance.now();
        this.statsInFlight = null;
      }
    })();
    return this.statsInFlight;
  }
}
