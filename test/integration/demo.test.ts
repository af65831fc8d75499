import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEMO_SCENARIOS } from "../../src/cli/demo-jobs.js";
import { type CliProcess, runCli, runCliToEnd } from "../helpers/processes.js";
import { freePort, type RedisServer, startRedisServer } from "../helpers/redis-server.js";

/**
 * The demo on a machine without Redis. The machine's own Redis on 6379 is never touched: the
 * demo's default address is pointed at a closed port (DEMO_DEFAULT_REDIS_URL, REDIS_URL unset).
 */

const EVENT_KINDS = [
  "status_changed",
  "sla_breached",
  "dead_lettered",
  "poll_failed",
  "not_found",
  "rejected",
];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pid and dir of the private redis-server, from the demo's line that announces it. */
async function privateServer(p: CliProcess): Promise<{ pid: number; dir: string }> {
  const line = await p.waitForLine(/started a private redis-server/);
  const m = /\(pid (\d+), dir (\S+), no persistence\)/.exec(line);
  expect(m, line).not.toBeNull();
  return { pid: Number(m?.[1]), dir: String(m?.[2]) };
}

async function closedDefault(): Promise<Record<string, string | undefined>> {
  return {
    REDIS_URL: undefined,
    DEMO_DEFAULT_REDIS_URL: `redis://127.0.0.1:${await freePort()}`,
  };
}

describe("demo without a Redis", () => {
  it("starts its own redis-server, shows every kind of event, and leaves nothing behind", async () => {
    const p = runCli(["demo"], await closedDefault());
    try {
      const own = await privateServer(p);
      expect(alive(own.pid)).toBe(true);
      expect(existsSync(own.dir)).toBe(true);
      expect(await p.exited).toBe(0);
      const out = p.stdout();
      const summary = out.slice(out.indexOf("\ndemo: 12/12 jobs done"));
      expect(summary.length, out.slice(-3000)).toBeGreaterThan(50);
      const byType = /events by type: (.*)$/m.exec(summary)?.[1] ?? "";
      for (const kind of EVENT_KINDS) expect(byType).toMatch(new RegExp(`\\b${kind}=\\d+`));
      // One line per scenario in the summary, each shown.
      for (const scenario of DEMO_SCENARIOS) {
        expect(summary).toMatch(new RegExp(`^ {2}ok {3}${escapeRegExp(scenario.name)} `, "m"));
      }
      expect(summary).toMatch(/^ {2}ok {3}bad members /m);
      expect(summary).not.toContain("MISS");
      expect(summary).toContain("idunox-poller tail");
      expect(summary).toContain("idunox-poller status");
      expect(summary).toContain("docs/consumers.md");
      expect(out).toContain(`stopped the private redis-server and removed ${own.dir}`);
      expect(alive(own.pid)).toBe(false);
      expect(existsSync(own.dir)).toBe(false);
      expect(p.stderr()).not.toMatch(/^\s+at /m);
      expect(p.stderr()).not.toContain("Unhandled error event");
      expect(p.stderr()).not.toContain("MaxListenersExceededWarning");
    } finally {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    }
  });

  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    it(`stops its redis-server and removes the dir on ${signal}`, async () => {
      const p = runCli(["demo"], await closedDefault());
      try {
        const own = await privateServer(p);
        await p.waitForLine(/ status_changed /);
        p.child.kill(signal);
        expect(await p.exited).toBe(0);
        expect(p.stdout()).toContain("(interrupted)");
        expect(alive(own.pid)).toBe(false);
        expect(existsSync(own.dir)).toBe(false);
        expect(p.stderr()).not.toMatch(/^\s+at /m);
      } finally {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
      }
    });
  }

  it("without redis-server on PATH, says what it needs in one line and exits 69", async () => {
    const emptyBin = mkdtempSync(join(tmpdir(), "idunox-empty-path-"));
    try {
      const r = await runCliToEnd(["demo"], { ...(await closedDefault()), PATH: emptyBin });
      expect(r.code, r.stderr).toBe(69);
      const lines = r.stderr.trimEnd().split("\n");
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^idunox-poller demo: the demo needs Redis: nothing answers at /);
      expect(lines[0]).toContain("apt-get install redis-server");
      expect(lines[0]).toContain("docker compose up redis");
      expect(r.stderr).not.toMatch(/^\s+at /m);
      expect(r.stdout).toBe("");
    } finally {
      rmSync(emptyBin, { recursive: true, force: true });
    }
  });
});

describe("demo with a Redis it cannot use", () => {
  let secured: RedisServer;

  beforeAll(async () => {
    secured = await startRedisServer({ args: ["--requirepass", "demo-test-pw"] });
  });

  afterAll(async () => {
    await secured?.stop();
  });

  it("REDIS_URL without the password: one line, exit 1, no private server", async () => {
    const r = await runCliToEnd(["demo"], { REDIS_URL: secured.url });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr.trimEnd()).toBe(
      `idunox-poller demo: Redis at ${secured.url} requires a password (NOAUTH): put it in the URL, e.g. redis://:PASSWORD@host:port`,
    );
    expect(r.stdout).not.toContain("private redis-server");
  });

  it("a default address that answers but refuses: says so rather than starting another", async () => {
    const r = await runCliToEnd(["demo"], {
      REDIS_URL: undefined,
      DEMO_DEFAULT_REDIS_URL: secured.url,
    });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr.trimEnd()).toMatch(
      /requires a password \(NOAUTH\).*\(set REDIS_URL to use it\)$/,
    );
    expect(r.stdout).not.toContain("private redis-server");
  });
});

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
