#!/usr/bin/env node
import { coerceError } from "../lib/errors.js";
import { runSimulatorCli } from "../sim/cli.js";
import { runAclCommand } from "./acl.js";
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
  acl                 print a Redis ACL file with least-privilege users for a key prefix

Run "idunox-poller <command> --help" for a command's options.`;

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
    case "acl":
      return runAclCommand(rest);
    case "simulate":
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
    if (err instanceof UsageError) {
      process.stderr.write(`idunox-poller: ${err.message}\n`);
      process.exitCode = EXIT.usage;
      return;
    }
    const e = coerceError(err);
    process.stderr.write(`idunox-poller: ${e.message}\n`);
    process.exitCode = EXIT.failure;
  },
);
