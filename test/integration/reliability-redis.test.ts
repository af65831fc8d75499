import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobStatus } from "../../src/api/schema.js";
import { createRng } from "../../src/sim/random.js";
import { type Simulator, startSimulator } from "../../src/sim/simulator.js";
import { keysFor } from "../../src/store/keys.js";
import { checkExactlyOnce, describeReport } from "../helpers/invariants.js";
import type { CliProcess } from "../helpers/processes.js";
import { testPrefix, waitFor } from "../helpers/redis.js";
import { freePort, type RedisServer, startRedisServer } from "../helpers/redis-server.js";
import {
  allEvents,
  daemonEnv,
  finalsOf,
  killHard,
  plannedJobs,
  startDaemonProcess,
  stopGracefully,
  submit,
  waitForFinals,
} from "../helpers/reliability.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";

/**
 * Redis misbehaving under a running daemon: killed and restarted (AOF keeps every acknowledged
 * write, but the script cache is gone), slow, connections killed or black-holed, scripts
 * flushed. The daemon must stay up, say so on /readyz while Redis is gone, recover by itself,
 * and lose or duplicate nothing. It reaches its own redis-server through a TCP proxy, so the
 * network between them can be broken too.
 */
const SEED = Number(process.env.RELIABILITY_SEED ?? 4_242_017);
const API_KEY = "redis-faults-key";
const BATCH = 30;

