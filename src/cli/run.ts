import { type Config, ConfigError, loadConfig } from "../config/index.js";
import { startDaemon } from "../daemon/daemon.js";
import { createLogger } from "../log/logger.js";
import { EXIT, parseCommandArgs } from "./common.js";

const HELP = `Usage: idunox-poller run

Runs the daemon. Every setting comes from the environment (or POLLER_CONFIG_FILE);
see the README's configuration table. IDUNOX_API_KEY or IDUNOX_API_KEY_FILE is required.

Signals: the first SIGTERM/SIGINT stops claiming, drains in-flight polls within
POLLER_SHUTDOWN_TIMEOUT_MS and exits 0; a second one exits at once (1).
Exit codes: 0 stopped cleanly, 1 failure, 2 usage, 78 invalid configuration.`;

/** Loads the configuration or prints every problem and returns null. */
export function loadConfigOrReport(env: NodeJS.ProcessEnv = process.env): Config | null {
  try {
    return loadConfig(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(
      `idunox-poller: invalid configuration (${err.problems.length} problem${err.problems.length === 1 ? "" : "s"}):\n` +
        err.problems.map((p) => `  - ${p}\n`).join(""),
    );
    return null;
  }
}

export async function runDaemonCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {});
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  const config = loadConfigOrReport();
  if (config === null) return EXIT.config;
  const logger = createLogger({ level: config.logLevel, base: { replica: config.replicaId } });
  // Signal handlers go in before anything starts: a SIGTERM during start-up must also stop
  // cleanly, not kill the process with the default action.
  const started = startDaemon(config, { logger });
  const exit = waitForSignals(
    () => started.then((daemon) => daemon.stop()),
    config.shutdownTimeoutMs,
    logger,
  );
  await started;
  return exit;
}

/**
 * Two-stage shutdown: the first signal stops gracefully (exit 0); a second signal, or the
 * graceful stop overrunning its timeout, exits at once with 1. Nothing is lost either way:
 * a lease that was not handed back runs out and another replica (or the restart) takes over.
 */
export function waitForSignals(
  stop: () => Promise<void>,
  timeoutMs: number,
  logger: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void },
): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn({ signal }, "second signal: exiting now");
        process.exit(EXIT.failure);
      }
      stopping = true;
      logger.warn({ signal, timeoutMs }, "signal received: shutting down");
      const force = setTimeout(() => {
        logger.error({ timeoutMs }, "shutdown timed out: exiting");
        process.exit(EXIT.failure);
      }, timeoutMs);
      force.unref();
      stop().then(
        () => {
          clearTimeout(force);
          resolve(EXIT.ok);
        },
        (err: unknown) => {
          logger.error({ err }, "shutdown failed");
          resolve(EXIT.failure);
        },
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}
