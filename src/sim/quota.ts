/**
 * The simulator's quota for the key: a token bucket, as a real API gateway keeps one. Pure:
 * the caller passes the time. Beyond the quota a request is refused with 429 and a
 * `Retry-After` in whole seconds (at least 1, as most gateways round it).
 */

export interface QuotaSettings {
  /** Requests per second the key may make. */
  rate: number;
  /** Bucket size; default `rate` (one second of requests), at least 1. */
  burst?: number;
  /** Send IETF `RateLimit-Policy` and `RateLimit` headers with every answer. */
  headers?: boolean;
}

export type QuotaVerdict =
  | { ok: true; headers: Record<string, string> }
  | { ok: false; retryAfterS: number; headers: Record<string, string> };

const NO_HEADERS: Record<string, string> = Object.freeze({}) as Record<string, string>;

export class Quota {
  readonly rate: number;
  readonly burst: number;
  readonly headers: boolean;
  private tokens: number;
  private at: number;

  constructor(settings: QuotaSettings, now: number) {
    if (!(settings.rate > 0)) throw new Error("quota rate must be above 0");
    this.rate = settings.rate;
    this.burst = Math.max(1, settings.burst ?? Math.ceil(settings.rate));
    this.headers = settings.headers === true;
    this.tokens = this.burst;
    this.at = now;
  }

  /** Spends one token if there is one. */
  take(now: number): QuotaVerdict {
    this.refill(now);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return { ok: true, headers: this.describe() };
    }
    const retryAfterS = Math.max(1, Math.ceil((1 - this.tokens) / this.rate));
    return { ok: false, retryAfterS, headers: this.describe() };
  }

  private refill(now: number): void {
    if (now > this.at) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.rate) / 1000);
      this.at = now;
    }
  }

  /** The policy is the rate (as a quota over one second); r is what is left right now. */
  private describe(): Record<string, string> {
    if (!this.headers) return NO_HEADERS;
    const remaining = Math.floor(this.tokens);
    const untilOne = remaining > 0 ? 0 : Math.ceil((1 - this.tokens) / this.rate);
    // Structured-field integers only: a fractional rate is told over a longer window.
    const window = Number.isInteger(this.rate) ? 1 : 100;
    return {
      "ratelimit-policy": `"quota";q=${Math.round(this.rate * window)};w=${window}`,
      ratelimit: `"quota";r=${remaining};t=${untilOne}`,
    };
  }
}
