/**
 * A shared backoff for the whole API. Per-job backoff alone still sends one request per job
 * per interval into an outage; when consecutive polls across jobs keep failing transiently,
 * the circuit opens, claiming stops, and a single probe decides when to resume. The cooldown
 * doubles on each failed probe, up to `maxCooldownMs`.
 */
export interface CircuitSettings {
  /** Consecutive transient outcomes (across all jobs, no success between) that open the circuit. */
  threshold: number;
  minCooldownMs: number;
  maxCooldownMs: number;
}

export type CircuitState = "closed" | "open";

export class Circuit {
  private failures = 0;
  private cooldownMs: number;
  private openUntil = 0;
  state: CircuitState = "closed";

  constructor(private readonly s: CircuitSettings) {
    this.cooldownMs = s.minCooldownMs;
  }

  /** Any answer that shows the API is up (even 404 or an invalid body) closes the streak. */
  recordSuccess(): void {
    this.failures = 0;
  }

  /** Returns true when this failure opened the circuit. */
  recordFailure(now: number): boolean {
    this.failures += 1;
    if (this.state === "closed" && this.failures >= this.s.threshold) {
      this.state = "open";
      this.openUntil = now + this.cooldownMs;
      return true;
    }
    return false;
  }

  /** Milliseconds until a probe may be sent; 0 when closed or due. */
  waitMs(now: number): number {
    return this.state === "open" ? Math.max(0, this.openUntil - now) : 0;
  }

  probeSucceeded(): void {
    this.state = "closed";
    this.failures = 0;
    this.cooldownMs = this.s.minCooldownMs;
  }

  probeFailed(now: number): void {
    this.cooldownMs = Math.min(this.s.maxCooldownMs, this.cooldownMs * 2);
    this.openUntil = now + this.cooldownMs;
  }
}
