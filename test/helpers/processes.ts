import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MAIN = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

export interface CliProcess {
  child: ChildProcess;
  /** Every stdout/stderr line so far (pino JSON lines from the daemon go to stdout). */
  lines: string[];
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or the signal name) when the process ends. */
  exited: Promise<number | string>;
  /** Waits until a line matching `re` appears. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
}

/**
 * Runs the real CLI (`src/cli/main.ts` through tsx, no build needed) as a child process with
 * the given environment on top of a minimal one.
 */
export function runCli(args: string[], env: Record<string, string | undefined> = {}): CliProcess {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, NODE_ENV: "test", ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let out = "";
  let err = "";
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  const feed = (chunk: string, which: "out" | "err") => {
    if (which === "out") out += chunk;
    else err += chunk;
    for (const line of chunk.split("\n")) {
      if (line === "") continue;
      lines.push(line);
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i];
        if (w?.re.test(line)) {
          waiters.splice(i, 1);
          w.resolve(line);
        }
      }
    }
  };
  child.stdout?.setEncoding("utf8").on("data", (c: string) => feed(c, "out"));
  child.stderr?.setEncoding("utf8").on("data", (c: string) => feed(c, "err"));
  const exited = once(child, "exit").then(([code, signal]) =>
    code === null ? String(signal) : Number(code),
  );
  return {
    child,
    lines,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForLine(re, timeoutMs = 20_000) {
      const found = lines.find((l) => re.test(l));
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(
            new Error(
              `no line matching ${re} within ${timeoutMs} ms; last lines:\n${lines.slice(-10).join("\n")}`,
            ),
          );
        }, timeoutMs);
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
        exited.then(
          () => {
            clearTimeout(timer);
            reject(
              new Error(
                `process exited before a line matching ${re}; last lines:\n${lines.slice(-10).join("\n")}`,
              ),
            );
          },
          () => {},
        );
      });
    },
  };
}

/** Runs a CLI command to completion and returns its exit code and output. */
export async function runCliToEnd(
  args: string[],
  env: Record<string, string | undefined> = {},
  stdin?: string,
): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const p = runCli(args, env);
  if (stdin !== undefined) p.child.stdin?.end(stdin);
  else p.child.stdin?.end();
  const code = await p.exited;
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}
