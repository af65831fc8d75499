import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { isJobId } from "../api/schema.js";
import { handleAdmin } from "./admin.js";
import {
  breakSchema,
  type FaultPlan,
  type Faults,
  HTML_PAGE,
  hasFaults,
  hugeBody,
  malformedBody,
  mergeFaults,
  NO_FAULTS,
  planFaults,
  SCHEMA_BREAK_COUNT,
} from "./faults.js";
import { JSON_TYPE, sendJson, sendText } from "./http.js";
import { createSimJob, jobAt, type SimJob, type SimJobSpec } from "./lifecycle.js";
import { pipelineSpec } from "./mix.js";
import { Quota, type QuotaSettings } from "./quota.js";
import { createRng, type Rng, randomSeed } from "./random.js";

export type { Faults } from "./faults.js";
export type { SimJobSpec, SimStep } from "./lifecycle.js";
export type { QuotaSettings } from "./quota.js";

/**
 * Which lifecycles `addRandomJobs` draws. `scenarios`: the poller's edge cases (retries, dead
 * letters, SLA breaches, jobs faster than a first poll) with uniform timings. `pipeline`: per
 * step type log-normal queue and run times (src/sim/mix.ts), what a learned schedule faces.
 */
export type SimMix = "scenarios" | "pipeline";

export interface SimulatorOptions {
  apiKey: string;
  /** Default 0: any free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Seeds the random lifecycles and fault rolls; random when absent. */
  seed?: number;
  /**
   * Benchmark mode: any lowercase uuid exists and is `running` forever, the body is
   * pre-serialized, and a request costs nothing beyond the key check (no faults, scripts or
   * per-job stats; only `requests` is counted).
   */
  fast?: boolean;
  /** Unknown uuids get a random lifecycle on first sight (demo). */
  autoCreate?: boolean;
  /** A quota for the key: beyond it, 429 with Retry-After (fast mode too). */
  quota?: QuotaSettings;
  /** Every answer on `/v1/jobs/` waits this long, like a real API across a network. */
  latencyMs?: number;
  /** Drives every lifecycle; default Date.now. */
  clock?: () => number;
  logger?: Logger;
}

export type ScriptedResponse = {
  status: number;
  /** A string is sent as is; anything else as JSON. */
  body?: unknown | string;
  headers?: Record<string, string>;
  delayMs?: number;
  /** Destroy the socket (after `delayMs`) instead of answering. */
  reset?: boolean;
};

export interface SimulatorStats {
  /** Requests to `/v1/jobs/...` (the admin API is not counted). */
  requests: number;
  /** Of those, refused with 429 by the quota (not by the rateLimit fault). */
  throttled: number;
  byJob: Map<string, number>;
  maxConcurrentPerJob: number;
  /** Requests for a job that arrived while another for the same job was still open. */
  overlapsPerJob: number;
}

export interface Simulator {
  url: string;
  port: number;
  addJob(spec?: SimJobSpec): string;
  addRandomJobs(n: number, mix?: SimMix): string[];
  setFaults(f: Faults, jobId?: string): void;
  clearFaults(): void;
  setApiKey(key: string): void;
  /** null removes the quota. A new quota starts with a full bucket. */
  setQuota(quota: QuotaSettings | null): void;
  setLatency(ms: number): void;
  script(jobId: string, responses: ScriptedResponse[]): void;
  stats(): SimulatorStats;
  resetStats(): void;
  close(): Promise<void>;
}

const JOBS_PATH = "/v1/jobs/";
const ADMIN_PATH = "/__sim/";
const UUID_LENGTH = 36;

/** Charcode test instead of a regex: fast mode's whole per-request budget is a few checks. */
function isLowercaseUuid(s: string): boolean {
  if (s.length !== UUID_LENGTH) return false;
  for (let i = 0; i < UUID_LENGTH; i++) {
    const c = s.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 45) return false;
    } else if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

function pathId(url: string): string {
  const end = url.indexOf("?");
  return url.slice(JOBS_PATH.length, end === -1 ? undefined : end);
}

const UNAUTHORIZED = { error: "unauthorized", message: "Missing or invalid X-Api-Key" };
const NOT_FOUND = { error: "not_found", message: "Job not found" };

class SimulatorServer implements Simulator {
  url = "";
  port = 0;

