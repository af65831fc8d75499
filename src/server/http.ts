import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { pino } from "pino";
import type { Metrics } from "./metrics.js";

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; reason?: string }>;
}

export interface HttpServerHandle {
  /** The port actually bound (the ephemeral one when asked for 0). */
  port: number;
  /** Stops listening and drops open connections; safe to call twice. */
  close(): Promise<void>;
}

const JSON_TYPE = "application/json; charset=utf-8";
const ALLOWED = "GET, HEAD";

/**
 * Serves /healthz, /readyz and /metrics. Port 0 binds an ephemeral port; a caller whose config
 * says 0 ("off") does not call this at all.
 */
export async function startHttpServer(opts: {
  port: number;
  host?: string;
  metrics: Metrics;
  readiness: () => Readiness | Promise<Readiness>;
  logger?: pino.Logger;
  /** /healthz turns 503 when the event loop stalled longer than this; default 5000. */
  maxEventLoopDelayMs?: number;
  /** How often the stall is measured; default 1000. */
  eventLoopSampleMs?: number;
}): Promise<HttpServerHandle> {
  const { metrics, readiness, logger } = opts;
  const maxDelayMs = opts.maxEventLoopDelayMs ?? 5000;

  // The worst stall of the last one or two sampling windows. A blocked loop cannot answer
  // /healthz at all, so the probe sees the stall right after it, while the window still holds it.
  // Node's histogram drops the first interval after reset(), which would hide a stall that starts
  // right after a sample; two monitors reset on alternate samples, so every stall is recorded
  // whole by at least one of them.
  const monitors = [
    monitorEventLoopDelay({ resolution: 20 }),
    monitorEventLoopDelay({ resolution: 20 }),
  ] as const;
  for (const m of monitors) m.enable();
  let turn = 0;
  let lastDelayMs = 0;
  const sampler = setInterval(() => {
    lastDelayMs = Math.max(monitors[0].max, monitors[1].max) / 1e6;
    monitors[turn]?.reset();
    turn = 1 - turn;
  }, opts.eventLoopSampleMs ?? 1000);
  sampler.unref();

  const healthz = (res: ServerResponse) => {
    const eventLoopDelayMs = Math.round(lastDelayMs);
    if (lastDelayMs > maxDelayMs) {
      send(res, 503, JSON_TYPE, json({ status: "event_loop_blocked", eventLoopDelayMs }));
    } else {
      send(res, 200, JSON_TYPE, json({ status: "ok", eventLoopDelayMs }));
    }
  };

  const readyz = async (res: ServerResponse) => {
    let state: Readiness;
    try {
      state = await readiness();
    } catch (err) {
      logger?.error({ err }, "readiness check threw");
      state = {
        ready: false,
        checks: { readiness: { ok: false, reason: "readiness check failed" } },
      };
    }
    send(res, state.ready ? 200 : 503, JSON_TYPE, json(state));
  };

  const metricsText = async (res: ServerResponse) => {
    try {
      const body = await metrics.registry.metrics();
      send(res, 200, metrics.registry.contentType, body);
    } catch (err) {
      logger?.error({ err }, "metrics collection failed");
      send(res, 500, "text/plain; charset=utf-8", "metrics collection failed\n");
    }
  };

  const routes: Record<string, (res: ServerResponse) => void | Promise<void>> = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metricsText,
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    // These endpoints take no body; drain one if a client sent it so the socket can be reused.
    req.resume();
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    const route = routes[path];
    if (route === undefined) {
      send(res, 404, JSON_TYPE, json({ error: "not found" }));
    } else if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", ALLOWED);
      send(res, 405, JSON_TYPE, json({ error: "method not allowed" }));
    } else {
      await route(res);
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger?.error({ err }, "http handler failed");
      if (!res.headersSent) send(res, 500, JSON_TYPE, json({ error: "internal error" }));
      else res.destroy();
    });
  });
  // Probes and scrapers send small requests; a slow or idle client must not hold a socket open.
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  server.keepAliveTimeout = 5_000;

  const stopSampling = () => {
    clearInterval(sampler);
    for (const m of monitors) m.disable();
  };

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port, opts.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    stopSampling();
    throw err;
  }
  server.on("error", (err) => logger?.error({ err }, "http server error"));
  const port = (server.address() as AddressInfo).port;
  logger?.info({ port, host: opts.host ?? null }, "http server listening");

  let closing: Promise<void> | null = null;
  return {
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        stopSampling();
        server.close(() => resolve());
        // Keep-alive connections of a scraper would otherwise hold close() open until they idle.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

function json(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, {
    "Content-Type": contentType,
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
  });
  res.end(body);
}
