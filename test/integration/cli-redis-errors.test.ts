import { once } from "node:events";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, runCliToEnd } from "../helpers/processes.js";
import { TEST_REDIS_URL, waitFor } from "../helpers/redis.js";
import { freePort, type RedisServer, startRedisServer } from "../helpers/redis-server.js";

/**
 * Every command, pointed at a Redis it cannot use, says so in one line naming the address and
 * the problem: no stack trace, no ioredis "Unhandled error event", a bounded wait.
 */

const PASSWORD = "s3cret-for-tests";
const JOB_ID = "0b7e9a52-3f0c-4d7e-9a1b-6c2d8e4f1a00";

/** Accepts connections and never answers: a black-holed path to Redis. */
async function startBlackHole(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** What every failing command must look like. */
function expectOneCleanLine(r: { code: number | string; stdout: string; stderr: string }) {
  expect(r.code, r.stderr).toBe(1);
  expect(r.stdout).toBe("");
  const lines = r.stderr.trimEnd().split("\n");
  expect(lines, r.stderr).toHaveLength(1);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  expect(r.stderr).not.toContain("Unhandled error event");
  return lines[0] ?? "";
}

const COMMANDS: ReadonlyArray<readonly string[]> = [["status"], ["track", JOB_ID], ["tail"]];

describe("status, track and tail when Redis cannot be used", () => {
  let closedPort: number;
  let secured: RedisServer;
  let hole: { port: number; close(): Promise<void> };

  beforeAll(async () => {
    closedPort = await freePort();
    secured = await startRedisServer({ args: ["--requirepass", PASSWORD] });
    hole = await startBlackHole();
  });

  afterAll(async () => {
    await secured?.stop();
    await hole?.close();
  });

  it("a closed port: cannot reach Redis (connection refused)", async () => {
    const url = `redis://127.0.0.1:${closedPort}`;
    const results = await Promise.all(
      COMMANDS.map((args) => runCliToEnd([...args], { REDIS_URL: url })),
    );
    for (const r of results) {
      const line = expectOneCleanLine(r);
      expect(line).toBe(`idunox-poller: cannot reach Redis at ${url} (connection refused)`);
    }
  });

  it("a server that needs a password: NOAUTH without one, WRONGPASS with a wrong one, masked", async () => {
    const port = secured.port;
    const results = await Promise.all(
      COMMANDS.map((args) => runCliToEnd([...args], { REDIS_URL: `redis://127.0.0.1:${port}` })),
    );
    for (const r of results) {
      const line = expectOneCleanLine(r);
      expect(line).toMatch(
        new RegExp(
          `^idunox-poller: Redis at redis://127\\.0\\.0\\.1:${port} requires a password \\(NOAUTH\\)`,
        ),
      );
    }
    const wrong = await runCliToEnd([
      "status",
      "--redis-url",
      `redis://:wrong-pw@127.0.0.1:${port}`,
    ]);
    const line = expectOneCleanLine(wrong);
    expect(line).toBe(
      `idunox-poller: Redis at redis://:[redacted]@127.0.0.1:${port} refused the user or password in the URL (WRONGPASS)`,
    );
    expect(wrong.stderr).not.toContain("wrong-pw");
    // And the right password works, so the lines above were about the password.
    const ok = await runCliToEnd(["status"], {
      REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${port}`,
    });
    expect(ok.code, ok.stderr).toBe(0);
  });

  it("a black hole: no answer within the bounded wait, never a hang", async () => {
    const url = `redis://127.0.0.1:${hole.port}`;
    const results = await Promise.all(
      COMMANDS.map((args) => runCliToEnd([...args], { REDIS_URL: url })),
    );
    for (const r of results) {
      expect(expectOneCleanLine(r)).toBe(
        `idunox-poller: cannot reach Redis at ${url} (no answer within 3 s)`,
      );
    }
  });

  it("a TLS URL against a plain server, and a Cluster URL against a standalone one", async () => {
    const { hostname: host, port } = new URL(TEST_REDIS_URL);
    const tls = expectOneCleanLine(
      await runCliToEnd(["status"], { REDIS_URL: `rediss://${host}:${port}` }),
    );
    expect(tls).toBe(
      `idunox-poller: TLS mismatch at rediss://${host}:${port}: the server speaks plain Redis, not TLS (use redis://)`,
    );
    const cluster = expectOneCleanLine(
      await runCliToEnd(["status"], { REDIS_URL: `redis+cluster://${host}:${port}` }),
    );
    expect(cluster).toMatch(
      /standalone Redis \(cluster support disabled\): use redis:\/\/ instead$/,
    );
  });
});

describe("run when Redis cannot be used", () => {
  const baseEnv = (redisUrl: string, httpPort: number) => ({
    REDIS_URL: redisUrl,
    IDUNOX_API_KEY: "test-key-not-used",
    IDUNOX_API_URL: "http://127.0.0.1:9",
    POLLER_HTTP_PORT: String(httpPort),
    POLLER_HTTP_HOST: "127.0.0.1",
    POLLER_SHUTDOWN_TIMEOUT_MS: "3000",
  });

  async function readyz(port: number): Promise<{ status: number; body: unknown }> {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`);
    return { status: res.status, body: await res.json() };
  }

  it("logs one error naming the address, stays up and not ready, and logs again when Redis answers", async () => {
    const redisPort = await freePort();
    const httpPort = await freePort();
    const url = `redis://:${PASSWORD}@127.0.0.1:${redisPort}`;
    const masked = `redis://:[redacted]@127.0.0.1:${redisPort}`;
    const p = runCli(["run"], { ...baseEnv(url, httpPort), LOG_LEVEL: "debug" });
    let server: RedisServer | null = null;
    try {
      const problem = `cannot reach Redis at ${masked} (connection refused)`;
      const line = JSON.parse(await p.waitForLine(/"level":50/)) as Record<string, unknown>;
      expect(line).toMatchObject({ msg: problem, redis: masked, problem: "refused" });
      expect(String(line["tried"])).toContain(`127.0.0.1:${redisPort}`);
      const notReady = await waitFor(async () => {
        const r = await readyz(httpPort).catch(() => null);
        return r?.status === 503 ? r : undefined;
      });
      expect(notReady.body).toMatchObject({
        ready: false,
        checks: { redis: { ok: false, reason: problem } },
      });
      // Reconnection attempts go on, each at debug level only.
      await waitFor(() => p.lines.filter((l) => l.includes("redis connection error")).length >= 3, {
        what: "three reconnection attempts",
      });
      expect(p.lines.filter((l) => l.includes('"level":50'))).toHaveLength(1);
      expect((await readyz(httpPort)).status).toBe(503);

      server = await startRedisServer({ port: redisPort, args: ["--requirepass", PASSWORD] });
      await p.waitForLine(/"msg":"Redis answers"/);
      await waitFor(async () => (await readyz(httpPort)).status === 200, { what: "ready" });
      p.child.kill("SIGTERM");
      expect(await p.exited).toBe(0);
      const all = p.lines.join("\n");
      expect(all).not.toContain("Unhandled error event");
      expect(all).not.toContain(PASSWORD);
      expect(p.lines.filter((l) => l.includes('"level":50'))).toHaveLength(1);
    } finally {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
      await server?.stop();
    }
  });

  it("says why in one error line and in /readyz for a server that needs a password and for a black hole", async () => {
    const secured = await startRedisServer({ args: ["--requirepass", PASSWORD] });
    const hole = await startBlackHole();
    const cases = [
      {
        url: `redis://127.0.0.1:${secured.port}`,
        problem: new RegExp(
          `^Redis at redis://127\\.0\\.0\\.1:${secured.port} requires a password \\(NOAUTH\\)`,
        ),
      },
      {
        url: `redis://127.0.0.1:${hole.port}`,
        problem: new RegExp(
          `^cannot reach Redis at redis://127\\.0\\.0\\.1:${hole.port} \\(no answer`,
        ),
      },
    ];
    const procs = await Promise.all(
      cases.map(async (c) => ({ ...c, httpPort: await freePort() })),
    ).then((cs) => cs.map((c) => ({ ...c, p: runCli(["run"], baseEnv(c.url, c.httpPort)) })));
    try {
      for (const c of procs) {
        // The black hole is seen only when the ready check times out (5 s command timeout).
        const line = JSON.parse(await c.p.waitForLine(/"level":50/, 30_000)) as { msg: string };
        expect(line.msg).toMatch(c.problem);
        const r = await readyz(c.httpPort);
        expect(r.status).toBe(503);
        expect((r.body as { checks: { redis: { reason: string } } }).checks.redis.reason).toMatch(
          c.problem,
        );
      }
      for (const c of procs) c.p.child.kill("SIGTERM");
      for (const c of procs) {
        expect(await c.p.exited).toBe(0);
        expect(c.p.lines.join("\n")).not.toContain("Unhandled error event");
      }
    } finally {
      for (const c of procs) {
        if (c.p.child.exitCode === null && c.p.child.signalCode === null) c.p.child.kill("SIGKILL");
      }
      await secured.stop();
      await hole.close();
    }
  });
});
