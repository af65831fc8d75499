import { createInterface } from "node:readline";
import { isJobId } from "../api/schema.js";
import { EXIT, parseCommandArgs } from "./common.js";
import { REDIS_HELP, REDIS_OPTIONS, withStore } from "./redis-args.js";

const HELP = `Usage: idunox-poller track [options] <jobId...>
       producer | idunox-poller track [options] -

Adds job ids to the pending set (SADD <prefix>pending). With no ids, or "-", reads ids from
stdin, one per line. Ids that are not UUIDs are refused here and not added.

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
  const valid = ids.filter(isJobId);
  const refused = ids.length - valid.length;
  if (refused > 0) {
    process.stderr.write(
      `idunox-poller track: ${refused} value(s) are not job ids (UUIDs) and were not added\n`,
    );
  }
  if (valid.length === 0) return refused > 0 ? EXIT.failure : EXIT.ok;
  return withStore(values, async ({ redis, store }) => {
    let added = 0;
    for (let i = 0; i < valid.length; i += 1000) {
      added += await redis.sadd(store.keys.pending, ...valid.slice(i, i + 1000));
    }
    process.stdout.write(
      `added ${added} new job id(s) to ${store.keys.pending} (${valid.length - added} already pending)\n`,
    );
    return refused > 0 ? EXIT.failure : EXIT.ok;
  });
}
