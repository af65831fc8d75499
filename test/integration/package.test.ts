import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reached, simulatorPerTest } from "../helpers/daemon.js";
import { ROOT } from "../helpers/processes.js";
import { TEST_REDIS_URL } from "../helpers/redis.js";
import { readUntil } from "../helpers/streams.js";

/**
 * CONTRACT §6, packaging: the tarball `npm pack` makes installs in a project of its own and its
 * examples run there, the producer from TypeScript and the consumer from plain ESM. Offline: the
 * project's node_modules is seeded with the package's runtime dependencies from this checkout's
 * install, so `npm install --offline` of the tarball finds every one of them. The build and the
 * pack run in a copy of the sources, so this test never rewrites the working tree.
 */

const run = promisify(execFile);
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const scope = simulatorPerTest(77);

let work: string;
let project: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "idunox-package-"));
  const stage = join(work, "stage");
  project = join(work, "project");
  mkdirSync(stage);
  for (const entry of [
    "package.json",
    "README.md",
    "tsconfig.json",
    "tsconfig.build.json",
    "tsconfig.types.json",
    "src",
    "scripts",
    "config",
    "schemas",
    "docs/asyncapi.yaml",
  ]) {
    if (existsSync(join(ROOT, entry)))
      cpSync(join(ROOT, entry), join(stage, entry), { recursive: true });
  }
  symlinkSync(join(ROOT, "node_modules"), join(stage, "node_modules"), "dir");
  // prepack builds: the tarball holds what `npm run build` makes from these sources.
  const packed = await run(npm, ["pack", "--json", "--pack-destination", work], {
    cwd: stage,
    maxBuffer: 16 * 1024 * 1024,
  });
  const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as Array<{
    filename: string;
    files: Array<{ path: string }>;
  }>;
  const tarball = join(work, info?.filename ?? "missing.tgz");
  const files = (info?.files ?? []).map((f) => f.path);
  expect(files).toContain("dist/client/index.js");
  expect(files).toContain("dist/client/index.d.ts");
  expect(files).toContain("dist/cli/main.js");
  expect(files).toContain("schemas/status_changed.json");
  expect(files.some((f) => f.startsWith("src/") || f.startsWith("test/"))).toBe(false);

  mkdirSync(join(project, "node_modules"), { recursive: true });
  writeFileSync(
    join(project, "package.json"),
    JSON.stringify({ name: "consumer-project", private: true, type: "module" }),
  );
  const prod = await run(npm, ["ls", "--omit=dev", "--all", "--parseable"], { cwd: ROOT });
  for (const path of prod.stdout.split("\n").slice(1)) {
    if (path === "") continue;
    const rel = path.slice(ROOT.length).replace(/^\/+/, "");
    if (!existsSync(join(project, rel))) cpSync(path, join(project, rel), { recursive: true });
  }
  await run(
    npm,
    ["install", "--offline", "--no-audit", "--no-fund", "--ignore-scripts", "--no-save", tarball],
    { cwd: project },
  );
  // After the install, which would prune it as extraneous: the types of node for tsc.
  mkdirSync(join(project, "node_modules", "@types"), { recursive: true });
  symlinkSync(join(ROOT, "node_modules/@types/node"), join(project, "node_modules/@types/node"));
  cpSync(join(ROOT, "examples/producer.ts"), join(project, "producer.ts"));
  cpSync(join(ROOT, "examples/consumer.mjs"), join(project, "consumer.mjs"));
}, 240_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

function runIn(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, args, {
    cwd: project,
    env: { PATH: process.env.PATH, REDIS_URL: TEST_REDIS_URL, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => {
    out += c;
  });
  child.stderr.setEncoding("utf8").on("data", (c: string) => {
    err += c;
  });
  const exited = once(child, "exit").then(([code]) => code as number | null);
  return { child, exited, stdout: () => out, stderr: () => err };
}

describe("the packed tarball", () => {
  it("type-checks the TypeScript example against the shipped declarations", async () => {
    const tsc = join(ROOT, "node_modules/typescript/bin/tsc");
    const result = await run(
      process.execPath,
      [
        tsc,
        "--noEmit",
        "--strict",
        "--module",
        "nodenext",
        "--moduleResolution",
        "nodenext",
        "--target",
        "es2022",
        "--types",
        "node",
        "producer.ts",
      ],
      { cwd: project },
    ).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? String(err), failed: true }));
    expect(result.stdout).toBe("");
  });

  it("runs the daemon's CLI and both examples: a producer in TypeScript, a consumer in ESM", async () => {
    const help = await run(
      process.execPath,
      ["node_modules/idunox-job-poller/dist/cli/main.js", "--help"],
      {
        cwd: project,
      },
    );
    expect(help.stdout).toContain("idunox-poller");

    const t = await scope.start();
    const env = { POLLER_KEY_PREFIX: t.prefix };
    const consumer = runIn(["consumer.mjs", "--count", "2"], {
      ...env,
      CONSUMER_GROUP: "package-test",
      CONSUMER_NAME: "c1",
    });
    await waitForText(consumer.stdout, /consumer ready/);

    const jobs = [0, 1].map(() =>
      scope.sim.addJob({ steps: [{ afterMs: 0, status: "succeeded" }] }),
    );
    const tsx = join(ROOT, "node_modules/tsx/dist/esm/index.mjs");
    const producer = runIn(["--import", tsx, "producer.ts", ...jobs, "not-a-job"], {
      ...env,
      WAIT_TIMEOUT_MS: "20000",
    });
    expect(await producer.exited, producer.stderr()).toBe(1);
    const lines = producer.stdout().trim().split("\n");
    expect(lines[0]).toBe("tracked added=2 alreadyTracked=0 rejected=1");
    expect(lines[1]).toBe('rejected "not-a-job": not a UUID');
    for (const jobId of jobs) {
      expect(lines).toContainEqual(
        expect.stringMatching(new RegExp(`^finished ${jobId} succeeded`)),
      );
    }

    expect(await consumer.exited, consumer.stderr()).toBe(0);
    const events = await readUntil(t.redis, t.keys.events, (ev) =>
      jobs.every((j) => reached(j, "succeeded")(ev)),
    );
    const handled = consumer.stdout().match(/^handled .* id=(\S+)/gm) ?? [];
    expect(handled.map((l) => /id=(\S+)/.exec(l)?.[1]).sort()).toEqual(
      events.map((e) => e.event.id).sort(),
    );
  });
});

async function waitForText(read: () => string, re: RegExp): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!re.test(read())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}; got: ${read()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
