import type { Logger } from "pino";
import type { PollOutcome } from "../api/outcome.js";
import { sleep } from "../lib/signal.js";
import { Circuit } from "./circuit.js";
import type { JobsApi } from "./ports.js";

/**
 * The Gate answers one question: may a request to the Jobs API go out now? It is closed while
 * any of its inputs is closed, and it tells its listeners (the Claimer) the moment an input
 * closes, so jobs claimed but not started are handed back in one place.
 *
 * An input is one reason to hold every request back:
 * - `closed(now)` is true while it holds them back. Called per dispatched job: keep it O(1).
 * - `recover(signal)` is one step towards reopening (wait, probe). The claim loop calls it while
 *   the input is the first closed one, then asks again. It must resolve promptly once `signal`
 *   aborts (shutdown).
 * - An input that closes by itself calls the `notifyClosed` it was given.
 *
 * The inputs are the auth pause (401/403 until a probe is accepted), the circuit (a streak of
 * transient failures across jobs until a probe gets an answer) and, given to the constructor,
 * the request budget's shared pause (`budget-gate.ts`: closed while a 429's Retry-After runs
 * for any replica). Inputs are checked in the order given.
 */
export interface GateInput {
  readonly name: string;
  closed(now: number): boolean;
  recover(signal: AbortSignal): Promise<void>;
}

export interface GateSettings {
  authRetryMs: number;
  circuitThreshold: number;
  circuitMinCooldownMs: number;
  circuitMaxCooldownMs: number;
}

export interface GateMetrics {
  authOk?: { set(value: number): void };
  circuitOpen?: { set(value: number): void };
}

export interface GateDeps {
  api: Pick<JobsApi, "probeAuth">;
  settings: GateSettings;
  logger: Logger;
  metrics?: GateMetrics;
  clock: () => number;
  /** Called before each auth probe, e.g. to re-read a rotated key file. */
  onAuthRetry?: () => void;
}

export class Gate {
  private readonly inputs: GateInput[];
  private readonly listeners: Array<() => void> = [];
  private readonly auth: AuthPause;
  private readonly circuit: CircuitInput;

  constructor(
    private readonly deps: GateDeps,
    extraInputs: readonly ((notifyClosed: () => void) => GateInput)[] = [],
  ) {
    const notify = () => this.notifyClosed();
    this.auth = new AuthPause(deps, notify);
    this.circuit = new CircuitInput(deps, notify, (status) => this.auth.close(status));
    this.inputs = [this.auth, this.circuit, ...extraInputs.map((make) => make(notify))];
  }

  /** `listener` runs, synchronously, each time an input closes. */
  onClose(listener: () => void): void {
    this.listeners.push(listener);
  }

  open(): boolean {
    const now = this.deps.clock();
    for (const input of this.inputs) if (input.closed(now)) return false;
    return true;
  }

  /** One step towards reopening: the first closed input waits or probes. */
  async recover(signal: AbortSignal): Promise<void> {
    const now = this.deps.clock();
    for (const input of this.inputs) {
      if (input.closed(now)) return input.recover(signal);
    }
  }

  /**
   * Feeds the gate what a poll came to: 401/403 close it for everyone, transients count. A 429
   * (throttled) says nothing about the API's health: the request budget's pause handles it.
   */
  observe(outcome: PollOutcome): void {
    if (outcome.kind === "auth") this.auth.close(outcome.status);
    else if (outcome.kind === "transient") {
      if (outcome.throttled !== true) this.circuit.recordFailure(outcome.reason);
    } else this.circuit.recordSuccess();
  }

  /** True while the API key is accepted; false during an auth pause. */
  get apiKeyAccepted(): boolean {
    return !this.auth.closed();
  }

  get circuitOpen(): boolean {
    return this.circuit.closed();
  }

  private notifyClosed(): void {
    for (const listener of this.listeners) listener();
  }
}

/** Closed from a 401/403 until a probe says the key (maybe re-read from its file) is accepted. */
class AuthPause implements GateInput {
  readonly name = "auth";
  private ok = true;

  constructor(
    private readonly deps: GateDeps,
    private readonly notifyClosed: () => void,
  ) {}

  closed(): boolean {
    return !this.ok;
  }

  close(status: number): void {
    if (!this.ok) return;
    this.ok = false;
    this.deps.metrics?.authOk?.set(0);
    this.deps.logger.error(
      { status, retryInMs: this.deps.settings.authRetryMs },
      "API key rejected: polling paused for all jobs",
    );
    this.notifyClosed();
  }

  async recover(signal: AbortSignal): Promise<void> {
    const { deps } = this;
    await sleep(deps.settings.authRetryMs, signal);
    if (signal.aborted) return;
    deps.onAuthRetry?.();
    const probe = await deps.api.probeAuth().catch(() => "down" as const);
    if (probe === "ok") {
      this.ok = true;
      deps.metrics?.authOk?.set(1);
      deps.logger.info("API key accepted again: polling resumed");
    } else {
      deps.logger.warn({ probe }, "API key still rejected");
    }
  }
}

/** Closed while the circuit is open: one probe per cooldown decides when polling resumes. */
class CircuitInput implements GateInput {
  readonly name = "circuit";
  private readonly circuit: Circuit;

  constructor(
    private readonly deps: GateDeps,
    private readonly notifyClosed: () => void,
    private readonly authRejected: (status: number) => void,
  ) {
    this.circuit = new Circuit({
      threshold: deps.settings.circuitThreshold,
      minCooldownMs: deps.settings.circuitMinCooldownMs,
      maxCooldownMs: deps.settings.circuitMaxCooldownMs,
    });
  }

  closed(): boolean {
    return this.circuit.state === "open";
  }

  recordSuccess(): void {
    this.circuit.recordSuccess();
  }

  recordFailure(reason: string): void {
    if (!this.circuit.recordFailure(this.deps.clock())) return;
    this.deps.metrics?.circuitOpen?.set(1);
    this.deps.logger.warn({ reason }, "API failing for every job: circuit open, polling paused");
    this.notifyClosed();
  }

  async recover(signal: AbortSignal): Promise<void> {
    const { deps, circuit } = this;
    const wait = circuit.waitMs(deps.clock());
    if (wait > 0) {
      await sleep(wait, signal);
      return;
    }
    const probe = await deps.api.probeAuth().catch(() => "down" as const);
    if (probe === "down") {
      circuit.probeFailed(deps.clock());
      deps.logger.warn({ nextProbeInMs: circuit.waitMs(deps.clock()) }, "API still failing");
      return;
    }
    circuit.probeSucceeded();
    deps.metrics?.circuitOpen?.set(0);
    deps.logger.info("API answers again: circuit closed");
    if (probe === "auth") this.authRejected(401);
  }
}
