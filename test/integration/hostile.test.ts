import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import fc from "fast-check";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/index.js";
import { type Daemon, startDaemon } from "../../src/daemon/daemon.js";
import type { AnyCloudEvent } from "../../src/events/types.js";
import { jobBody } from "../fixtures/job.js";
import { checkExactlyOnce } from "../helpers/invariants.js";
import { cleanPrefix, redisClient, testPrefix, waitFor } from "../helpers/redis.js";
import { readAll } from "../helpers/streams.js";

const KEY = "hostile-key";
const JOB_PATH = /^\/v1\/jobs\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const UUID_ANY_CASE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface Recorded {
  path: string;
  apiKey: string | undefined;
}

interface Api {
  url: string;
  requests: Recorded[];
  /** Answers for a job id; the default is a valid `succeeded` body. */
  handlers: Map<string, (res: ServerResponse, id: string) => void>;
  close(): Promise<void>;
}

function succeeded(id: string): string {
  return JSON.stringify(
    jobBody({ jobId: id, status: "succeeded", statusLabel: "Succeeded", completedAt: null }),
  );
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A Jobs API that records every request path and answers as its handlers say. */
async function startApi(): Promise<Api> {
  const requests: Recorded[] = [];
  const handlers = new Map<string, (res: ServerResponse, id: string) => void>();
  const s = await listen((req, res) => {
    const path = req.url ?? "";
    const key = req.headers["x-api-key"];
    requests.push({ path, apiKey: typeof key === "string" ? key : undefined });
    const id = path.slice("/v1/jobs/".length);
    const handler = handlers.get(id);
    if (handler !== undefined) return handler(res, id);
    if (!JOB_PATH.test(path)) {
      res.writeHead(404, { "content-type": "application/json" }).end("{}");
      return;
    }
    const body = succeeded(id);
    res.writeHead(200, { "content-type": "application/json" }).end(body);
  });
  return { ...s, requests, handlers };
}

function daemonEnv(apiUrl: string, prefix: string, extra: Record<string, string> = {}) {
  return loadConfig({
    IDUNOX_API_URL: apiUrl,
    IDUNOX_API_KEY: KEY,
    REDIS_URL: process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379",
    POLLER_KEY_PREFIX: prefix,
    POLLER_MIN_INTERVAL_MS: "100",
    POLLER_MAX_INTERVAL_MS: "300",
    POLLER_REQUEST_TIMEOUT_MS: "1000",
    POLLER_RETRIES: "0",
    POLLER_INTAKE_INTERVAL_MS: "20",
    POLLER_IDLE_WAKE_MS: "50",
    POLLER_HTTP_PORT: "0",
    LOG_LEVEL: "silent",
    ...extra,
  });
}

async function streamEvents(redis: Redis, prefix: string): Promise<AnyCloudEvent[]> {
  return (await readAll(redis, `${prefix}events`)).map((e) => e.event);
}

describe("hostile pending-set members", () => {
  let redis: Redis;
  let prefix: string;
  let api: Api;
  let daemon: Daemon;

  beforeAll(async () => {
    redis = redisClient();
    prefix = testPrefix();
    api = await startApi();
    daemon = await startDaemon(daemonEnv(api.url, prefix));
  });

  afterAll(async () => {
    await daemon?.stop();
    await api?.close();
    await cleanPrefix(redis, prefix);
    redis.disconnect();
  });

  const uuid = fc.uuid({ version: 4 });
  const member = fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.string({ unit: "grapheme", maxLength: 40 }),
    fc.constantFrom(
      "",
      "../",
      "../../etc/passwd",
      "%2e%2e%2f",
      "?x=",
      "#",
      "\r\n",
      "a\r\nX-Api-Key: stolen",
      "\u0000",
      "/v1/jobs/",
      "http://127.0.0.1:1/",
      "x".repeat(100_000),
    ),
    uuid,
    uuid.map((u) => u.toUpperCase()),
    uuid.map((u) => ` ${u} `),
    uuid.map((u) => `${u}\n`),
    uuid.map((u) => `${u.slice(0, 35)}/`),
    uuid.map((u) => `../${u}`),
    uuid.map((u) => `${u}?x=`),
    uuid.map((u) => `${u}#`),
    uuid.map((u) => `${u}%2f..`),
  );

  it("only ever requests /v1/jobs/<lowercase uuid>; rejects the rest, tracks every uuid", async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(member, { minLength: 1, maxLength: 8 }), async (members) => {
        runs++;
        const before = (await redis.xlen(`${prefix}events`)) as number;
        await redis.sadd(`${prefix}pending`, ...members);
        await waitFor(async () => (await redis.scard(`${prefix}pending`)) === 0, {
          timeoutMs: 15_000,
          what: "the pending set to drain",
        });
        const fresh = (await streamEvents(redis, prefix)).slice(before);
        const rejected = new Set(await redis.smembers(`${prefix}rejected`));
        for (const m of members) {
          if (m.length === 36 && UUID_ANY_CASE.test(m)) {
            const id = m.toLowerCase();
            expect(await redis.hexists(`${prefix}state`, id)).toBe(1);
            expect(rejected.has(m)).toBe(false);
          } else {
            expect(rejected.has(m)).toBe(true);
            expect(
              fresh.some((e) => e.type === "idunox.job.rejected" && e.subject === m),
              `rejected event for ${JSON.stringify(m.slice(0, 40))}`,
            ).toBe(true);
          }
        }
        for (const r of api.requests) {
          expect(r.path).toMatch(JOB_PATH);
          expect(r.apiKey).toBe(KEY);
        }
      }),
      { numRuns: 30, seed: 20260420, endOnFailure: true },
    );
    expect(runs).toBe(30);
    // Every uuid that was requested is one a producer wrote, in lowercase.
    const all = await streamEvents(redis, prefix);
    const tracked = new Set(
      all.filter((e) => e.type === "idunox.job.status_changed").map((e) => e.subject),
    );
    for (const r of api.requests) expect(tracked.has(r.path.slice("/v1/jobs/".length))).toBe(true);
    // A member added again after its rejection is rejected again, as the next event of the same
    // subject; everything else is checked by the exactly-once rules.
    const jobEvents = all.filter((e) => e.type !== "idunox.job.rejected");
    expect(checkExactlyOnce({ events: jobEvents, finals: new Map() }).problems).toEqual([]);
    const rejections = all.filter((e) => e.type === "idunox.job.rejected");
    expect(new Set(rejections.map((e) => e.id)).size).toBe(rejections.length);
    const seqs = new Map<string, number[]>();
    for (const e of rejections)
      seqs.set(e.subject, [...(seqs.get(e.subject) ?? []), Number(e.sequence)]);
    for (const list of seqs.values()) expect(list).toEqual(list.map((_, i) => i + 1));
  }, 90_000);

  it("drains a uuid written in two different cases", async () => {
    const id = randomUUID();
    const mixed = `${id.slice(0, 18).toUpperCase()}${id.slice(18)}`;
    await redis.sadd(`${prefix}pending`, id.toUpperCase(), mixed);
    await waitFor(async () => (await redis.hexists(`${prefix}state`, id)) === 1, {
      what: "the job to be polled",
    });
    // Both spellings name one job; once it is final, neither may stay pending.
    await waitFor(async () => (await redis.scard(`${prefix}pending`)) === 0, {
      timeoutMs: 5_000,
      what: `both spellings of ${id} to leave the pending set`,
    });
    const events = (await streamEvents(redis, prefix)).filter((e) => e.subject === id);
    expect(events.map((e) => e.type)).toEqual(["idunox.job.status_changed"]);
  }, 20_000);
});

