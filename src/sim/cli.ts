import { readFileSync } from "node:fs";
import pino from "pino";
import { parseCommandArgs } from "../cli/common.js";
import { randomSeed } from "./random.js";
import { startSimulator } from "./simulator.js";

const DEFAULT_PORT = 4010;
const DEFAULT_API_KEY = "sim-key";

function integer(name: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}`);
  return n;
}

/**
 * Runs the simulator as a process until SIGTERM or SIGINT. `argv` holds the options only
 * (e.g. `process.argv.slice(3)` after `simulate`). Job ids from `--jobs N` go to stdout, one
 * per line, or as one JSON line `{"url", "jobIds"}` with `--json`; the log goes to stderr so
 * that stdout stays machine-readable.
 */
const HELP = `Usage: idunox-poller simulate [options]

Runs the built-in Jobs API simulator until SIGTERM/SIGINT. Logs go to stderr; job ids (or one
JSON line {"url","jobIds"} with --json) go to stdout.

Options:
  --port N          port to listen on (default 4010; 0 for any free port)
  --host HOST       address to bind (default 127.0.0.1)
  --jobs N          add N jobs with random realistic lifecycles
  --mix MIX         lifecycles of --jobs: scenarios (edge cases, the default) or pipeline
                    (log-normal queue and run times per job type, see src/sim/mix.ts)
  --json            print {"url","jobIds"} as one JSON line
  --seed N          seed of the lifecycles and faults (random by default)
  --api-key KEY     key the simulator accepts (default: $IDUNOX_API_KEY, the file
                    $IDUNOX_API_KEY_FILE names, or sim-key)
  --fast            benchmark mode: every uuid exists and is running
  --auto-create     unknown uuids get a random lifecycle on first sight
  --quota N         requests/s the key may make (token bucket); beyond it 429 + Retry-After
  --quota-burst N   bucket size of the quota (default: one second of it)
  --rate-headers    send IETF RateLimit-Policy and RateLimit headers with the quota
  --latency MS      every answer takes this long (default 0)
Exit codes: 0 stopped by a signal, 1 failure, 2 usage.`;

export async function runSimulatorCli(argv: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const { values } = parseCommandArgs(argv, {
    port: { type: "string" },
    host: { type: "string" },
    fast: { type: "boolean" },
    "auto-create": { type: "boolean" },
    seed: { type: "string" },
    jobs: { type: "string" },
    json: { type: "boolean" },
    mix: { type: "string" },
    "api-key": { type: "string" },
    quota: { type: "string" },
    "quota-burst": { type: "string" },
    "rate-headers": { type: "boolean" },
    latency: { type: "string" },
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const port = integer("port", values.port, DEFAULT_PORT, 0);
  const seed = integer("seed", values.seed, randomSeed(), 0);
  const jobs = integer("jobs", values.jobs, 0, 0);
  const quota = integer("quota", values.quota, 0, 1);
  const quotaBurst = integer("quota-burst", values["quota-burst"], quota, 1);
  const latencyMs = integer("latency", values.latency, 0, 0);
  if (
    values.quota === undefined &&
    (values["quota-burst"] !== undefined || values["rate-headers"])
  ) {
    throw new Error("--quota-burst and --rate-headers need --quota");
  }
  const mix = values.mix ?? "scenarios";
  if (mix !== "scenarios" && mix !== "pipeline") {
    throw new Error("--mix must be scenarios or pipeline");
  }
  const keyFile = env["IDUNOX_API_KEY_FILE"];
  // The compose demo hands both the simulator and the poller one secret file.
  const apiKey =
    values["api-key"] ??
    env["IDUNOX_API_KEY"] ??
    (keyFile ? readFileSync(keyFile, "utf8").trim() : undefined) ??
    DEFAULT_API_KEY;
  const logger = pino(
    { name: "idunox-sim", level: env["LOG_LEVEL"] ?? "info" },
    pino.destination(2),
  );

  const sim = await startSimulator({
    apiKey,
    port,
    host: values.host ?? "127.0.0.1",
    seed,
    fast: values.fast === true,
    autoCreate: values["auto-create"] === true,
    ...(values.quota === undefined
      ? {}
      : { quota: { rate: quota, burst: quotaBurst, headers: values["rate-headers"] === true } }),
    latencyMs,
    logger,
  });
  const jobIds = sim.addRandomJobs(jobs, mix);
  if (values.json === true) process.stdout.write(`${JSON.stringify({ url: sim.url, jobIds })}\n`);
  else if (jobIds.length > 0) process.stdout.write(`${jobIds.join("\n")}\n`);
  logger.info(
    {
      url: sim.url,
      seed,
      fast: values.fast === true,
      autoCreate: values["auto-create"] === true,
      jobs,
      quota: values.quota === undefined ? null : quota,
      latencyMs,
    },
    `idunox simulator listening on ${sim.url}`,
  );

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    // Removed again once one arrives, so that a second signal gets Node's default (exit).
    const stop = (received: NodeJS.Signals) => {
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
      resolve(received);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
  await sim.close();
  logger.info({ signal }, "simulator stopped");
  logger.flush();
}