  private apiKey: string;
  private readonly clock: () => number;
  private readonly jobRng: Rng;
  private readonly faultRng: Rng;
  private readonly server: Server;
  private readonly jobs = new Map<string, SimJob>();
  private globalFaults: Faults = {};
  private readonly jobFaults = new Map<string, Faults>();
  private anyFaults = false;
  private readonly scripts = new Map<string, ScriptedResponse[]>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly open = new Map<string, number>();
  private counters = { requests: 0, throttled: 0, maxConcurrentPerJob: 0, overlapsPerJob: 0 };
  private quota: Quota | null = null;
  private latencyMs = 0;
  private byJob = new Map<string, number>();
  private fastBody: { head: string; tail: string; length: number } | undefined;
  private closing: Promise<void> | undefined;

  constructor(private readonly opts: SimulatorOptions) {
    this.apiKey = opts.apiKey;
    this.clock = opts.clock ?? Date.now;
    const seed = opts.seed ?? randomSeed();
    this.jobRng = createRng(seed);
    // A separate stream, so turning faults on does not change which jobs a seed produces.
    this.faultRng = createRng(seed ^ 0x5bd1e995);
    if (opts.fast === true) this.fastBody = this.buildFastBody();
    if (opts.quota !== undefined) this.setQuota(opts.quota);
    this.setLatency(opts.latencyMs ?? 0);
    this.server = createServer((req, res) => this.route(req, res));
    this.server.keepAliveTimeout = 30_000;
    this.server.on("clientError", (_err, socket) => socket.destroy());
  }

  async listen(): Promise<void> {
    const host = this.opts.host ?? "127.0.0.1";
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.opts.port ?? 0, host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    this.port = (this.server.address() as AddressInfo).port;
    this.url = `http://${clientHost(host)}:${this.port}`;
  }

  addJob(spec: SimJobSpec = {}): string {
    const job = createSimJob(spec, this.jobRng, this.clock(), randomUUID);
    this.jobs.set(job.jobId, job);
    return job.jobId;
  }

  addRandomJobs(n: number, mix: SimMix = "scenarios"): string[] {
    // Ids come from the seeded sequence too, so a seed reproduces the whole set.
    return Array.from({ length: n }, () => {
      const jobId = this.jobRng.uuid();
      return this.addJob(mix === "pipeline" ? { ...pipelineSpec(this.jobRng), jobId } : { jobId });
    });
  }

  setFaults(f: Faults, jobId?: string): void {
    if (jobId === undefined) this.globalFaults = { ...f };
    else this.jobFaults.set(jobId.toLowerCase(), { ...f });
    this.anyFaults = hasFaults(this.globalFaults) || [...this.jobFaults.values()].some(hasFaults);
  }

  clearFaults(): void {
    this.globalFaults = {};
    this.jobFaults.clear();
    this.anyFaults = false;
  }

  setApiKey(key: string): void {
    this.apiKey = key;
  }

  setQuota(quota: QuotaSettings | null): void {
    this.quota = quota === null ? null : new Quota(quota, this.clock());
  }

  setLatency(ms: number): void {
    if (!(ms >= 0)) throw new Error("latency must be 0 or more");
    this.latencyMs = ms;
  }

  script(jobId: string, responses: ScriptedResponse[]): void {
    const id = jobId.toLowerCase();
    this.scripts.set(id, [...(this.scripts.get(id) ?? []), ...responses]);
  }

  stats(): SimulatorStats {
    return { ...this.counters, byJob: new Map(this.byJob) };
  }

