/**
 * A capped exponential delay for retrying a failing call: `next()` gives the delay before the
 * next try and doubles the one after, up to `maxMs`; `reset()` after a success starts again at
 * `firstMs`. No jitter: each user is one loop of this replica, not a crowd of clients.
 */
export class Backoff {
  private currentMs: number;

  constructor(
    private readonly firstMs: number,
    private readonly maxMs: number,
  ) {
    this.currentMs = Math.min(firstMs, maxMs);
  }

  next(): number {
    const delay = this.currentMs;
    this.currentMs = Math.min(this.currentMs * 2, this.maxMs);
    return delay;
  }

  reset(): void {
    this.currentMs = Math.min(this.firstMs, this.maxMs);
  }
}
