import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import pRetry from "p-retry";
import type { Logger } from "pino";
import type { Dispatcher } from "undici";
import { Pool } from "undici";
import {
  ApiAuthError,
  ApiTransientError,
  classify,
  type ErrorKind,
  parseRetryAfter,
  reasonOf,
} from "./errors.js";
import type { PollOutcome, PollOutcomeKind } from "./outcome.js";
import { describeIssues, jobSchema } from "./schema.js";

export interface AttemptInfo {
  outcome: PollOutcomeKind;
  status?: number;
  durationMs: number;
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
}

type Body = Dispatcher.ResponseData["body"];

// Only this shape is ever put in a path: nothing a producer wrote can steer the request elsewhere.
const LOWERCASE_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// Header values undici would reject, or that a stray newline from a key file would corrupt.
const HEADER_SAFE_KEY = /^[\x21-\x7e]+$/;
const RETRY_STATUSES = new Set([408, 425, 429, 500, 502, 503, 504]);
// Bodies of answers we don't read are drained up to this size to keep the connection; larger
// ones are cut off with their socket.
const DRAIN_LIMIT_BYTES = 64 * 1024;
const MIN_BACKOFF_MS = 100;
// JSON.parse copes with any nesting, but JSON.stringify, pino and Lua cjson recurse and give up
// somewhere past a thousand levels (V8's JSON.stringify already between 1,000 and 5,000). A job
// passed on must survive being serialised again downstream, so deeper bodies are refused here.
export const MAX_JSON_DEPTH = 100;

const NOT_FOUND: PollOutcome = Object.freeze({ kind: "not_found" });
const ABORTED: PollOutcome = Object.freeze({ kind: "transient", reason: "aborted" });

const noop = () => {};

function invalid(reason: string): PollOutcome {
  return { kind: "invalid", reason };
}

function isJsonMediaType(value: string | string[] | undefined): boolean {
  if (typeof value !== "string") return false;
  const semi = value.indexOf(";");
  const media = (semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase();
  return (
    media === "application/json" || (media.startsWith("application/") && media.endsWith("+json"))
  );
}

/** Nesting depth of a JSON text, counted without recursion; stops counting past `max`. */
function exceedsDepth(text: Buffer, max: number): boolean {
  // Fast path: a body with at most `max` brackets in all cannot nest deeper than `max`; counting
  // them with the native indexOf is much cheaper than walking every byte of a normal body.
  let brackets = 0;
  for (const open of [0x7b, 0x5b]) {
    for (let at = text.indexOf(open); at !== -1; at = text.indexOf(open, at + 1)) {
      if (++brackets > max) break;
    }
  }
  if (brackets <= max) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

function prematureClose(): Error {
  return Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" });
}

/**
 * The whole body, or null as soon as it passes `max` bytes: nothing past the cap is read, the
 * stream is destroyed there. Plain listeners rather than `for await`, whose
 * async iterator costs a generator and a promise per chunk on every poll. Rejects with the
 * stream's error (e.g. the deadline's abort reason), as the iterator did.
 */
function readCapped(body: Body, max: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      body.off("data", onData);
      body.off("end", onEnd);
      body.off("error", onError);
      body.off("close", onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        done();
        // Stop reading now, as leaving a `for await` would; the socket goes with it.
        body.on("error", noop);
        body.destroy();
        resolve(null);
      } else chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const onClose = () => {
      done();
      reject(prematureClose());
    };
    body.on("data", onData).on("end", onEnd).on("error", onError).on("close", onClose);
  });
}

async function drain(body: Body): Promise<void> {
  await body.dump({ limit: DRAIN_LIMIT_BYTES });
}

