import { randomUUID } from "node:crypto";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import {
  type AttemptInfo,
  JobsClient,
  type JobsClientOptions,
  MAX_JSON_DEPTH,
} from "../../src/api/client.js";
import type { PollOutcome } from "../../src/api/outcome.js";
import { RequestBudget } from "../../src/poller/budget.js";
import { BudgetStore } from "../../src/store/budget.js";
import { keysFor } from "../../src/store/keys.js";
import { jobBody as fullJobBody } from "../fixtures/job.js";
import { cleanPrefix, redisClient, testPrefix } from "../helpers/redis.js";

const API_KEY = "sk-KEY-SENTINEL-0b5e2c";
const BODY_SENTINEL = "PATIENT-SENTINEL-91d4";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Seen {
  at: number;
  url: string;
  headers: IncomingHttpHeaders;
}

type Handler = (req: IncomingMessage, res: ServerResponse, index: number) => void;

interface TestServer {
  url: string;
  seen: Seen[];
}

const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startServer(handler: Handler): Promise<TestServer> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    seen.push({ at: performance.now(), url: req.url ?? "", headers: req.headers });
    res.on("error", () => {});
    handler(req, res, seen.length - 1);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, seen };
}

function jobBody(jobId: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const patientFields = {
    partnerSubjectId: BODY_SENTINEL,
    lastError: BODY_SENTINEL,
    errorDetail: { note: BODY_SENTINEL },
  };
  return { ...fullJobBody({ jobId, ...patientFields }), ...overrides };
}

function sendJson(res: ServerResponse, status: number, value: unknown, type = "application/json") {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** Answers every request for a job with that job's body. */
function okFor(req: IncomingMessage, res: ServerResponse) {
  const jobId = (req.url ?? "").split("/").pop() ?? "";
  sendJson(res, 200, jobBody(jobId));
}

interface Harness {
  client: JobsClient;
  logs: string[];
  attempts: AttemptInfo[];
}

function makeClient(baseUrl: string, overrides: Partial<JobsClientOptions> = {}): Harness {
  const logs: string[] = [];
  const attempts: AttemptInfo[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => void logs.push(line) });
  const client = new JobsClient({
    baseUrl,
    apiKey: () => API_KEY,
    concurrency: 4,
    requestTimeoutMs: 2000,
    retries: 2,
    maxBodyBytes: 64 * 1024,
    retryBudgetMs: 5000,
    logger,
    onAttempt: (info) => void attempts.push(info),
    ...overrides,
  });
  cleanups.push(() => client.close());
  return { client, logs, attempts };
}

function expectKind<K extends PollOutcome["kind"]>(
  outcome: PollOutcome,
  kind: K,
): Extract<PollOutcome, { kind: K }> {
  expect(outcome.kind, JSON.stringify(outcome)).toBe(kind);
  return outcome as Extract<PollOutcome, { kind: K }>;
}

