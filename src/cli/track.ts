import { createInterface } from "node:readline";
import { trackIds } from "../client/track.js";
import { EXIT, parseCommandArgs } from "./common.js";
import { openStore, REDIS_HELP, REDIS_OPTIONS } from "./redis-args.js";

const HELP = `Usage: idunox-poller track [options] <jobId...>
       producer | idunox-poller track [options] -

Adds job ids to the pending set (SADD <prefix>pending) with the intake hint, the same way as
the library's track(). With no ids, or "-", reads ids from stdin, one per line. Ids that are
not UUIDs are refused here and not added.

Options:
${REDIS_HELP}
Exit codes: 0 all added, 1 some ids refused or Redis failed, 2 usage.`;

async function readStdin(): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of createInterface({ input: process.stdin })) {
    const id = line.trim();
    if (id !== "") lines.push(id);
  }
  return lines;
}

export async function runTrackCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, REDIS_OPTIONS, true);
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  const ids =
    positionals.length === 0 || (positionals.length === 1 && positionals[0] === "-")
      ? await readStdin()
      : positionals;
  const { redis, store } = openStore(values);
  try {
    const result = await trackIds(redis, store.keys, ids);
    const refused = result.rejected.length;
    if (refused > 0) {
      process.stderr.write(
        `idunox-poller track: ${refused} value(s) are not job ids (UUIDs) and were not added\n`,
      );
    }
    if (result.added + result.alreadyTracked > 0) {
      process.stdout.write(
        `added ${result.added} new job id(s) to ${store.keys.pending} (${result.alreadyTracked} already pending)\n`,
      );
    }
    return refused > 0 ? EXIT.failure : EXIT.ok;
  } finally {
    redis.disconnect();
  }
}