function onDeadline(controller: AbortController): void {
  controller.abort(new ApiTransientError("timeout"));
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
  readonly #inFlight = new Set<AbortController>();
  /** Aborted by abortInFlight(): ends retry waits as well as requests. */
  readonly #stop = new AbortController();

  constructor(opts: JobsClientOptions) {
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
  }

  async poll(jobId: string, opts: { signal?: AbortSignal } = {}): Promise<PollOutcome> {
    if (!LOWERCASE_UUID.test(jobId)) return invalid("job id is not a lowercase uuid");
    const { signal } = opts;
    if (signal?.aborted) return ABORTED;
    const budgetMs = this.#opts.retryBudgetMs;
    const started = performance.now();
    // Fast path: most polls succeed at once, and p-retry's bookkeeping per call is measurable at
    // thousands of polls per second, so the first attempt runs on its own.
    let first: unknown;
    try {
      return await this.#attempt(jobId, signal);
    } catch (err) {
      if (signal?.aborted || this.#stop.signal.aborted) return ABORTED;
      if (this.#opts.retries === 0 || classify(err) !== "transient") return toOutcome(err, false);
      first = err;
    }
    // The Retry-After we already slept through; it must not be handed to the poller again.
    let honoured: unknown;
    // The slow path is rare: combining the signals here costs nothing measurable.
    const slow = signal ? AbortSignal.any([signal, this.#stop.signal]) : this.#stop.signal;
    try {
      const firstWait =
        first instanceof ApiTransientError && first.retryAfterMs !== undefined
          ? first.retryAfterMs
          : Math.round(MIN_BACKOFF_MS * (1 + Math.random()));
      if (firstWait > budgetMs - (performance.now() - started)) return toOutcome(first, false);
      await sleep(firstWait, undefined, { signal: slow });
      if (first instanceof ApiTransientError && first.retryAfterMs !== undefined) honoured = first;
      return await pRetry(() => this.#attempt(jobId, slow), {
        retries: this.#opts.retries - 1,
        factor: 2,
        minTimeout: MIN_BACKOFF_MS,
        randomize: true,
        maxRetryTime: Math.max(1, budgetMs - (performance.now() - started)),
        signal: slow,
        shouldRetry: ({ error }) => classify(error) === "transient",
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
      if (signal?.aborted || this.#stop.signal.aborted) return ABORTED;
      return toOutcome(err, err === honoured);
    }
  }

  /**
   * Aborts every request in flight (the poller's shutdown deadline). Cheaper for the hot path
   * than one abort listener per request on a shared signal.
   */
  abortInFlight(): void {
    this.#stop.abort();
    for (const controller of this.#inFlight) controller.abort(new ApiTransientError("aborted"));
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
      status = await this.#exchange(jobId, requestId, undefined, async (res) => {
        await drain(res.body);
        return res.statusCode;
      });
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
    this.#closing ??= this.#pool.close();
    return this.#closing;
  }

  /** One request; throws only what is worth a retry (or unexpected), returns everything else. */
  async #attempt(jobId: string, signal: AbortSignal | undefined): Promise<PollOutcome> {
    const requestId = randomUUID();
    const t0 = performance.now();
    let status: number | undefined;
    try {
      const outcome = await this.#exchange(jobId, requestId, signal, (res) => {
        status = res.statusCode;
        return this.#interpret(jobId, res);
      });
      const reason = outcome.kind === "invalid" ? outcome.reason : undefined;
      this.#report(jobId, requestId, outcome.kind, status, t0, reason, signal);
      return outcome;
    } catch (err) {
      this.#report(jobId, requestId, classify(err), status, t0, reasonOf(err), signal);
      throw err;
    }
  }

  /**
   * Sends GET for `jobId` under an overall deadline and hands the response to `handle`. Whatever
   * `handle` did or threw, the body is destroyed if it was left unread: an unread undici body
   * pins its socket.
   */
  async #exchange<T>(
    jobId: string,
    requestId: string,
    signal: AbortSignal | undefined,
    handle: (res: Dispatcher.ResponseData) => Promise<T>,
  ): Promise<T> {
    const key = this.#readKey();
    const controller = new AbortController();
    if (this.#stop.signal.aborted) controller.abort(new ApiTransientError("aborted"));
    const timer = setTimeout(onDeadline, this.#opts.requestTimeoutMs, controller);
    const onCallerAbort = () => controller.abort(signal?.reason);
    signal?.addEventListener("abort", onCallerAbort, { once: true });
    this.#inFlight.add(controller);
    let body: Body | undefined;
    try {
      const res = await this.#pool.request({
        path: this.#jobsPath + jobId,
        method: "GET",
        headers: {
          "x-api-key": key,
          "x-request-id": requestId,
          accept: "application/json",
          "user-agent": this.#userAgent,
        },
        signal: controller.signal,
      });
      body = res.body;
      return await handle(res);
    } finally {
      clearTimeout(timer);
      this.#inFlight.delete(controller);
      signal?.removeEventListener("abort", onCallerAbort);
      if (body !== undefined && !body.destroyed) {
        // destroy() of an unfinished body emits an abort error nobody else listens for.
        body.on("error", noop);
        body.destroy();
      }
    }
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

  async #interpret(jobId: string, res: Dispatcher.ResponseData): Promise<PollOutcome> {
    const { statusCode: status, headers, body } = res;
    if (status === 200) return this.#readJob(jobId, headers, body);
    await drain(body);
    if (status === 404) return NOT_FOUND;
    if (status === 401 || status === 403) return { kind: "auth", status };
    if (RETRY_STATUSES.has(status)) {
      const retryAfterMs = parseRetryAfter(headers["retry-after"], Date.now());
      throw new ApiTransientError(`http ${status}`, { status, retryAfterMs });
    }
    if (status >= 300 && status < 400) return invalid(`unexpected redirect (http ${status})`);
    return invalid(`unexpected status (http ${status})`);
  }

  async #readJob(jobId: string, headers: IncomingHttpHeaders, body: Body): Promise<PollOutcome> {
    if (!isJsonMediaType(headers["content-type"])) {
      await drain(body);
      return invalid("unexpected content type");
    }
    const max = this.#opts.maxBodyBytes;
    if (Number(headers["content-length"]) > max) return invalid("body too large");
    const text = await readCapped(body, max);
    if (text === null) return invalid("body too large");
    if (exceedsDepth(text, MAX_JSON_DEPTH)) return invalid("body nested too deeply");
    let value: unknown;
    try {
      value = JSON.parse(text.toString("utf8"));
    } catch {
      return invalid("body is not json");
    }
    const parsed = jobSchema.safeParse(value);
    if (!parsed.success) return invalid(`schema: ${describeIssues(parsed.error)}`);
    if (parsed.data.jobId.toLowerCase() !== jobId) return invalid("jobId mismatch");
    return { kind: "ok", job: parsed.data };
  }

  #report(
    jobId: string,
    requestId: string,
    outcome: ErrorKind | PollOutcomeKind,
    status: number | undefined,
    t0: number,
    reason: string | undefined,
    signal: AbortSignal | undefined,
  ): void {
    const durationMs = Math.round(performance.now() - t0);
    const { logger, onAttempt } = this.#opts;
    if (logger !== undefined) {
      const failed = outcome !== "ok" && outcome !== "not_found" && signal?.aborted !== true;
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
  if (kind === "not_found") return NOT_FOUND;
  if (kind === "invalid") return invalid(reasonOf(err));
  const retryAfterMs = err instanceof ApiTransientError ? err.retryAfterMs : undefined;
  if (retryAfterMs !== undefined && retryAfterMs > 0 && !retryAfterHonoured) {
    return { kind, reason: reasonOf(err), retryAfterMs };
  }
  return { kind, reason: reasonOf(err) };
}
