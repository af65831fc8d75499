import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";

const run = promisify(execFile);

export interface LocalRedisCluster {
  /** The masters' ports, in creation order. */
  ports: number[];
  /** `redis+cluster://` URL with the first two masters as seeds (the third is found by discovery). */
  url: string;
  /** Kills every node and removes the temporary directory; safe to call twice. */
  close(): Promise<void>;
}

// Redis Cluster listens on the client port and on client port + 10000 (the cluster bus), so both
// must be free and below 65536.
const BUS_OFFSET = 10_000;

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

async function freePortRun(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 30_000 + Math.floor(Math.random() * 20_000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) {
      ok = (await portFree(base + i)) && (await portFree(base + i + BUS_OFFSET));
    }
    if (ok) return base;
  }
  throw new Error(`no run of ${count} free ports (and their cluster bus ports) found`);
}

async function until<T>(
  what: string,
  timeoutMs: number,
  check: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`redis cluster: timed out waiting for ${what} (${String(lastError ?? "")})`);
}

async function info(port: number, section: "cluster info" | "ping"): Promise<string> {
  const client = new Redis({
    port,
    host: "127.0.0.1",
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on("error", () => {});
  try {
    await client.connect();
    return section === "ping" ? await client.ping() : String(await client.call("CLUSTER", "INFO"));
  } finally {
    client.disconnect();
  }
}

/**
 * Starts a throwaway Redis Cluster of `masters` nodes (no replicas, no persistence) on free
 * local ports, creates the cluster with `redis-cli --cluster create` and waits until every
 * node reports `cluster_state:ok`. Everything lives in a temporary directory that `close()`
 * removes, so a crashed test leaves no config file behind in the repository.
 */
export async function startRedisCluster(masters = 3): Promise<LocalRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), "idunox-cluster-"));
  const base = await freePortRun(masters);
  const ports = Array.from({ length: masters }, (_, i) => base + i);
  const nodes: ChildProcess[] = [];
  let closed: Promise<void> | undefined;

  const close = (): Promise<void> => {
    closed ??= (async () => {
      await Promise.all(
        nodes.map(async (node) => {
          if (node.exitCode !== null || node.signalCode !== null) return;
          const exit = once(node, "exit");
          node.kill("SIGKILL");
          await exit;
        }),
      );
      rmSync(dir, { recursive: true, force: true });
    })();
    return closed;
  };

  try {
    for (const port of ports) {
      const node = spawn(
        "redis-server",
        [
          "--port",
          String(port),
          "--bind",
          "127.0.0.1",
          "--dir",
          dir,
          "--cluster-enabled",
          "yes",
          "--cluster-config-file",
          join(dir, `nodes-${port}.conf`),
          "--cluster-node-timeout",
          "5000",
          "--save",
          "",
          "--appendonly",
          "no",
          "--logfile",
          "",
        ],
        { stdio: "ignore" },
      );
      nodes.push(node);
    }
    for (const port of ports) {
      await until(`node ${port} to answer`, 10_000, async () =>
        (await info(port, "ping")) === "PONG" ? true : undefined,
      );
    }
    await run(
      "redis-cli",
      [
        "--cluster",
        "create",
        ...ports.map((p) => `127.0.0.1:${p}`),
        "--cluster-replicas",
        "0",
        "--cluster-yes",
      ],
      { timeout: 30_000 },
    );
    for (const port of ports) {
      await until(`cluster_state:ok on ${port}`, 20_000, async () =>
        (await info(port, "cluster info")).includes("cluster_state:ok") ? true : undefined,
      );
    }
  } catch (err) {
    await close();
    throw err;
  }

  const seeds = ports.slice(0, 2).map((p) => `127.0.0.1:${p}`);
  return { ports, url: `redis+cluster://${seeds.join(",")}`, close };
}
