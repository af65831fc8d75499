import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import pRetry from "p-retry";
import type { Logger } from "pino";
import { Pool } from "undici";
import {
  ApiAuthError,
  ApiTransientError,
  classify,
  type ErrorKind,
  parseRetryAfter,
  reasonOf,
} from "./errors.js";
import { type Answer, Exchange, type ExchangeLimits } from "./exchange.js";
import { interpretAnswer, invalid, isJsonMediaType, MAX_JSON_DEPTH } from "./interpret.js";
import type { PollOutcome, PollOutcomeKind } from "./outcome.js";
import { parseRateLimitHeaders, type RateLimitAdvice } from "./ratelimit.js";

export { MAX_JSON_DEPTH };

export interface AttemptInfo {
  outcome: PollOutcomeKind;
  status?: number;
  durationMs: number;
}

/**
 * A permit per HTTP attempt (the shared request budget): taken before each request goes out,
 * polls, retries and probes alike, and told what each answer said about the quota.
 */
export interface AttemptPermits {
  /** Takes a permit if one is at hand, without waiting. */
  tryTake(): boolean;
  /** Waits for a permit; false when `signal` aborted or `timeoutMs` passed first. */
  acquire(signal?: AbortSignal, timeoutMs?: number): Promise<boolean>;
  record(answer: {
    status: number | undefined;
    retryAfterMs?: number | undefined;
    advice?: RateLimitAdvice | null;
  }): void;
}

export interface JobsClientOptions {
  /** API origin, optionally with a path prefix (`http://host:1/api`). */
  baseUrl: string;
  /** Called for every request, so a rotated key file is picked up without a restart. */
  apiKey: () => string;
  /** Connections to the origin; also the most requests in flight. */
  concurrency: number;
  /** Deadline of one attempt, from sending the request to the end of the body. */
  requestTimeoutMs: number;
  retries: number;
  maxBodyBytes: number;
  /** Total time the retries of one poll may take; past it, the poll gives up as transient. */
  retryBudgetMs: number;
  logger?: Logger;
  onAttempt?: (info: AttemptInfo) => void;
  userAgent?: string;
  /** The request budget; without it requests go out as soon as a connection is free. */
  permits?: AttemptPermits;
}

// Only this shape is ever put in a path: nothing a producer wrote can steer the request elsewhere.
const LOWERCASE_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// Header values undici would reject, or that a stray newline from a key file would corrupt.
const HEADER_SAFE_KEY = /^[\x21-\x7e]+$/;
// Bodies of answers we don't read are drained up to this size to keep the connection; larger
// ones are cut off with their socket.
const DRAIN_LIMIT_BYTES = 64 * 1024;
const MIN_BACKOFF_MS = 100;
const ABORTED: PollOutcome = Object.freeze({ kind: "transient", reason: "aborted" });
const NO_PERMIT_ERROR = () => new ApiTransientError("no request permit in time", { unsent: true });

/** Worth another attempt within the poll: transient, and not left unsent by the budget. */
function retryable(err: unknown): boolean {
  return classify(err) === "transient" && !(err instanceof ApiTransientError && err.unsent);
}

/**
 * The Jobs API over one keep-alive undici Pool. `poll` never throws for anything the API or the
 * network does: it retries what is transient and returns a PollOutcome. The API key is read per
 * request and only ever written to the `x-api-key` header of a request to the configured origin
 * (redirects are not followed).
 */
export class JobsClient {
  readonly #pool: Pool;
  readonly #jobsPath: string;
  readonly #opts: JobsClientOptions;
  readonly #userAgent: string;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Exchange>();
  readonly #forgetExchange = (exchange: Exchange) => this.#inFlight.delete(exchange);
  /** Checks the deadlines of the requests in flight; runs while the client is open. */
  #sweeper: NodeJS.Timeout | undefined;
  readonly #sweepTickMs: number;
  /** Aborted by abortInFlight(): ends retry waits as well as requests. */
  readonly #stop = new AbortController();
  readonly #pollLimits: ExchangeLimits;
  readonly #probeLimits: ExchangeLimits;