describe("JobsClient.poll", () => {
  it("returns the validated job and sends the expected request", async () => {
    const server = await startServer(okFor);
    const { client, attempts } = makeClient(server.url, { userAgent: "poller-test/1" });
    const jobId = randomUUID();

    const ok = expectKind(await client.poll(jobId), "ok");

    expect(ok.job.jobId).toBe(jobId);
    expect(ok.job.status).toBe("running");
    expect(server.seen).toHaveLength(1);
    const [request] = server.seen;
    expect(request?.url).toBe(`/v1/jobs/${jobId}`);
    expect(request?.headers["x-api-key"]).toBe(API_KEY);
    expect(request?.headers["accept"]).toBe("application/json");
    expect(request?.headers["user-agent"]).toBe("poller-test/1");
    expect(request?.headers["x-request-id"]).toMatch(UUID);
    expect(attempts).toEqual([{ outcome: "ok", status: 200, durationMs: expect.any(Number) }]);
  });

  it("keeps a path prefix of the base URL", async () => {
    const server = await startServer(okFor);
    const { client } = makeClient(`${server.url}/api/`);
    const jobId = randomUUID();
    expectKind(await client.poll(jobId), "ok");
    expect(server.seen[0]?.url).toBe(`/api/v1/jobs/${jobId}`);
  });

  it("accepts a body whose jobId differs only in case", async () => {
    const server = await startServer((req, res) => {
      const jobId = (req.url ?? "").split("/").pop() ?? "";
      sendJson(res, 200, jobBody(jobId.toUpperCase()), "application/problem+json; charset=utf-8");
    });
    const { client } = makeClient(server.url);
    expectKind(await client.poll(randomUUID()), "ok");
  });

  it("sends nothing for an id that is not a lowercase uuid", async () => {
    const server = await startServer(okFor);
    const { client } = makeClient(server.url);
    for (const id of [randomUUID().toUpperCase(), "../../admin", "", `${randomUUID()}/x`]) {
      expect(expectKind(await client.poll(id), "invalid").reason).toBe(
        "job id is not a lowercase uuid",
      );
    }
    expect(server.seen).toHaveLength(0);
  });

  it("reads the key for every request", async () => {
    const server = await startServer(okFor);
    let key = "key-one";
    const { client } = makeClient(server.url, { apiKey: () => key });
    await client.poll(randomUUID());
    key = "key-two";
    await client.poll(randomUUID());
    expect(server.seen.map((s) => s.headers["x-api-key"])).toEqual(["key-one", "key-two"]);
  });

  it("maps 404 to not_found without retrying", async () => {
    const server = await startServer((_req, res) => sendJson(res, 404, { error: "not found" }));
    const { client } = makeClient(server.url, { retries: 3 });
    expectKind(await client.poll(randomUUID()), "not_found");
    expect(server.seen).toHaveLength(1);
  });

  it.each([401, 403])("maps %i to auth without retrying", async (status) => {
    const server = await startServer((_req, res) => sendJson(res, status, { error: "nope" }));
    const { client } = makeClient(server.url, { retries: 3 });
    expect(expectKind(await client.poll(randomUUID()), "auth").status).toBe(status);
    expect(server.seen).toHaveLength(1);
  });

  it("reports auth without sending anything when the key cannot be read", async () => {
    const server = await startServer(okFor);
    const { client } = makeClient(server.url, {
      apiKey: () => {
        throw new Error("ENOENT: key file");
      },
    });
    expect(expectKind(await client.poll(randomUUID()), "auth").status).toBe(0);
    const { client: newline } = makeClient(server.url, { apiKey: () => `${API_KEY}\n` });
    expectKind(await newline.poll(randomUUID()), "auth");
    expect(server.seen).toHaveLength(0);
  });

  it("retries a 500 and returns the job of the next attempt", async () => {
    const server = await startServer((req, res, i) =>
      i === 0 ? sendJson(res, 500, { error: "boom" }) : okFor(req, res),
    );
    const { client, attempts } = makeClient(server.url);
    expectKind(await client.poll(randomUUID()), "ok");
    expect(server.seen).toHaveLength(2);
    expect(attempts.map((a) => [a.outcome, a.status])).toEqual([
      ["transient", 500],
      ["ok", 200],
    ]);
  });

  it("uses a fresh x-request-id for every attempt", async () => {
    const server = await startServer((req, res, i) =>
      i < 2 ? sendJson(res, 502, {}) : okFor(req, res),
    );
    const { client } = makeClient(server.url, { retries: 3 });
    expectKind(await client.poll(randomUUID()), "ok");
    const ids = server.seen.map((s) => s.headers["x-request-id"]);
    expect(ids).toHaveLength(3);
    for (const id of ids) expect(id).toMatch(UUID);
    expect(new Set(ids).size).toBe(3);
  });

  it("gives up as transient with the last reason once the retries are spent", async () => {
    const server = await startServer((_req, res) => sendJson(res, 504, {}));
    const { client } = makeClient(server.url, { retries: 2 });
    const outcome = expectKind(await client.poll(randomUUID()), "transient");
    expect(outcome.reason).toBe("http 504");
    expect(outcome.retryAfterMs).toBeUndefined();
    expect(server.seen).toHaveLength(3);
  });

  it("waits at least Retry-After before the next attempt", async () => {
    const server = await startServer((req, res, i) => {
      if (i > 0) return okFor(req, res);
      res.writeHead(429, { "retry-after": "1", "content-length": 0 });
      res.end();
    });
    const { client } = makeClient(server.url);
    expectKind(await client.poll(randomUUID()), "ok");
    expect(server.seen).toHaveLength(2);
    // Obeying the header is the property under test: the retry must not come early.
    const gap = (server.seen[1]?.at ?? 0) - (server.seen[0]?.at ?? 0);
    expect(gap).toBeGreaterThanOrEqual(900);
  });

  it("hands a Retry-After beyond the retry budget back to the poller", async () => {
    const server = await startServer((_req, res) => {
      res.writeHead(503, { "retry-after": "120", "content-length": 0 });
      res.end();
    });
    const { client } = makeClient(server.url, { retries: 3, retryBudgetMs: 5000 });
    const outcome = expectKind(await client.poll(randomUUID()), "transient");
    expect(outcome).toEqual({ kind: "transient", reason: "http 503", retryAfterMs: 120_000 });
    expect(server.seen).toHaveLength(1);
  });

  it("times out a request that hangs, retries, then reports transient", async () => {
    const server = await startServer(() => {});
    const { client } = makeClient(server.url, { requestTimeoutMs: 200, retries: 1 });
    const outcome = expectKind(await client.poll(randomUUID()), "transient");
    expect(outcome.reason).toMatch(/timeout/i);
    expect(server.seen).toHaveLength(2);
  });

  it("times out a body that never ends", async () => {
    const server = await startServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"jobId":');
    });
    const { client } = makeClient(server.url, { requestTimeoutMs: 200, retries: 0 });
    expect(expectKind(await client.poll(randomUUID()), "transient").reason).toMatch(/timeout/i);
  });

  it("goes by the status when only an unread body stalls: 404, 401 and 429 stay what they are", async () => {
    const stall = (status: number, headers: Record<string, string> = {}) =>
      startServer((_req, res) => {
        res.writeHead(status, { "content-type": "text/plain", ...headers });
        res.write("partial body that never ends");
      });
    const opts = { requestTimeoutMs: 200, retries: 0 };
    const notFound = await stall(404);
    expectKind(await makeClient(notFound.url, opts).client.poll(randomUUID()), "not_found");
    const auth = await stall(401);
    expect(await makeClient(auth.url, opts).client.poll(randomUUID())).toEqual({
      kind: "auth",
      status: 401,
    });
    const limited = await stall(429, { "retry-after": "7" });
    expect(await makeClient(limited.url, opts).client.poll(randomUUID())).toEqual({
      kind: "transient",
      reason: "http 429",
      retryAfterMs: 7000,
      throttled: true,
    });
    expect(await makeClient(auth.url, opts).client.probeAuth()).toBe("auth");
  });

  it("cuts off an unread body whose Content-Length is over the drain limit at once", async () => {
    let closed = false;
    const server = await startServer((req, res) => {
      req.socket.on("close", () => {
        closed = true;
      });
      res.writeHead(404, { "content-type": "text/plain", "content-length": 10 * 1024 * 1024 });
      res.write("x".repeat(1024));
    });
    // The timeout is far away: only the cap can end this poll before the test's own timeout.
    const { client } = makeClient(server.url, { requestTimeoutMs: 60_000, retries: 0 });
    expectKind(await client.poll(randomUUID()), "not_found");
    await expect.poll(() => closed).toBe(true);
  });

  it("retries after the connection is reset", async () => {
    const server = await startServer((req, res, i) =>
      i === 0 ? req.socket.destroy() : okFor(req, res),
    );
    const { client } = makeClient(server.url);
    expectKind(await client.poll(randomUUID()), "ok");
    expect(server.seen).toHaveLength(2);
  });

  it("reports transient when nothing listens", async () => {
    const server = await startServer(okFor);
    const url = server.url;
    for (const cleanup of cleanups.splice(0)) await cleanup();
    const { client } = makeClient(url, { retries: 1 });
    expect(expectKind(await client.poll(randomUUID()), "transient").reason).toBe(
      "network error ECONNREFUSED",
    );
  });

  it("returns transient 'aborted' when the caller aborts", async () => {
    const server = await startServer(() => {});
    const { client } = makeClient(server.url, { requestTimeoutMs: 30_000 });
    // The daemon's one way to abort: the shutdown deadline aborts every request in flight.
    const pending = client.poll(randomUUID());
    await expect.poll(() => server.seen.length).toBe(1);
    client.abortInFlight();
    expect(await pending).toEqual({ kind: "transient", reason: "aborted" });
    expect(server.seen).toHaveLength(1);
  });

  it("rejects a body that is not JSON", async () => {
    const server = await startServer((_req, res) => sendJson(res, 200, "{not json"));
    const { client } = makeClient(server.url);
    expect(expectKind(await client.poll(randomUUID()), "invalid").reason).toBe("body is not json");
    expect(server.seen).toHaveLength(1);
  });

  it.each(["text/html", "text/plain", undefined])("rejects content type %s", async (type) => {
    const server = await startServer((req, res) => {
      const jobId = (req.url ?? "").split("/").pop() ?? "";
      const text = JSON.stringify(jobBody(jobId));
      res.writeHead(200, type === undefined ? {} : { "content-type": type });
      res.end(text);
    });
    const { client } = makeClient(server.url);
    expect(expectKind(await client.poll(randomUUID()), "invalid").reason).toBe(
      "unexpected content type",
    );
  });

  it("rejects a body that breaks the schema, naming only paths and codes", async () => {
    const server = await startServer((req, res) => {
      const jobId = (req.url ?? "").split("/").pop() ?? "";
      sendJson(res, 200, jobBody(jobId, { status: BODY_SENTINEL, attempts: -1 }));
    });
    const { client, logs } = makeClient(server.url);
    const { reason } = expectKind(await client.poll(randomUUID()), "invalid");
    expect(reason).toBe("schema: status: invalid_value; attempts: too_small");
    expect(logs.join("\n")).toContain("schema: status: invalid_value");
    expect(logs.join("\n")).not.toContain(BODY_SENTINEL);
  });

  it("rejects a body about another job", async () => {
    const server = await startServer((_req, res) => sendJson(res, 200, jobBody(randomUUID())));
    const { client } = makeClient(server.url);
    expect(expectKind(await client.poll(randomUUID()), "invalid").reason).toBe("jobId mismatch");
  });

  it("never follows a redirect, so the key stays on the configured origin", async () => {
    const elsewhere = await startServer(okFor);
    const server = await startServer((req, res) => {
      res.writeHead(302, { location: `${elsewhere.url}${req.url}`, "content-length": 0 });
      res.end();
    });
    const { client } = makeClient(server.url, { retries: 3 });
    const { reason } = expectKind(await client.poll(randomUUID()), "invalid");
    expect(reason).toBe("unexpected redirect (http 302)");
    expect(server.seen).toHaveLength(1);
    expect(elsewhere.seen).toHaveLength(0);
  });

  it("maps other statuses to invalid without retrying", async () => {
    const server = await startServer((_req, res) => sendJson(res, 400, { error: "bad" }));
    const { client } = makeClient(server.url, { retries: 3 });
    expect(expectKind(await client.poll(randomUUID()), "invalid").reason).toBe(
      "unexpected status (http 400)",
    );
    expect(server.seen).toHaveLength(1);
  });

  it("rejects a body larger than maxBodyBytes, declared or not", async () => {
    const big = JSON.stringify({ padding: "x".repeat(100_000) });
    const declared = await startServer((_req, res) => sendJson(res, 200, big));
    const chunked = await startServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write(big.slice(0, 50_000));
      setImmediate(() => res.end(big.slice(50_000)));
    });
    for (const server of [declared, chunked]) {
      const { client } = makeClient(server.url, { maxBodyBytes: 1024 });
      expect(expectKind(await client.poll(randomUUID()), "invalid").reason).toBe("body too large");
    }
  });

  it("keeps working on the same pool after bodies were cut off", async () => {
    const server = await startServer((req, res, i) =>
      i % 2 === 0 ? sendJson(res, 200, "x".repeat(10_000)) : okFor(req, res),
    );
    const { client } = makeClient(server.url, { maxBodyBytes: 1024, concurrency: 1 });
    for (let i = 0; i < 3; i++) {
      expectKind(await client.poll(randomUUID()), "invalid");
      expectKind(await client.poll(randomUUID()), "ok");
    }
  });

  it.each([
    [10_000, "invalid"],
    [MAX_JSON_DEPTH - 1, "ok"],
  ] as const)("handles an errorDetail nested %i deep (%s)", async (depth, kind) => {
    const server = await startServer((req, res) => {
      const jobId = (req.url ?? "").split("/").pop() ?? "";
      // Brackets inside strings must not count towards the depth.
      const text = JSON.stringify(
        jobBody(jobId, { errorDetail: null, lastError: "{[{[{[" }),
      ).replace(
        '"errorDetail":null',
        `"errorDetail":${'{"a\\"{":'.repeat(depth)}null${"}".repeat(depth)}`,
      );
      sendJson(res, 200, text);
    });
    const { client } = makeClient(server.url, { maxBodyBytes: 1024 * 1024 });
    const outcome = await client.poll(randomUUID());
    if (kind === "invalid") {
      expect(outcome).toEqual({ kind: "invalid", reason: "body nested too deeply" });
      return;
    }
    const ok = expectKind(outcome, "ok");
    let node: unknown = ok.job.errorDetail;
    let levels = 0;
    while (typeof node === "object" && node !== null) {
      node = (node as Record<string, unknown>)['a"{'];
      levels++;
    }
    expect(levels).toBe(depth);
  });

  it("never puts the API key or body values into logs or reasons", async () => {
    const server = await startServer((req, res, i) => {
      const jobId = (req.url ?? "").split("/").pop() ?? "";
      const step = i % 5;
      if (step === 0) return sendJson(res, 500, { echo: req.headers["x-api-key"] });
      if (step === 1) return sendJson(res, 200, jobBody(jobId));
      if (step === 2) return sendJson(res, 401, { echo: req.headers["x-api-key"] });
      if (step === 3) return sendJson(res, 200, jobBody(jobId, { type: BODY_SENTINEL }));
      sendJson(res, 200, `{"key":"${API_KEY}", "detail": "${BODY_SENTINEL}"`);
    });
    const { client, logs } = makeClient(server.url, { retries: 1 });
    const outcomes: PollOutcome[] = [];
    for (let i = 0; i < 4; i++) outcomes.push(await client.poll(randomUUID()));
    expect(outcomes.map((o) => o.kind)).toEqual(["ok", "auth", "invalid", "invalid"]);
    expect(await client.probeAuth()).toBe("down");

    expect(logs.length).toBeGreaterThanOrEqual(5);
    const lines = logs.map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const line of lines.filter((l) => l["msg"] === "jobs api attempt")) {
      expect(line["jobId"]).toMatch(UUID);
      expect(line["requestId"]).toMatch(UUID);
    }
    expect(lines.some((l) => l["level"] === 40 && l["outcome"] === "auth")).toBe(true);
    const logText = logs.join("\n");
    expect(logText).not.toContain(API_KEY);
    expect(logText).not.toContain(BODY_SENTINEL);
    for (const outcome of outcomes) {
      expect(JSON.stringify(outcome)).not.toContain(API_KEY);
      if (outcome.kind !== "ok") expect(JSON.stringify(outcome)).not.toContain(BODY_SENTINEL);
    }
  });
});