  resetStats(): void {
    this.counters = { requests: 0, throttled: 0, maxConcurrentPerJob: 0, overlapsPerJob: 0 };
    this.byJob = new Map();
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      for (const timer of this.timers) clearTimeout(timer);
      this.timers.clear();
      this.server.close(() => resolve());
      // Hanging and slow requests would otherwise keep close() waiting for the client.
      this.server.closeAllConnections();
    });
    return this.closing;
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? "/";
    if (url.startsWith(JOBS_PATH)) {
      if (this.fastBody !== undefined) this.serveFast(req, res, url, this.fastBody);
      else this.serveJob(req, res, url).catch((err: unknown) => this.fail(res, err));
      return;
    }
    if (!this.authorized(req)) {
      sendJson(res, 401, UNAUTHORIZED);
      return;
    }
    if (url.startsWith(ADMIN_PATH)) {
      handleAdmin(this, req, res, url.slice(ADMIN_PATH.length)).catch((err: unknown) =>
        this.fail(res, err),
      );
      return;
    }
    sendJson(res, 404, { error: "not_found", message: "No such route" });
  }

  private authorized(req: IncomingMessage): boolean {
    return req.headers["x-api-key"] === this.apiKey;
  }

  private fail(res: ServerResponse, err: unknown): void {
    this.opts.logger?.error({ err }, "simulator request failed");
    if (!res.headersSent && !res.destroyed) sendJson(res, 500, { error: "internal" });
    else res.destroy();
  }

  private buildFastBody(): { head: string; tail: string; length: number } {
    const marker = "00000000-0000-4000-8000-000000000000";
    const job = createSimJob(
      {
        jobId: marker,
        steps: [{ afterMs: 0, status: "running", attempts: 1 }],
        slaDeadlineInMs: null,
      },
      this.jobRng,
      this.clock(),
      randomUUID,
    );
    const text = JSON.stringify(jobAt(job, job.createdAt));
    const at = text.indexOf(marker);
    const head = text.slice(0, at);
    const tail = text.slice(at + marker.length);
    return { head, tail, length: Buffer.byteLength(head) + UUID_LENGTH + Buffer.byteLength(tail) };
  }

  private serveFast(
    req: IncomingMessage,
    res: ServerResponse,
    url: string,
    body: { head: string; tail: string; length: number },
  ): void {
    this.counters.requests++;
    if (this.latencyMs > 0) {
      void this.delay(this.latencyMs, res).then((wanted) => {
        if (wanted) this.answerFast(req, res, url, body);
      });
      return;
    }
    this.answerFast(req, res, url, body);
  }

  private answerFast(
    req: IncomingMessage,
    res: ServerResponse,
    url: string,
    body: { head: string; tail: string; length: number },
  ): void {
    if (!this.authorized(req)) {
      sendJson(res, 401, UNAUTHORIZED);
      return;
    }
    let quotaHeaders: Record<string, string> | undefined;
    if (this.quota !== null) {
      const verdict = this.quota.take(this.clock());
      if (!verdict.ok) {
        this.throttle(res, verdict.retryAfterS, verdict.headers);
        return;
      }
      quotaHeaders = verdict.headers;
    }
    const id = url.length === JOBS_PATH.length + UUID_LENGTH ? url.slice(JOBS_PATH.length) : "";
    if (!isLowercaseUuid(id)) {
      sendJson(res, 404, NOT_FOUND);
      return;
    }
    const requestId = req.headers["x-request-id"];
    const headers: Record<string, string | number> = {
      ...quotaHeaders,
      "content-type": JSON_TYPE,
      "content-length": body.length,
    };
    if (typeof requestId === "string") headers["x-request-id"] = requestId;
    res.writeHead(200, headers);
    res.end(body.head + id + body.tail);
  }

  /**
   * Order: the key first (a wrong key is always a 401), then a scripted response if one is
   * queued (scripts bypass faults), then the faults, then the lifecycle.
   */
  private async serveJob(req: IncomingMessage, res: ServerResponse, url: string): Promise<void> {
    const requestIdHeader = req.headers["x-request-id"];
    const requestId = typeof requestIdHeader === "string" ? requestIdHeader : randomUUID();
    const echo = { "x-request-id": requestId };
    const raw = pathId(url);
    const jobId = isJobId(raw) ? raw.toLowerCase() : null;
    this.track(jobId, res);
    if (this.latencyMs > 0 && !(await this.delay(this.latencyMs, res))) return;

    if (!this.authorized(req)) return sendJson(res, 401, UNAUTHORIZED, echo);

    if (this.quota !== null) {
      const verdict = this.quota.take(this.clock());
      if (!verdict.ok)
        return this.throttle(res, verdict.retryAfterS, { ...echo, ...verdict.headers });
      Object.assign(echo, verdict.headers);
    }

    const scripted = jobId === null ? undefined : this.scripts.get(jobId)?.shift();
    if (scripted !== undefined) return this.serveScripted(res, scripted, echo);

    const plan = this.anyFaults ? this.plan(jobId) : NO_FAULTS;
    if (plan.delayMs > 0 && !(await this.delay(plan.delayMs, res))) return;
    switch (plan.answer) {
      case "reset":
        res.destroy();
        return;
      case "hang":
        // Left open on purpose; close() and the client's own timeout end it.
        return;
      case "authFail":
        return sendJson(res, 401, UNAUTHORIZED, echo);
      case "rateLimit":
        return sendJson(
          res,
          429,
          { error: "rate_limited" },
          {
            ...echo,
            "retry-after": String(this.faultsFor(jobId).retryAfterS ?? 1),
          },
        );
      case "error5xx": {
        const status = this.faultsFor(jobId).status5xx ?? 503;
        return sendJson(res, status, { error: "upstream_error" }, echo);
      }
      case null:
        break;
    }

    const job = jobId === null ? undefined : this.lookup(jobId);
    const body = job === undefined ? null : jobAt(job, this.clock());
    if (body === null) return sendJson(res, 404, NOT_FOUND, echo);

    switch (plan.body) {
      case "malformed":
        return sendText(res, 200, JSON_TYPE, malformedBody(body), echo);
      case "schemaBreak":
        return sendJson(
          res,
          200,
          breakSchema(body, this.faultRng.int(0, SCHEMA_BREAK_COUNT - 1)),
          echo,
        );
      case "wrongJobId":
        return sendJson(res, 200, { ...body, jobId: this.faultRng.uuid() }, echo);
      case "htmlContentType":
        return sendText(res, 200, "text/html; charset=utf-8", HTML_PAGE, echo);
      case "huge":
        return sendText(res, 200, JSON_TYPE, hugeBody(body), echo);
      case null:
        return sendJson(res, 200, body, echo);
    }
  }

  /** The quota's refusal, as a gateway sends it. */
  private throttle(
    res: ServerResponse,
    retryAfterS: number,
    headers: Record<string, string>,
  ): void {
    this.counters.throttled++;
    sendJson(
      res,
      429,
      { error: "rate_limited", message: "Too many requests for this API key" },
      { ...headers, "retry-after": String(retryAfterS) },
    );
  }

  private lookup(jobId: string): SimJob | undefined {
    const known = this.jobs.get(jobId);
    if (known !== undefined || this.opts.autoCreate !== true) return known;
    this.addJob({ jobId });
    return this.jobs.get(jobId);
  }

  private faultsFor(jobId: string | null): Faults {
    return mergeFaults(this.globalFaults, jobId === null ? undefined : this.jobFaults.get(jobId));
  }

  private plan(jobId: string | null): FaultPlan {
    const faults = this.faultsFor(jobId);
    return hasFaults(faults) ? planFaults(faults, this.faultRng) : NO_FAULTS;
  }

  private async serveScripted(
    res: ServerResponse,
    scripted: ScriptedResponse,
    echo: Record<string, string>,
  ): Promise<void> {
    if ((scripted.delayMs ?? 0) > 0 && !(await this.delay(scripted.delayMs ?? 0, res))) return;
    if (scripted.reset === true) {
      res.destroy();
      return;
    }
    const { body } = scripted;
    const text = body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body);
    res.writeHead(scripted.status, {
      "content-type": JSON_TYPE,
      ...echo,
      ...scripted.headers,
      "content-length": Buffer.byteLength(text),
    });
    res.end(text);
  }

  /** Resolves false when the answer is no longer wanted (client gone or simulator closing). */
  private delay(ms: number, res: ServerResponse): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        resolve(!res.destroyed && this.closing === undefined);
      }, ms);
      this.timers.add(timer);
      res.once("close", () => {
        if (this.timers.delete(timer)) {
          clearTimeout(timer);
          resolve(false);
        }
      });
    });
  }

  /** Counts the request and how many for the same job are open at once, until its socket closes. */
  private track(jobId: string | null, res: ServerResponse): void {
    this.counters.requests++;
    if (jobId === null) return;
    this.byJob.set(jobId, (this.byJob.get(jobId) ?? 0) + 1);
    const open = (this.open.get(jobId) ?? 0) + 1;
    if (open > 1) this.counters.overlapsPerJob++;
    this.counters.maxConcurrentPerJob = Math.max(this.counters.maxConcurrentPerJob, open);
    this.open.set(jobId, open);
    res.once("close", () => {
      const left = (this.open.get(jobId) ?? 1) - 1;
      if (left > 0) this.open.set(jobId, left);
      else this.open.delete(jobId);
    });
  }
}

/** The address a client should use: a wildcard bind is reached through loopback. */
function clientHost(host: string): string {
  if (host === "0.0.0.0" || host === "") return "127.0.0.1";
  if (host === "::") return "[::1]";
  return host.includes(":") ? `[${host}]` : host;
}

export async function startSimulator(opts: SimulatorOptions): Promise<Simulator> {
  const sim = new SimulatorServer(opts);
  await sim.listen();
  opts.logger?.debug({ url: sim.url, fast: opts.fast === true }, "simulator listening");
  return sim;
}