  constructor(opts: JobsClientOptions) {
    // Every request waiting for a permit or a retry listens on this one signal, and removes its
    // listener when the wait ends: up to the concurrency at once, more than Node's default
    // warning threshold of 10, and no leak.
    setMaxListeners(0, this.#stop.signal);
    const url = new URL(opts.baseUrl);
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new Error("JobsClient: baseUrl must be an http or https URL");
    }
    if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "") {
      throw new Error("JobsClient: baseUrl must not carry credentials, a query or a fragment");
    }
    this.#opts = opts;
    this.#jobsPath = `${url.pathname.replace(/\/+$/, "")}/v1/jobs/`;
    this.#userAgent = opts.userAgent ?? "idunox-job-poller";
    this.#pool = new Pool(url.origin, {
      connections: opts.concurrency,
      pipelining: 1,
      connectTimeout: opts.requestTimeoutMs,
      headersTimeout: opts.requestTimeoutMs,
      bodyTimeout: opts.requestTimeoutMs,
    });
    this.#pollLimits = {
      keep: (status, headers) => status === 200 && isJsonMediaType(headers["content-type"]),
      maxBodyBytes: opts.maxBodyBytes,
      drainLimitBytes: DRAIN_LIMIT_BYTES,
    };
    this.#probeLimits = { ...this.#pollLimits, keep: () => false };
    this.#sweepTickMs = Math.min(250, Math.max(5, Math.round(opts.requestTimeoutMs / 20)));
  }

  /**
   * Polls one job. The one way to cut polls short is abortInFlight() (the poller's shutdown
   * deadline): it ends the attempts and retry waits in flight, and every later poll, as
   * transient "aborted".
   */
  async poll(jobId: string): Promise<PollOutcome> {
    if (!LOWERCASE_UUID.test(jobId)) return invalid("job id is not a lowercase uuid");
    const budgetMs = this.#opts.retryBudgetMs;
    const started = performance.now();
    // Fast path: most polls succeed at once, and p-retry's bookkeeping per call is measurable at
    // thousands of polls per second, so the first attempt runs on its own.
    // A permit may be waited for until the last moment a request can still end inside the poll.
    const permitBy = started + budgetMs;
    let first: unknown;
    try {
      return await this.#attempt(jobId, false, permitBy);
    } catch (err) {
      if (this.#stop.signal.aborted) return ABORTED;
      if (this.#opts.retries === 0 || !retryable(err)) return toOutcome(err, false);
      first = err;
    }
    // The Retry-After we already slept through; it must not be handed to the poller again.
    let honoured: unknown;
    // Retry waits end at abortInFlight() too.
    const slow = this.#stop.signal;
    try {
      const firstWait =
        first instanceof ApiTransientError && first.retryAfterMs !== undefined
          ? first.retryAfterMs
          : Math.round(MIN_BACKOFF_MS * (1 + Math.random()));
      if (firstWait > budgetMs - (performance.now() - started)) return toOutcome(first, false);
      await sleep(firstWait, undefined, { signal: slow });
      if (first instanceof ApiTransientError && first.retryAfterMs !== undefined) honoured = first;
      return await pRetry(() => this.#attempt(jobId, true, permitBy), {
        retries: this.#opts.retries - 1,
        factor: 2,
        minTimeout: MIN_BACKOFF_MS,
        randomize: true,
        maxRetryTime: Math.max(1, budgetMs - (performance.now() - started)),
        signal: slow,
        shouldRetry: ({ error }) => retryable(error),
        onFailedAttempt: async ({ error, retriesLeft }) => {
          if (!(error instanceof ApiTransientError)) return;
          const waitMs = error.retryAfterMs;
          if (waitMs === undefined || waitMs === 0 || retriesLeft <= 0) return;
          // Throwing ends the retries with this error: the poller reschedules at the asked time.
          if (waitMs > budgetMs - (performance.now() - started)) throw error;
          await sleep(waitMs, undefined, { signal: slow });
          honoured = error;
        },
      });
    } catch (err) {
      if (this.#stop.signal.aborted) return ABORTED;
      return toOutcome(err, err === honoured);
    }
  }

  /**
   * Aborts every request in flight (the poller's shutdown deadline). Cheaper for the hot path
   * than one abort listener per request on a shared signal.
   */
  abortInFlight(): void {
    this.#stop.abort();
    for (const exchange of this.#inFlight) exchange.abort(new ApiTransientError("aborted"));
  }

  /**
   * Whether the API accepts the key now, by asking for a random job: 200 or 404 mean it does.
   * One attempt, no retries; "down" covers every answer that says neither.
   */
  async probeAuth(): Promise<"ok" | "auth" | "down"> {
    const jobId = randomUUID();
    const requestId = randomUUID();
    const t0 = performance.now();
    let status: number | undefined;
    let result: "ok" | "auth" | "down";
    try {
      const waiting = this.#permit(performance.now() + this.#opts.requestTimeoutMs);
      if (waiting !== undefined) await waiting;
      status = (await this.#exchange(jobId, requestId, this.#probeLimits)).status;
      if (status === 200 || status === 404) result = "ok";
      else if (status === 401 || status === 403) result = "auth";
      else result = "down";
    } catch (err) {
      result = err instanceof ApiAuthError ? "auth" : "down";
    }
    this.#opts.logger?.debug(
      { requestId, probe: result, status, durationMs: Math.round(performance.now() - t0) },
      "jobs api auth probe",
    );
    return result;
  }

  /** Waits for requests in flight, then closes every connection. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#pool.close().finally(() => {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    });
    return this.#closing;
  }

  /**
   * One request; throws only what is worth a retry (or unexpected), returns everything else.
   * `retrying`: a retry, whose abort at shutdown is expected and logged quietly. The wait for a
   * permit ends at `permitBy` (performance.now() time); it is not part of the attempt's duration.
   */
  async #attempt(jobId: string, retrying: boolean, permitBy: number): Promise<PollOutcome> {
    const waiting = this.#permit(permitBy);
    if (waiting !== undefined) await waiting;
    const requestId = randomUUID();
    const t0 = performance.now();
    let status: number | undefined;
    try {
      const answer = await this.#exchange(jobId, requestId, this.#pollLimits);
      status = answer.status;
      const outcome = interpretAnswer(jobId, answer, Date.now());
      if (outcome.kind === "retry") {
        const { retryAfterMs } = outcome;
        throw new ApiTransientError(`http ${status}`, { status, retryAfterMs });
      }
      const reason = outcome.kind === "invalid" ? outcome.reason : undefined;
      this.#report(jobId, requestId, outcome.kind, status, t0, reason, retrying);
      return outcome;
    } catch (err) {
      this.#report(jobId, requestId, classify(err), status, t0, reasonOf(err), retrying);
      throw err;
    }
  }

  /**
   * Takes a permit from the request budget, waiting for one until `by` at the latest; then
   * throws an unsent (throttled) error. Without a budget, or with a permit at hand, it returns
   * at once and costs no promise.
   */
  #permit(by: number): Promise<void> | undefined {
    const permits = this.#opts.permits;
    if (permits === undefined || permits.tryTake()) return undefined;
    const waitMs = by - performance.now();
    if (waitMs <= 0) return Promise.reject(NO_PERMIT_ERROR());
    // Waiting for the budget also ends with a shutdown (abortInFlight).
    return permits.acquire(this.#stop.signal, waitMs).then((granted) => {
      if (this.#stop.signal.aborted) throw new ApiTransientError("aborted");
      if (!granted) throw NO_PERMIT_ERROR();
    });
  }

  /**
   * Sends GET for `jobId` and resolves with the answer once its body is read (or cut off at its
   * cap); tells the request budget what the answer said. Rejects when the request fails, when
   * abortInFlight() aborts it, and at its deadline (`requestTimeoutMs` from now, checked by the
   * sweep). The caller took a permit first (#permit).
   */
  async #exchange(jobId: string, requestId: string, limits: ExchangeLimits): Promise<Answer> {
    const answer = await this.#send(jobId, requestId, limits);
    const permits = this.#opts.permits;
    if (permits !== undefined) this.#heard(permits, answer);
    return answer;
  }

  /** What an answer tells the budget: a 429 and its Retry-After, and any rate-limit headers. */
  #heard(permits: AttemptPermits, answer: Answer): void {
    const now = Date.now();
    const { status, headers } = answer;
    permits.record({
      status,
      retryAfterMs: status === 429 ? parseRetryAfter(headers["retry-after"], now) : undefined,
      advice: parseRateLimitHeaders(headers, now),
    });
  }

  /** Sends one request now (its permit taken). */
  #send(jobId: string, requestId: string, limits: ExchangeLimits): Promise<Answer> {
    const key = this.#readKey();
    // The sweep runs every tick, so the deadline is set one tick early: a request never
    // outlives its timeout (the loop's lease budget counts on that), and gets at least 95% of it.
    const exchange = new Exchange(
      limits,
      performance.now() + this.#opts.requestTimeoutMs - this.#sweepTickMs,
      this.#forgetExchange,
    );
    if (this.#stop.signal.aborted) {
      exchange.abort(new ApiTransientError("aborted"));
      return exchange.promise;
    }
    this.#inFlight.add(exchange);
    // After close() the dispatch below fails at once; no sweep is needed then.
    if (this.#closing === undefined) this.#sweeper ??= this.#startSweeper();
    this.#pool.dispatch(
      {
        path: this.#jobsPath + jobId,
        method: "GET",
        headers: {
          "x-api-key": key,
          "x-request-id": requestId,
          accept: "application/json",
          "user-agent": this.#userAgent,
        },
      },
      exchange,
    );
    return exchange.promise;
  }

  /**
   * One interval for every request's deadline instead of a timer each (undici's own header and
   * body timers still bound each phase). Unref'd: an open client alone does not keep the
   * process alive.
   */
  #startSweeper(): NodeJS.Timeout {
    const timer = setInterval(() => {
      const now = performance.now();
      for (const exchange of this.#inFlight) {
        if (exchange.deadline <= now) exchange.abort(new ApiTransientError("timeout"));
      }
    }, this.#sweepTickMs);
    timer.unref();
    return timer;
  }

  #readKey(): string {
    let key: string;
    try {
      key = this.#opts.apiKey();
    } catch {
      throw new ApiAuthError(0);
    }
    if (typeof key !== "string" || !HEADER_SAFE_KEY.test(key)) throw new ApiAuthError(0);
    return key;
  }

  #report(
    jobId: string,
    requestId: string,
    outcome: ErrorKind | PollOutcomeKind,
    status: number | undefined,
    t0: number,
    reason: string | undefined,
    retrying: boolean,
  ): void {
    const durationMs = Math.round(performance.now() - t0);
    const { logger, onAttempt } = this.#opts;
    if (logger !== undefined) {
      const quiet = retrying && this.#stop.signal.aborted;
      const failed = outcome !== "ok" && outcome !== "not_found" && !quiet;
      const level = failed ? "warn" : "debug";
      if (logger.isLevelEnabled(level)) {
        logger
          .child({ jobId, requestId })
          [level]({ outcome, status, durationMs, reason }, "jobs api attempt");
      }
    }
    if (onAttempt !== undefined) {
      try {
        onAttempt({ outcome, status, durationMs });
      } catch {
        // A metrics hook must not turn a good poll into a failed one.
      }
    }
  }
}

function toOutcome(err: unknown, retryAfterHonoured: boolean): PollOutcome {
  const kind = classify(err);
  if (kind === "auth") return { kind, status: err instanceof ApiAuthError ? err.status : 0 };
  if (kind === "invalid") return invalid(reasonOf(err));
  const retryAfterMs = err instanceof ApiTransientError ? err.retryAfterMs : undefined;
  // A 429 is the quota speaking, not the job failing: the poller hands the job back instead.
  const throttled =
    err instanceof ApiTransientError && err.throttled ? { throttled: true as const } : {};
  if (retryAfterMs !== undefined && retryAfterMs > 0 && !retryAfterHonoured) {
    return { kind, reason: reasonOf(err), retryAfterMs, ...throttled };
  }
  return { kind, reason: reasonOf(err), ...throttled };
}
