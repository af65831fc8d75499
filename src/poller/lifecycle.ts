/**
 * The poller's one lifecycle mode. Only the `set*` methods change it, and only forwards:
 *
 *   running ──stop()──▶ draining ──drain budget spent──▶ aborting ──all settled──▶ stopped
 *
 * - running: claiming and polling.
 * - draining: no new claims; polls already out may finish, decisions are still written.
 * - aborting: the requests still out were aborted; a poll that ends now hands its job back
 *   instead of deciding on an answer cut short.
 * - stopped: nothing in flight, every decision written or given up on.
 */
export type LifecycleMode = "running" | "draining" | "aborting" | "stopped";

const ORDER: Record<LifecycleMode, number> = { running: 0, draining: 1, aborting: 2, stopped: 3 };

export class Lifecycle {
  private current: LifecycleMode = "running";
  private stopStartedAt: number | null = null;
  private readonly stopController = new AbortController();

  constructor(private readonly clock: () => number) {}

  get mode(): LifecycleMode {
    return this.current;
  }

  get running(): boolean {
    return this.current === "running";
  }

  /** Aborted when the mode leaves `running`: ends every pause and sleep of the loops. */
  get stopSignal(): AbortSignal {
    return this.stopController.signal;
  }

  /** Milliseconds since stop() began; null while running. */
  stoppingFor(): number | null {
    return this.stopStartedAt === null ? null : this.clock() - this.stopStartedAt;
  }

  /** Whether a poll ending now must hand its job back: its request may have been cut short. */
  get requestsAborted(): boolean {
    return ORDER[this.current] >= ORDER.aborting;
  }

  setDraining(): void {
    if (!this.advance("draining")) return;
    this.stopStartedAt = this.clock();
    this.stopController.abort();
  }

  setAborting(): void {
    this.advance("aborting");
  }

  setStopped(): void {
    this.advance("stopped");
  }

  private advance(to: LifecycleMode): boolean {
    if (ORDER[to] <= ORDER[this.current]) return false;
    this.current = to;
    return true;
  }
}
