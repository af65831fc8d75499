import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, pingReply } from "../../src/lib/net.js";

export { freePort };

/**
 * A private `redis-server` for tests that kill, restart and slow down Redis, which the shared
 * one on 6379 must never suffer. Every write is fsynced to the AOF before it is answered, so a
 * SIGKILL loses nothing acknowledged and a restart on the same dir brings all of it back.
 */
export interface RedisServer {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  /** True between a start that answered PING and the process exiting. */
  readonly running: boolean;
  /** How many times the process was started (the first start included). */
  readonly starts: number;
  /** Sends `signal` (default SIGKILL) and waits for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and dir; resolves once it answers PING. */
  restart(): Promise<void>;
  /** Kills the server and removes its dir. Safe to call twice. */
  stop(): Promise<void>;
}

export interface RedisServerOptions {
  /** Default: a free port. */
  port?: number;
  /** More `redis-server` arguments, e.g. ["--maxmemory", "10mb"]. */
  args?: string[];
  /** How long a start may take before it fails; default 15000. */
  startTimeoutMs?: number;
}

/**
 * One PING over a fresh socket; resolves true on +PONG, or -NOAUTH from a server started with
 * --requirepass (it is up, it wants a password), false on anything else (LOADING too).
 */
async function pingOnce(port: number, timeoutMs: number): Promise<boolean> {
  const reply = await pingReply("127.0.0.1", port, timeoutMs);
  return reply.startsWith("+PONG") || reply.startsWith("-NOAUTH");
}

class RedisServerProcess implements RedisServer {
  readonly url: string;
  readonly dir: string;
  starts = 0;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private stopped = false;
  private output = "";
  private readonly onExit = () => this.child?.kill("SIGKILL");

  constructor(
    readonly port: number,
    private readonly opts: RedisServerOptions,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), "idunox-redis-"));
    this.url = `redis://127.0.0.1:${port}`;
    // A crashed test run must not leave a redis-server behind.
    process.once("exit", this.onExit);
  }

  get running(): boolean {
    return this.child !== null;
  }

  async start(): Promise<void> {
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 15_000);
    // redis-server sets SO_REUSEADDR, so TIME_WAIT left by killed clients does not block the
    // port; another process briefly holding it (or the old one still closing) does, so retry.
    for (let attempt = 1; ; attempt++) {
      const child = this.spawn();
      const exit = once(child, "exit").then(() => undefined);
      const up = await this.waitUntilUp(child, deadline);
      if (up) {
        this.child = child;
        this.starts++;
        this.exited = exit.then(() => {
          if (this.child === child) this.child = null;
        });
        return;
      }
      child.kill("SIGKILL");
      await exit;
      if (Date.now() > deadline || attempt >= 50) {
        throw new Error(
          `redis-server did not start on port ${this.port}; output:\n${this.output.slice(-2000)}`,
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(50 * attempt, 500)));
    }
  }

  private spawn(): ChildProcess {
    const args = [
      "--port",
      String(this.port),
      "--bind",
      "127.0.0.1",
      "--dir",
      this.dir,
      "--appendonly",
      "yes",
      "--appendfsync",
      "always",
      "--save",
      "",
      "--enable-debug-command",
      "local",
      "--daemonize",
      "no",
      "--loglevel",
      "warning",
      ...(this.opts.args ?? []),
    ];
    const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout?.setEncoding("utf8").on("data", (c: string) => this.keep(c));
    child.stderr?.setEncoding("utf8").on("data", (c: string) => this.keep(c));
    child.on("error", (err) => this.keep(`spawn error: ${err.message}\n`));
    return child;
  }

  private keep(chunk: string): void {
    this.output = (this.output + chunk).slice(-8000);
  }

  /** True once PING answers; false if the process exits first or the deadline passes. */
  private async waitUntilUp(child: ChildProcess, deadline: number): Promise<boolean> {
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) return false;
      if (await pingOnce(this.port, 500)) return child.exitCode === null;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const child = this.child;
    if (child === null) return;
    child.kill(signal);
    await this.exited;
  }

  async restart(): Promise<void> {
    if (this.stopped) throw new Error("redis-server was stopped");
    await this.kill();
    await this.start();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.kill("SIGKILL");
    process.off("exit", this.onExit);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Starts a private redis-server (AOF, fsync always, DEBUG allowed) and waits for PING. */
export async function startRedisServer(opts: RedisServerOptions = {}): Promise<RedisServer> {
  const server = new RedisServerProcess(opts.port ?? (await freePort()), opts);
  try {
    await server.start();
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}
