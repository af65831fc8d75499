import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, pingReply } from "../lib/net.js";

/**
 * A throwaway `redis-server` for the demo on a machine without Redis: a free loopback port, a
 * temporary directory, no persistence. It runs in its own process group, so the Ctrl-C a
 * terminal sends to the demo does not stop it before the demo has cleaned up; the demo stops
 * it, and removes the directory, on every way out it controls.
 */
export interface PrivateRedis {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  readonly pid: number;
  /** Stops the server (SIGTERM, then SIGKILL) and removes its directory; safe to call twice. */
  stop(): Promise<void>;
  /** The same, synchronously and at once, for a process about to exit. */
  killNow(): void;
}

/** redis-server is not installed (not on PATH). */
export class RedisServerMissingError extends Error {
  readonly code = "REDIS_SERVER_MISSING";
}

const START_TIMEOUT_MS = 10_000;

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(tmpdir(), "idunox-demo-redis-"));
  try {
    // Another process may take the free port between the check and the bind: try a few.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const started = await startOn(port, dir);
      if (started !== null) return started;
      if (attempt >= 3) throw new Error("redis-server did not start (see its output above)");
    }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function startOn(port: number, dir: string): Promise<PrivateRedis | null> {
  const child = spawn(
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "no",
      "--daemonize",
      "no",
      "--loglevel",
      "warning",
    ],
    { stdio: ["ignore", "ignore", "pipe"], detached: true },
  );
  let output = "";
  child.stderr?.setEncoding("utf8").on("data", (c: string) => {
    output = (output + c).slice(-2000);
  });
  // Not events.once: it would reject on the spawn 'error' (ENOENT), which is handled below.
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const spawned = await new Promise<Error | null>((resolve) => {
    child.once("spawn", () => resolve(null));
    child.once("error", (err) => resolve(err));
  });
  if (spawned !== null) {
    if ((spawned as NodeJS.ErrnoException).code === "ENOENT") {
      throw new RedisServerMissingError("redis-server is not installed");
    }
    throw spawned;
  }
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
    if ((await pingReply("127.0.0.1", port, 500)).startsWith("+PONG")) {
      return running(child, port, dir, exited);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill("SIGKILL");
  await exited;
  if (output !== "") process.stderr.write(output);
  return null;
}

function running(
  child: ChildProcess,
  port: number,
  dir: string,
  exited: Promise<void>,
): PrivateRedis {
  let stopped: Promise<void> | null = null;
  const killNow = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    process.off("exit", killNow);
  };
  // A demo that dies of an exception still exits through here.
  process.on("exit", killNow);
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    pid: child.pid ?? -1,
    killNow,
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
          await exited;
          clearTimeout(timer);
        }
        killNow();
      })();
      return stopped;
    },
  };
}
