import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { waitFor } from "./redis.js";
import { freePort } from "./redis-server.js";

/**
 * Sentinels the test starts itself (`redis-server <conf> --sentinel`), each with its own
 * config file in a temp dir (a sentinel rewrites its file as it learns the topology).
 */
export interface Sentinels {
  readonly ports: number[];
  /** `redis+sentinel://…/<master>` for the daemon. */
  readonly url: string;
  /** The address the sentinels agree on as primary now (asks the first one that answers). */
  masterPort(): Promise<number | null>;
  /** Resolves once every sentinel knows `replicas` replicas and the other sentinels. */
  waitForTopology(replicas: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface SentinelOptions {
  masterPort: number;
  masterName?: string;
  count?: number;
  /** How long the primary must be unreachable before it is considered down. */
  downAfterMs?: number;
  failoverTimeoutMs?: number;
}

export async function startSentinels(opts: SentinelOptions): Promise<Sentinels> {
  const name = opts.masterName ?? "mymaster";
  const count = opts.count ?? 3;
  const quorum = Math.floor(count / 2) + 1;
  const dir = mkdtempSync(join(tmpdir(), "idunox-sentinel-"));
  const children: ChildProcess[] = [];
  const ports: number[] = [];
  const onExit = () => {
    for (const c of children) c.kill("SIGKILL");
  };
  process.once("exit", onExit);
  const clients: Redis[] = [];

  const stop = async () => {
    for (const c of clients) c.disconnect();
    await Promise.all(
      children.map(async (c) => {
        if (c.exitCode !== null || c.signalCode !== null) return;
        const exit = once(c, "exit");
        c.kill("SIGKILL");
        await exit;
      }),
    );
    process.off("exit", onExit);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    for (let i = 0; i < count; i++) {
      const port = await freePort();
      const conf = join(dir, `sentinel-${i}.conf`);
      writeFileSync(
        conf,
        [
          `port ${port}`,
          "bind 127.0.0.1",
          `dir ${dir}`,
          `sentinel monitor ${name} 127.0.0.1 ${opts.masterPort} ${quorum}`,
          `sentinel down-after-milliseconds ${name} ${opts.downAfterMs ?? 1000}`,
          `sentinel failover-timeout ${name} ${opts.failoverTimeoutMs ?? 5000}`,
          `sentinel parallel-syncs ${name} 1`,
          "",
        ].join("\n"),
      );
      const child = spawn("redis-server", [conf, "--sentinel", "--loglevel", "warning"], {
        stdio: "ignore",
      });
      children.push(child);
      ports.push(port);
    }
    for (const port of ports) {
      const c = new Redis({
        port,
        host: "127.0.0.1",
        maxRetriesPerRequest: 1,
        retryStrategy: () => 50,
      });
      c.on("error", () => {});
      clients.push(c);
    }
    await waitFor(
      async () => {
        for (const c of clients) if ((await c.ping().catch(() => "")) !== "PONG") return false;
        return true;
      },
      { what: "the sentinels to answer", timeoutMs: 15_000 },
    );
  } catch (err) {
    await stop();
    throw err;
  }

  const ask = async (c: Redis, ...args: string[]) => c.call("SENTINEL", ...args).catch(() => null);

  return {
    ports,
    url: `redis+sentinel://${ports.map((p) => `127.0.0.1:${p}`).join(",")}/${name}`,
    async masterPort() {
      for (const c of clients) {
        const addr = (await ask(c, "get-master-addr-by-name", name)) as [string, string] | null;
        if (addr !== null) return Number(addr[1]);
      }
      return null;
    },
    async waitForTopology(replicas, timeoutMs = 20_000) {
      await waitFor(
        async () => {
          for (const c of clients) {
            const r = (await ask(c, "replicas", name)) as unknown[] | null;
            const s = (await ask(c, "sentinels", name)) as unknown[] | null;
            if (r === null || s === null || r.length < replicas || s.length < count - 1)
              return false;
          }
          return true;
        },
        { what: `every sentinel to see ${replicas} replica(s) and ${count - 1} peers`, timeoutMs },
      );
    },
    stop,
  };
}
