import type { IncomingMessage, ServerResponse } from "node:http";
import { z } from "zod";
import { describeIssues, JOB_STATUSES, JOB_TYPES } from "../api/schema.js";
import { sendJson } from "./http.js";
import type { Simulator } from "./simulator.js";

/**
 * The admin API (`/__sim/...`), so that other processes (chaos tests, docker-compose, the
 * benchmark driver) can drive a simulator they did not start. JSON in and out; the caller has
 * already checked the API key. Every body is validated: a typo in a chaos script should be a
 * 400 that names the field, not a silently ignored setting.
 */

const probability = z.number().min(0).max(1).optional();

const faultsSchema = z.strictObject({
  jobId: z.guid().optional(),
  error5xx: probability,
  status5xx: z.int().min(500).max(599).optional(),
  rateLimit: probability,
  retryAfterS: z.int().min(0).optional(),
  slow: probability,
  slowMs: z.int().min(0).optional(),
  hang: probability,
  reset: probability,
  malformed: probability,
  schemaBreak: probability,
  wrongJobId: probability,
  htmlContentType: probability,
  huge: probability,
  authFail: probability,
});

const stepSchema = z.strictObject({
  afterMs: z.number().min(0),
  status: z.enum(JOB_STATUSES),
  attempts: z.int().min(0).optional(),
  slaBreached: z.boolean().optional(),
  lastError: z.string().nullable().optional(),
});

const jobSpecSchema = z.strictObject({
  jobId: z.guid().optional(),
  type: z.enum(JOB_TYPES).optional(),
  steps: z.array(stepSchema).optional(),
  maxAttempts: z.int().min(0).optional(),
  slaDeadlineInMs: z.number().nullable().optional(),
  visibleAfterMs: z.number().min(0).optional(),
  partnerSubjectId: z.string().nullable().optional(),
  lastError: z.string().nullable().optional(),
  errorDetail: z.unknown().optional(),
});

const createJobsSchema = z.union([
  z.strictObject({ count: z.int().min(0).max(1_000_000) }),
  jobSpecSchema,
]);

const scriptSchema = z.strictObject({
  jobId: z.guid(),
  responses: z.array(
    z.strictObject({
      status: z.int().min(100).max(599),
      body: z.unknown().optional(),
      headers: z.record(z.string(), z.string()).optional(),
      delayMs: z.int().min(0).optional(),
      reset: z.boolean().optional(),
    }),
  ),
});

const apiKeySchema = z.strictObject({ apiKey: z.string().min(1) });

/** `rate: null` removes the quota. */
const quotaSchema = z.strictObject({
  rate: z.number().gt(0).max(1_000_000).nullable(),
  burst: z.int().min(1).max(1_000_000).optional(),
  headers: z.boolean().optional(),
});

const latencySchema = z.strictObject({ ms: z.int().min(0).max(600_000) });

const MAX_BODY_BYTES = 1024 * 1024;

class BadRequest extends Error {
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new BadRequest("body larger than 1 MiB", 413);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new BadRequest("body is not JSON");
  }
}

async function parse<T>(req: IncomingMessage, schema: z.ZodType<T>): Promise<T> {
  const result = schema.safeParse(await readJson(req));
  if (!result.success) throw new BadRequest(describeIssues(result.error, 10));
  return result.data;
}

type Route = (sim: Simulator, req: IncomingMessage) => Promise<unknown>;

const ROUTES: Record<string, Route> = {
  "POST jobs": async (sim, req) => {
    const body = await parse(req, createJobsSchema);
    const jobIds = "count" in body ? sim.addRandomJobs(body.count) : [sim.addJob(body)];
    return { jobIds };
  },
  "PUT faults": async (sim, req) => {
    const { jobId, ...faults } = await parse(req, faultsSchema);
    sim.setFaults(faults, jobId);
    return { ok: true };
  },
  "DELETE faults": async (sim) => {
    sim.clearFaults();
    return { ok: true };
  },
  "POST script": async (sim, req) => {
    const { jobId, responses } = await parse(req, scriptSchema);
    sim.script(jobId, responses);
    return { ok: true };
  },
  "GET stats": async (sim) => {
    const stats = sim.stats();
    const cpu = process.cpuUsage();
    // The process's CPU time, for benchmarks that charge the simulator's share of a poll.
    return { ...stats, byJob: Object.fromEntries(stats.byJob), cpuUs: cpu.user + cpu.system };
  },
  "POST reset-stats": async (sim) => {
    sim.resetStats();
    return { ok: true };
  },
  "PUT quota": async (sim, req) => {
    const { rate, ...rest } = await parse(req, quotaSchema);
    sim.setQuota(rate === null ? null : { rate, ...rest });
    return { ok: true };
  },
  "PUT latency": async (sim, req) => {
    sim.setLatency((await parse(req, latencySchema)).ms);
    return { ok: true };
  },
  "PUT api-key": async (sim, req) => {
    sim.setApiKey((await parse(req, apiKeySchema)).apiKey);
    return { ok: true };
  },
};

export async function handleAdmin(
  sim: Simulator,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
): Promise<void> {
  const end = path.indexOf("?");
  const route = ROUTES[`${req.method ?? "GET"} ${end === -1 ? path : path.slice(0, end)}`];
  if (route === undefined)
    return sendJson(res, 404, { error: "not_found", message: "No such admin route" });
  try {
    sendJson(res, 200, await route(sim, req));
  } catch (err) {
    if (!(err instanceof BadRequest)) throw err;
    sendJson(res, err.status, { error: "bad_request", message: err.message });
  }
}