describe("JobsClient.probeAuth", () => {
  it.each([
    [200, "ok"],
    [404, "ok"],
    [401, "auth"],
    [403, "auth"],
    [500, "down"],
    [302, "down"],
  ] as const)("maps %i to %s", async (status, expected) => {
    const server = await startServer((_req, res) => sendJson(res, status, {}));
    const { client } = makeClient(server.url);
    expect(await client.probeAuth()).toBe(expected);
    expect(server.seen).toHaveLength(1);
    expect(server.seen[0]?.url).toMatch(/^\/v1\/jobs\/[0-9a-f-]{36}$/);
    expect(server.seen[0]?.headers["x-api-key"]).toBe(API_KEY);
  });

  it("reports down when nothing listens", async () => {
    const server = await startServer(okFor);
    const url = server.url;
    for (const cleanup of cleanups.splice(0)) await cleanup();
    const { client } = makeClient(url);
    expect(await client.probeAuth()).toBe("down");
  });
});

describe("JobsClient with a request budget", () => {
  it("gives a poll up as throttled, unsent and unretried, when no permit comes within its budget", async () => {
    const redis = redisClient();
    const prefix = testPrefix();
    const permits = new RequestBudget({
      source: new BudgetStore(redis, keysFor(prefix).budget),
      settings: { limit: 1, burst: 1 },
    });
    cleanups.push(async () => {
      permits.close();
      await cleanPrefix(redis, prefix);
      redis.disconnect();
    });
    const server = await startServer(okFor);
    const { client, attempts } = makeClient(server.url, { permits, retryBudgetMs: 300 });
    expectKind(await client.poll(randomUUID()), "ok");
    // The next permit exists a second later; this poll may wait 300 ms for it.
    const started = performance.now();
    const outcome = expectKind(await client.poll(randomUUID()), "transient");
    expect(outcome).toMatchObject({ throttled: true, reason: "no request permit in time" });
    expect(performance.now() - started).toBeLessThan(1000);
    // Nothing went out, and no attempt is counted for the wait.
    expect(server.seen).toHaveLength(1);
    expect(attempts).toHaveLength(1);
    expect(permits.waiting).toBe(0);
  });
});

describe("JobsClient.close", () => {
  it("can be called twice and leaves later polls transient", async () => {
    const server = await startServer(okFor);
    const { client } = makeClient(server.url);
    expectKind(await client.poll(randomUUID()), "ok");
    await client.close();
    await client.close();
    expectKind(await client.poll(randomUUID()), "transient");
  });
});
