import { request } from "node:http";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log/logger.js";
import { type HttpServerHandle, type Readiness, startHttpServer } from "../../src/server/http.js";
import { Metrics, type StoreStats } from "../../src/server/metrics.js";

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(port: number, path: string, method = "GET"): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** Polls `probe` until it returns a value, or fails after the deadline. */
async function waitFor<T>(
  probe: () => Promise<T | undefined>,
  what: string,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** The value of one sample line, e.g. `idunox_poller_tracked_jobs 7`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const STATS: StoreStats = {
  tracked: 7,
  dueBacklog: 3,
  scheduleLagSeconds: 1.5,
  rejected: 2,
  groups: [
    { stream: "events", group: "billing", lag: 12, pending: 4 },
    { stream: "alerts", group: "oncall", lag: null, pending: 0 },
  ],
};

const servers: HttpServerHandle[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(
  over: Partial<Parameters<typeof startHttpServer>[0]> = {},
): Promise<HttpServerHandle> {
  const server = await startHttpServer({
    port: 0,
    host: "127.0.0.1",
    metrics: new Metrics(),
    readiness: () => ({ ready: true, checks: {} }),
    ...over,
  });
  servers.push(server);
  return server;
}

describe("http server", () => {
  it("binds an ephemeral port and answers /healthz", async () => {
    const { port } = await start();
    expect(port).toBeGreaterThan(0);
    const r = await call(port, "/healthz");
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toBe("application/json; charset=utf-8");
    const body = JSON.parse(r.body) as { status: string; eventLoopDelayMs: number };
    expect(body.status).toBe("ok");
    expect(typeof body.eventLoopDelayMs).toBe("number");
  });

  it("reports a blocked event loop on /healthz, then recovers", async () => {
    const { port } = await start({ maxEventLoopDelayMs: 200, eventLoopSampleMs: 1000 });
    // The monitor records delays between its own ticks, so it must be running before the stall.
    await waitFor(async () => {
      const r = await call(port, "/healthz");
      return JSON.parse(r.body).eventLoopDelayMs > 0 ? true : undefined;
    }, "the first event-loop sample");
    const until = performance.now() + 400;
    while (performance.now() < until) {
      // Blocks the event loop on purpose: the stall is what the probe must see.
    }
    const blocked = await waitFor(async () => {
      const r = await call(port, "/healthz");
      return r.status === 503 ? r : undefined;
    }, "a 503 from /healthz");
    expect(JSON.parse(blocked.body)).toMatchObject({ status: "event_loop_blocked" });
    expect(JSON.parse(blocked.body).eventLoopDelayMs).toBeGreaterThan(200);
    await waitFor(
      async () => ((await call(port, "/healthz")).status === 200 ? true : undefined),
      "recovery",
    );
  });

  it("serves readiness and follows it as it flips", async () => {
    let state: Readiness = {
      ready: false,
      checks: { redis: { ok: true }, apiKey: { ok: false, reason: "API answered 401" } },
    };
    const { port } = await start({ readiness: async () => state });

    const notReady = await call(port, "/readyz");
    expect(notReady.status).toBe(503);
    expect(notReady.headers["content-type"]).toBe("application/json; charset=utf-8");
    expect(JSON.parse(notReady.body)).toEqual(state);

    state = { ready: true, checks: { redis: { ok: true }, apiKey: { ok: true } } };
    const ready = await call(port, "/readyz");
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual(state);
  });

  it("answers 503 when the readiness function throws, and logs it", async () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const { port } = await start({
      readiness: () => {
        throw new Error("redis client closed");
      },
      logger: createLogger({ level: "info", destination }),
    });
    const r = await call(port, "/readyz");
    expect(r.status).toBe(503);
    expect(JSON.parse(r.body)).toEqual({
      ready: false,
      checks: { readiness: { ok: false, reason: "readiness check failed" } },
    });
    expect(lines.join("")).toContain("redis client closed");
  });

  it("serves Prometheus text with every metric name", async () => {
    const metrics = new Metrics({ collectStoreStats: async () => STATS });
    metrics.polls.inc({ outcome: "ok" });
    metrics.requests.inc({ outcome: "200" });
    metrics.pollDuration.observe({ outcome: "ok" }, 0.12);
    metrics.redisErrors.inc({ op: "claim" });
    metrics.authOk.set(1);
    metrics.redisUp.set(1);
    metrics.ready.set(1);
    metrics.leasesHeld.set(5);
    metrics.inFlight.set(2);
    metrics.circuitOpen.set(0);
    const { port } = await start({ metrics });

    const r = await call(port, "/metrics");
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toBe(metrics.registry.contentType);
    expect(r.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const name of [
      "idunox_poller_polls_total",
      "idunox_poller_api_requests_total",
      "idunox_poller_poll_duration_seconds_bucket",
      "idunox_poller_events_total",
      "idunox_poller_redis_errors_total",
      "idunox_poller_api_key_accepted",
      "idunox_poller_redis_up",
      "idunox_poller_ready",
      "idunox_poller_leases_held",
      "idunox_poller_requests_in_flight",
      "idunox_poller_api_circuit_open",
      "idunox_poller_process_cpu_seconds_total",
      "idunox_poller_nodejs_eventloop_lag_seconds",
    ]) {
      expect(r.body).toContain(name);
    }
    expect(sample(r.body, 'idunox_poller_polls_total{outcome="ok"}')).toBe(1);
    expect(sample(r.body, 'idunox_poller_polls_total{outcome="lease_lost"}')).toBe(0);
    expect(sample(r.body, 'idunox_poller_events_total{type="dead_lettered"}')).toBe(0);
    expect(sample(r.body, "idunox_poller_leases_held")).toBe(5);
    expect(sample(r.body, "idunox_poller_tracked_jobs")).toBe(7);
    expect(sample(r.body, "idunox_poller_due_backlog")).toBe(3);
    expect(sample(r.body, "idunox_poller_schedule_lag_seconds")).toBe(1.5);
    expect(sample(r.body, "idunox_poller_rejected_members")).toBe(2);
    expect(
      sample(r.body, 'idunox_poller_consumer_group_lag{stream="events",group="billing"}'),
    ).toBe(12);
    expect(
      sample(r.body, 'idunox_poller_consumer_group_pending{stream="events",group="billing"}'),
    ).toBe(4);
    expect(
      sample(r.body, 'idunox_poller_consumer_group_pending{stream="alerts",group="oncall"}'),
    ).toBe(0);
    // An unknown lag is left out rather than reported as 0.
    expect(r.body).not.toContain('consumer_group_lag{stream="alerts"');
    // Every sample line names the poller's own prefix.
    for (const line of r.body.split("\n")) {
      if (line !== "" && !line.startsWith("#"))
        expect(line.startsWith("idunox_poller_")).toBe(true);
    }
  });

  it("reads the loop's leases and requests in flight when scraped", async () => {
    const metrics = new Metrics();
    let state = { leases: 7, inFlight: 3 };
    metrics.readLoopFrom(() => state);
    const { port } = await start({ metrics });
    const first = await call(port, "/metrics");
    expect(sample(first.body, "idunox_poller_leases_held")).toBe(7);
    expect(sample(first.body, "idunox_poller_requests_in_flight")).toBe(3);
    state = { leases: 0, inFlight: 0 };
    const second = await call(port, "/metrics");
    expect(sample(second.body, "idunox_poller_leases_held")).toBe(0);
    expect(sample(second.body, "idunox_poller_requests_in_flight")).toBe(0);
  });

  it("reads the store once per scrape and caches it", async () => {
    let calls = 0;
    const metrics = new Metrics({
      collectStoreStats: async () => {
        calls++;
        return STATS;
      },
      statsCacheMs: 60_000,
    });
    const { port } = await start({ metrics });
    await call(port, "/metrics");
    expect(calls).toBe(1);
    await call(port, "/metrics");
    expect(calls).toBe(1);
  });

  it("keeps /metrics working when the stats collector throws, counting the failure", async () => {
    let fail = false;
    const metrics = new Metrics({
      collectStoreStats: async () => {
        if (fail) throw new Error("ECONNREFUSED");
        return STATS;
      },
      statsCacheMs: 0,
    });
    const { port } = await start({ metrics });
    const first = await call(port, "/metrics");
    expect(sample(first.body, "idunox_poller_store_stats_errors_total")).toBe(0);

    fail = true;
    const second = await call(port, "/metrics");
    expect(second.status).toBe(200);
    expect(sample(second.body, "idunox_poller_store_stats_errors_total")).toBe(1);
    expect(second.body).toContain("idunox_poller_polls_total");
    // The last good values stay, rather than dropping to a misleading 0.
    expect(sample(second.body, "idunox_poller_tracked_jobs")).toBe(7);
  });

  it("does not hang /metrics on a collector that never answers", async () => {
    const metrics = new Metrics({
      collectStoreStats: () => new Promise<StoreStats>(() => {}),
      statsTimeoutMs: 50,
    });
    const { port } = await start({ metrics });
    const r = await call(port, "/metrics");
    expect(r.status).toBe(200);
    expect(sample(r.body, "idunox_poller_store_stats_errors_total")).toBe(1);
  });

  it("leaves out the store gauges when no collector is given", async () => {
    const { port } = await start();
    const r = await call(port, "/metrics");
    expect(r.body).not.toContain("idunox_poller_tracked_jobs");
    expect(r.body).toContain("idunox_poller_polls_total");
  });

  it("answers 404 for unknown paths and 405 for other methods", async () => {
    const { port } = await start();
    const missing = await call(port, "/nope");
    expect(missing.status).toBe(404);
    const post = await call(port, "/metrics", "POST");
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe("GET, HEAD");
    const del = await call(port, "/readyz", "DELETE");
    expect(del.status).toBe(405);
    const head = await call(port, "/healthz", "HEAD");
    expect(head.status).toBe(200);
    expect(head.body).toBe("");
    const withQuery = await call(port, "/healthz?verbose=1");
    expect(withQuery.status).toBe(200);
  });

  it("closes idempotently and stops accepting connections", async () => {
    const server = await start();
    await call(server.port, "/healthz");
    await server.close();
    await server.close();
    await expect(call(server.port, "/healthz")).rejects.toThrow(/ECONNREFUSED/);
  });

  it("rejects when the port is taken", async () => {
    const first = await start();
    await expect(start({ port: first.port })).rejects.toThrow(/EADDRINUSE/);
  });
});