describe("hostile responses", () => {
  it("turns each into an invalid poll without a transition, and never follows a redirect", async () => {
    const redis = redisClient();
    const prefix = testPrefix();
    const api = await startApi();
    const elsewhere: Recorded[] = [];
    const other = await listen((req, res) => {
      const key = req.headers["x-api-key"];
      elsewhere.push({ path: req.url ?? "", apiKey: typeof key === "string" ? key : undefined });
      res.writeHead(200, { "content-type": "application/json" }).end(succeeded(randomUUID()));
    });
    const maxBodyBytes = 4096;
    const huge = (id: string) =>
      JSON.stringify({ ...JSON.parse(succeeded(id)), padding: "x".repeat(maxBodyBytes * 4) });
    const nested = (id: string) =>
      succeeded(id).replace(
        '"errorDetail":null',
        `"errorDetail":${"[".repeat(1500)}${"]".repeat(1500)}`,
      );
    const json = { "content-type": "application/json" };
    const cases: Record<
      string,
      { reason: RegExp; answer: (res: ServerResponse, id: string) => void }
    > = {
      "huge body with content-length": {
        reason: /too large/,
        answer: (res, id) => res.writeHead(200, json).end(huge(id)),
      },
      "huge chunked body": {
        reason: /too large/,
        answer: (res, id) => {
          res.writeHead(200, json);
          const text = huge(id);
          for (let i = 0; i < text.length; i += 1000) res.write(text.slice(i, i + 1000));
          res.end();
        },
      },
      "deeply nested errorDetail": {
        reason: /nested/,
        answer: (res, id) => res.writeHead(200, json).end(nested(id)),
      },
      "text/html": {
        reason: /content type/,
        answer: (res, id) => res.writeHead(200, { "content-type": "text/html" }).end(succeeded(id)),
      },
      "text/plain with a JSON body": {
        reason: /content type/,
        answer: (res, id) =>
          res.writeHead(200, { "content-type": "text/plain" }).end(succeeded(id)),
      },
      "no content type": {
        reason: /content type/,
        answer: (res, id) => {
          res.removeHeader("content-type");
          res.writeHead(200).end(succeeded(id));
        },
      },
      "json for another job": {
        reason: /mismatch/,
        answer: (res) => res.writeHead(200, json).end(succeeded(randomUUID())),
      },
      "302 to another origin": {
        reason: /redirect/,
        answer: (res, id) => res.writeHead(302, { location: `${other.url}/v1/jobs/${id}` }).end(),
      },
      "307 to another origin": {
        reason: /redirect/,
        answer: (res, id) => res.writeHead(307, { location: `${other.url}/v1/jobs/${id}` }).end(),
      },
      "308 to another origin": {
        reason: /redirect/,
        answer: (res) => res.writeHead(308, { location: `${other.url}/steal` }).end(),
      },
      "304 not modified": {
        reason: /http 304/,
        answer: (res) => res.writeHead(304, json).end(),
      },
      "204 no content": {
        reason: /http 204/,
        answer: (res) => res.writeHead(204, json).end(),
      },
      "103 early hints, then 204": {
        reason: /http 204/,
        answer: (res) => {
          res.writeEarlyHints({ link: "</x>; rel=preload" });
          res.writeHead(204).end();
        },
      },
      "202 with a valid body": {
        reason: /http 202/,
        answer: (res, id) => res.writeHead(202, json).end(succeeded(id)),
      },
      "200 with an empty body": {
        reason: /json/,
        answer: (res) => res.writeHead(200, json).end(),
      },
    };
    const byId = new Map<string, string>();
    for (const [name, c] of Object.entries(cases)) {
      const id = randomUUID();
      byId.set(id, name);
      api.handlers.set(id, c.answer);
    }
    const daemon = await startDaemon(
      daemonEnv(api.url, prefix, {
        POLLER_MAX_BODY_BYTES: String(maxBodyBytes),
        POLLER_FAILURE_ALERT_AFTER: "1",
      }),
    );
    try {
      await redis.sadd(`${prefix}pending`, ...byId.keys());
      // FAILURE_ALERT_AFTER=1: the first invalid poll of each job shows up as its poll_failed.
      await waitFor(
        async () => {
          const failed = new Set((await streamEvents(redis, prefix)).map((e) => e.subject));
          return [...byId.keys()].every((id) => failed.has(id));
        },
        { timeoutMs: 20_000, what: "one invalid poll of every hostile job" },
      );
      const events = await streamEvents(redis, prefix);
      for (const [id, name] of byId) {
        const mine = events.filter((e) => e.subject === id);
        expect(
          mine.map((e) => e.type),
          name,
        ).toEqual(["idunox.job.poll_failed"]);
        const first = mine[0];
        if (first?.type !== "idunox.job.poll_failed") throw new Error(name);
        expect(first.data.reason, name).toMatch(cases[name]?.reason ?? /^$/);
      }
      expect(daemon.readiness().ready).toBe(true);

      // The API heals: every job finishes, so nothing above wedged the daemon.
      api.handlers.clear();
      await waitFor(async () => (await redis.scard(`${prefix}pending`)) === 0, {
        timeoutMs: 20_000,
        what: "every job to finish once the API answers well",
      });
      const report = checkExactlyOnce({
        events: await streamEvents(redis, prefix),
        finals: new Map([...byId.keys()].map((id) => [id, "succeeded" as const])),
      });
      expect(report.problems).toEqual([]);
      expect(elsewhere).toEqual([]);
      for (const r of api.requests) expect(r.path).toMatch(JOB_PATH);
    } finally {
      await daemon.stop();
      await api.close();
      await other.close();
      await cleanPrefix(redis, prefix);
      redis.disconnect();
    }
  }, 60_000);
});
