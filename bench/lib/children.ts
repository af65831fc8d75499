import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { appendFileSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

export const ROOT = resolve(import.meta.dirname, "..", "..");

/**
 * The node flags of `npm start` (the image's CMD is held to the same command by
 * .ci/check-ops.sh): the daemon is measured as it runs in production.
 */
export const START_FLAGS: string[] = (() => {
  const pkg = JSON.parse(readFileSync(resolve(ROOT, "package.json"), "utf8")) as {
    scripts: { start: string };
  };
  const match = /^node ((?:--\S+ )*)dist\/cli\/main\.js run$/.exec(pkg.scripts.start);
  if (match === null) throw new Error(`unexpected start script: ${pkg.scripts.start}`);
  return (match[1] ?? "").split(" ").filter((f) => f !== "");
})();
const PROBE = pathToFileURL(resolve(ROOT, "bench", "lib", "probe.mjs")).href;

/** What a subject reports about itself (see probe.mjs). */
export interface SubjectSample {
  at: number;
  redisCommandsSent: number;
  /** Microseconds of user + system CPU, every thread of the process. */
  cpuUs: number;
  rssBytes: number;
  /** The resident set's anonymous part (what the process allocated) and file-backed part (the
   * node binary and libraries, shared with other processes); null where /proc is absent. */
  rssAnonBytes: number | null;
  rssFileBytes: number | null;
  /** V8 heap in use (live objects and not yet collected garbage). */
  heapUsedBytes: number;
  /** V8 heap reserved (young and old generation). */
  heapTotalBytes: number;
  /** Memory of C++ objects bound to JS objects (Buffers and the like). */
  externalBytes: number;
}

export interface Subject {
  readonly name: string;
  readonly pid: number;
  sample(): Promise<SubjectSample>;
  /** SIGTERM, then SIGKILL after `graceMs`. Resolves with the exit code (null when killed). */
  stop(graceMs?: number): Promise<number | null>;
  /** The last lines the subject wrote, for error reports. */
  tail(): string;
}

export interface SpawnOptions {
  name: string;
  /** Entry file relative to the repository root. */
  entry: string;
  args?: string[];
  env: Record<string, string>;
  /** Entries under bench/ are TypeScript and run through tsx; dist/ entries run as built. */
  tsx?: boolean;
  nodeFlags?: string[];
}

const TAIL_LINES = 40;

export function spawnSubject(opts: SpawnOptions): Subject {
  const flags = [...(opts.nodeFlags ?? [])];
  if (opts.tsx === true) flags.push("--import", "tsx");
  flags.push("--import", PROBE);
  const child = spawn(process.execPath, [...flags, opts.entry, ...(opts.args ?? [])], {
    cwd: ROOT,
    env: { PATH: process.env["PATH"] ?? "", ...opts.env },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  const lines: string[] = [];
  const logTo = process.env["BENCH_SUBJECT_LOGS"];
  const keep = (line: string) => {
    if (logTo !== undefined) appendFileSync(resolve(logTo, `${opts.name}.log`), `${line}\n`);
    lines.push(line);
    if (lines.length > TAIL_LINES) lines.shift();
  };
  // Drained continuously: a subject blocked on a full pipe would measure the pipe, not itself.
  if (child.stdout) createInterface({ input: child.stdout }).on("line", keep);
  if (child.stderr) createInterface({ input: child.stderr }).on("line", keep);
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;

  return {
    name: opts.name,
    pid: child.pid ?? -1,
    sample: () => requestSample(child, opts.name, lines),
    async stop(graceMs = 20_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const [code] = await exited;
      clearTimeout(timer);
      return code;
    },
    tail: () => lines.join("\n"),
  };
}

function requestSample(child: ChildProcess, name: string, lines: string[]): Promise<SubjectSample> {
  return new Promise((resolvePromise, reject) => {
    if (child.exitCode !== null || !child.connected) {
      reject(new Error(`${name} is not running:\n${lines.join("\n")}`));
      return;
    }
    const timer = setTimeout(() => {
      child.off("message", onMessage);
      reject(new Error(`${name} did not answer a sample request within 10 s`));
    }, 10_000);
    const onMessage = (message: unknown) => {
      const m = message as {
        type?: string;
        redisCommandsSent: number;
        cpu: { user: number; system: number };
        rss: number;
        rssAnon?: number;
        rssFile?: number;
        heapUsed: number;
        heapTotal: number;
        external: number;
      };
      if (m.type !== "bench:sample") return;
      clearTimeout(timer);
      child.off("message", onMessage);
      resolvePromise({
        at: performance.now(),
        redisCommandsSent: m.redisCommandsSent,
        cpuUs: m.cpu.user + m.cpu.system,
        rssBytes: m.rss,
        rssAnonBytes: m.rssAnon ?? null,
        rssFileBytes: m.rssFile ?? null,
        heapUsedBytes: m.heapUsed,
        heapTotalBytes: m.heapTotal,
        externalBytes: m.external,
      });
    };
    child.on("message", onMessage);
    child.send("bench:sample");
  });
}

/** Starts a helper process (not measured) and resolves with its first stdout line. */
export async function spawnHelper(
  entry: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ firstLine: string; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [entry, ...args], {
    cwd: ROOT,
    env: { PATH: process.env["PATH"] ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const errors: string[] = [];
  child.stderr?.on("data", (chunk: Buffer) => {
    errors.push(chunk.toString("utf8"));
    if (errors.length > 20) errors.shift();
  });
  const exited = once(child, "exit");
  const rl = createInterface({ input: child.stdout! });
  const firstLine = await Promise.race([
    once(rl, "line").then(([line]) => String(line)),
    exited.then(() => {
      throw new Error(`${entry} ${args.join(" ")} exited early:\n${errors.join("")}`);
    }),
  ]);
  rl.on("line", () => {});
  return {
    firstLine,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Re-checks `check` every `everyMs` until it yields a value or `timeoutMs` passes. */
export async function waitUntil<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs: number,
  everyMs = 100,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(everyMs);
  }
}
