#!/usr/bin/env node
import { coerceError } from "../lib/errors.js";
import { runSimulatorCli } from "../sim/cli.js";
import { EXIT, UsageError } from "./common.js";
import { runDemoCommand } from "./demo.js";
import { runDaemonCommand } from "./run.js";
import { runStatusCommand } from "./status.js";
import { runTailCommand } from "./tail.js";
import { runTrackCommand } from "./track.js";

const USAGE = `Usage: idunox-poller <command> [options]

Commands:
  run                 run the daemon (configuration from the environment; see README)
  track <jobId...>    add job ids to the pending set (also reads ids from stdin, one per line)
  status [jobId]      tracked jobs, backlog, lag and consumer groups, or one job's stored state
  tail                follow the events stream (--group/--consumer for a consumer group, --json)
  simulate            run the built-in Jobs API simulator
  demo                run the daemon against the built-in simulator and show events as they arrive

Run "idunox-poller <command> --help" for a command's options.`;

const SIMULATE_HELP = `Usage: idunox-poller simulate [options]

Runs the built-in Jobs API simulator until SIGTERM/SIGINT. Logs go to stderr; job ids (or one
JSON line {"url","jobIds"} with --json) go to stdout.

Options:
  --port N          port to listen on (default 4010; 0 for any free port)
  --host HOST       address to bind (default 127.0.0.1)
  --jobs N          add N jobs with random realistic lifecycles
  --json            print {"url","jobIds"} as one JSON line
  --seed N          seed of the lifecycles and faults (random by default)
  --api-key KEY     key the simulator accepts (default: $IDUNOX_API_KEY or sim-key)
  --fast            benchmark mode: every uuid exists and is running
  --auto-create     unknown uuids get a random lifecycle on first sight
Exit codes: 0 stopped by a signal, 1 failure, 2 usage.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "run":
      return runDaemonCommand(rest);
    case "track":
      return runTrackCommand(rest);
    case "status":
      return runStatusCommand(rest);
    case "tail":
      return runTailCommand(rest);
    case "demo":
      return runDemoCommand(rest);
    case "simulate":
      if (rest.includes("--help") || rest.includes("-h")) {
        process.stdout.write(`${SIMULATE_HELP}\n`);
        return EXIT.ok;
      }
      await runSimulatorCli(rest, process.env);
      return EXIT.ok;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(`${USAGE}\n`);
      return command === undefined ? EXIT.usage : EXIT.ok;
    default:
      process.stderr.write(`idunox-poller: unknown command "${command}"\n\n${USAGE}\n`);
      return EXIT.usage;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // node:util parseArgs errors (the simulator parses its own options) are usage errors too.
    const code = (err as { code?: unknown } | null)?.code;
    if (
      err instanceof UsageError ||
      (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"))
    ) {
      process.stderr.write(`idunox-poller: ${(err as Error).message}\n`);
      process.exitCode = EXIT.usage;
      return;
    }
    const e = coerceError(err);
    process.stderr.write(`idunox-poller: ${e.message}\n`);
    process.exitCode = EXIT.failure;
  },
);
