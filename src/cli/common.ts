import { type ParseArgsConfig, parseArgs } from "node:util";

/** Exit codes of every command: documented in the README. */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  unavailable: 69, // EX_UNAVAILABLE: the demo found no Redis and no redis-server to start
  config: 78, // EX_CONFIG
} as const;

export class UsageError extends Error {
  readonly code = "USAGE";
}

export function parseCommandArgs<T extends NonNullable<ParseArgsConfig["options"]>>(
  argv: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({
      args: argv,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/**
 * For commands that loop until interrupted: `interrupted` turns true on the first SIGINT or
 * SIGTERM, and `dispose()` (in a finally) removes the handlers again.
 */
export function watchInterrupt(): { readonly interrupted: boolean; dispose(): void } {
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  return {
    get interrupted() {
      return interrupted;
    },
    dispose() {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    },
  };
}