describe("reliability: Redis faults", () => {
  const rng = createRng(SEED);
  const prefix = testPrefix();
  const keys = keysFor(prefix);
  const finals = new Map<string, JobStatus>();
  let server: RedisServer;
  let proxy: TcpProxy;
  let sim: Simulator;
  let redis: Redis;
  let daemon: CliProcess;
  let readyzUrl: string;

  const readyz = async (): Promise<number> => {
    try {
      const res = await fetch(readyzUrl, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      return res.status;
    } catch {
      return 0;
    }
  };
  const waitReady = (status: number, what: string) =>
    waitFor(async () => (await readyz()) === status, { timeoutMs: 15_000, intervalMs: 50, what });

  /**
   * Starts a batch of jobs, waits until the daemon is working on it, injects the fault, then
   * waits for every job so far to finish and checks the whole stream.
   */
  const underFault = async (name: string, inject: () => Promise<string>) => {
    const batch = plannedJobs(rng, BATCH, 0.2);
    for (const [id, status] of finalsOf(batch)) finals.set(id, status);
    const before = await redis.xlen(keys.events);
    await submit(sim, redis, keys.pending, batch);
    await waitFor(async () => (await redis.xlen(keys.events)) > before, {
      what: "the batch in progress",
    });
    const detail = await inject();
    await waitForFinals(redis, keys.events, finals, 30_000);
    const report = checkExactlyOnce({
      events: await allEvents(redis, keys.events),
      finals,
      pending: await redis.smembers(keys.pending),
      alerts: await allEvents(redis, keys.alerts),
    });
    console.log(
      `[reliability-redis] ${name}: ${detail}; jobs so far=${finals.size} ` +
        `redis starts=${server.starts} proxy connections accepted=${proxy.accepted}; ${describeReport(report)}`,
    );
    expect(report.problems).toEqual([]);
    expect(report.finished).toBe(finals.size);
    expect(await redis.scard(keys.pending)).toBe(0);
    expect(daemon.child.exitCode).toBeNull();
    expect(daemon.child.signalCode).toBeNull();
  };

  beforeAll(async () => {
    server = await startRedisServer();
    proxy = await startTcpProxy({ targetPort: server.port });
    sim = await startSimulator({ apiKey: API_KEY, seed: SEED });
    // The test's own client goes straight to Redis and keeps retrying through restarts.
    redis = new Redis(server.url, {
      maxRetriesPerRequest: 50,
      retryStrategy: () => 50,
    });
    // Reconnection errors are expected here: Redis is killed on purpose.
    redis.on("error", () => {});
    const httpPort = await freePort();
    readyzUrl = `http://127.0.0.1:${httpPort}/readyz`;
    daemon = await startDaemonProcess(
      daemonEnv({
        apiUrl: sim.url,
        apiKey: API_KEY,
        redisUrl: `redis://127.0.0.1:${proxy.port}`,
        prefix,
        replicaId: "redis-faults",
        httpPort,
      }),
    );
    await waitReady(200, "ready at start");
  });

  afterAll(async () => {
    if (daemon !== undefined) await killHard(daemon);
    redis?.disconnect();
    await proxy?.close();
    await sim?.close();
    await server?.stop();
  });

  it("survives kill -9 of Redis and restarts, twice: 503 while down, no loss, scripts reloaded", async () => {
    await underFault("kill -9 redis x2", async () => {
      const notes: string[] = [];
      for (let round = 1; round <= 2; round++) {
        const idsBefore = (await allEvents(redis, keys.events)).map((e) => e.id);
        await server.kill("SIGKILL");
        await waitReady(503, "503 while Redis is down");
        // A restarted Redis has the AOF's data but an empty script cache: NOSCRIPT next.
        await server.restart();
        await waitReady(200, "ready again after the restart");
        const idsAfter = new Set((await allEvents(redis, keys.events)).map((e) => e.id));
        const lost = idsBefore.filter((id) => !idsAfter.has(id));
        expect(lost).toEqual([]);
        notes.push(`round ${round}: ${idsBefore.length} events kept`);
      }
      return notes.join(", ");
    });
  });

  it("recovers from SCRIPT FLUSH mid-run", async () => {
    await underFault("SCRIPT FLUSH", async () => {
      await redis.script("FLUSH");
      return "flushed once";
    });
  });

  it("reconnects after CLIENT KILL TYPE normal", async () => {
    await underFault("CLIENT KILL TYPE normal", async () => {
      const killed = await redis.client("KILL", "TYPE", "normal");
      return `${killed} connections killed`;
    });
  });

  it("waits out a slow Redis (CLIENT PAUSE 2000 ALL, then DEBUG SLEEP 1)", async () => {
    await underFault("CLIENT PAUSE + DEBUG SLEEP", async () => {
      await redis.client("PAUSE", "2000", "ALL");
      const before = await redis.xlen(keys.events);
      await waitFor(async () => (await redis.xlen(keys.events)) > before, {
        what: "progress after the pause",
      });
      await redis.call("DEBUG", "SLEEP", "1");
      return "paused 2000 ms, slept 1 s";
    });
  });

  it("reconnects when the network cuts every connection", async () => {
    await underFault("proxy cut", async () => {
      const accepted = proxy.accepted;
      proxy.cut();
      await waitFor(() => proxy.accepted > accepted && proxy.connections > 0, {
        what: "the daemon reconnecting",
      });
      return `reconnected (${proxy.accepted - accepted} new connections)`;
    });
  });

  it("resumes after a black hole, healed or ended by a cut", async () => {
    await underFault("proxy blackhole", async () => {
      // Healed: the held commands go through late, in order.
      let sent = proxy.bytesRead.fromClients;
      proxy.blackhole(true);
      try {
        await waitFor(() => proxy.bytesRead.fromClients > sent, {
          what: "commands sent into the black hole",
        });
      } finally {
        proxy.blackhole(false);
      }
      const before = await redis.xlen(keys.events);
      await waitFor(async () => (await redis.xlen(keys.events)) > before, {
        what: "progress after the black hole",
      });
      // Ended by a cut: the held commands are lost with the connection and sent again.
      sent = proxy.bytesRead.fromClients;
      proxy.blackhole(true);
      try {
        await waitFor(() => proxy.bytesRead.fromClients > sent, {
          what: "commands sent into the black hole",
        });
        proxy.cut();
      } finally {
        proxy.blackhole(false);
      }
      return "held then released; held then cut";
    });
  });

  it("reconnects after refused connections, reporting 503 meanwhile", async () => {
    await underFault("proxy refuse", async () => {
      const accepted = proxy.accepted;
      proxy.refuse(true);
      try {
        proxy.cut();
        await waitFor(() => proxy.accepted >= accepted + 3, { what: "reconnection attempts" });
        await waitReady(503, "503 while Redis cannot be reached");
      } finally {
        proxy.refuse(false);
      }
      await waitReady(200, "ready once connections are accepted again");
      return `${proxy.accepted - accepted} connections refused or accepted`;
    });
  });

  // The contract: /readyz answers 200 "only while Redis answers". A connection that stays open
  // but never answers (a partition the TCP stack has not noticed yet) must count as down too.
  it("reports 503 while Redis is black-holed and recovers when it heals", async () => {
    await underFault("proxy blackhole readiness", async () => {
      proxy.blackhole(true);
      const seen: number[] = [];
      try {
        await waitFor(
          async () => {
            seen.push(await readyz());
            return seen.at(-1) === 503;
          },
          { timeoutMs: 10_000, intervalMs: 100, what: "503 while every Redis command hangs" },
        ).catch((err: unknown) => {
          // Seen once under a loaded CI run and never reproduced: keep what a rerun needs.
          const statuses = [...new Set(seen)].join(", ");
          const tail = daemon.lines.slice(-15).join("\n");
          throw new Error(`${(err as Error).message}; /readyz gave ${statuses}; daemon:\n${tail}`);
        });
      } finally {
        proxy.blackhole(false);
      }
      await waitReady(200, "ready once the black hole heals");
      return "503 seen while black-holed";
    });
  });

  it("still stops cleanly after all that", async () => {
    expect(await stopGracefully(daemon)).toBe(0);
  });
});
