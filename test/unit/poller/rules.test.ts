import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { JOB_STATUSES } from "../../../src/api/schema.js";
import {
  isFinal,
  isStale,
  jittered,
  nextDueAt,
  nextInterval,
  notFoundExpired,
  shouldAlertPollFailure,
  slaBreachDetection,
} from "../../../src/poller/rules.js";

const backoff = { minIntervalMs: 2000, maxIntervalMs: 60000, backoffFactor: 2, jitter: 0.2 };

describe("backoff", () => {
  it("starts at the minimum, grows by the factor, and is capped", () => {
    expect(nextInterval(null, false, backoff)).toBe(2000);
    expect(nextInterval(2000, false, backoff)).toBe(4000);
    expect(nextInterval(4000, false, backoff)).toBe(8000);
    expect(nextInterval(40000, false, backoff)).toBe(60000);
    expect(nextInterval(60000, false, backoff)).toBe(60000);
  });

  it("resets to the minimum after a change", () => {
    expect(nextInterval(60000, true, backoff)).toBe(2000);
  });

  it("stays within [min, max] for any history", () => {
    fc.assert(
      fc.property(fc.array(fc.boolean(), { maxLength: 50 }), (changes) => {
        let interval: number | null = null;
        for (const changed of changes) {
          interval = nextInterval(interval, changed, backoff);
          expect(interval).toBeGreaterThanOrEqual(backoff.minIntervalMs);
          expect(interval).toBeLessThanOrEqual(backoff.maxIntervalMs);
        }
      }),
    );
  });

  it("jitter only shortens the delay, by at most the jitter fraction", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 0.9999, noNaN: true }),
        (interval, jitter, random) => {
          const d = jittered(interval, jitter, random);
          expect(d).toBeLessThanOrEqual(interval);
          expect(d).toBeGreaterThanOrEqual(Math.max(1, Math.floor(interval * (1 - jitter))));
        },
      ),
    );
  });

  it("spreads jobs out: different random draws give different delays", () => {
    expect(jittered(10000, 0.2, 0)).toBe(10000);
    expect(jittered(10000, 0.2, 0.5)).toBe(9000);
  });
});

describe("next due time", () => {
  it("is clamped to a future SLA deadline not yet reported", () => {
    expect(nextDueAt({ now: 1000, delayMs: 5000, slaDeadlineMs: 3000, slaReported: false })).toBe(
      3000,
    );
    expect(nextDueAt({ now: 1000, delayMs: 5000, slaDeadlineMs: 3000, slaReported: true })).toBe(
      6000,
    );
    expect(nextDueAt({ now: 1000, delayMs: 5000, slaDeadlineMs: 500, slaReported: false })).toBe(
      6000,
    );
  });

  it("obeys Retry-After even past the deadline", () => {
    expect(
      nextDueAt({ now: 0, delayMs: 100, slaDeadlineMs: 50, slaReported: false, notBeforeMs: 9000 }),
    ).toBe(9000);
  });

  it("never exceeds now + delay unless the API asked to wait", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1e12 }),
        fc.integer({ min: 1, max: 1e6 }),
        fc.option(fc.integer({ min: 0, max: 2e12 })),
        fc.boolean(),
        (now, delayMs, slaDeadlineMs, slaReported) => {
          const due = nextDueAt({ now, delayMs, slaDeadlineMs, slaReported });
          expect(due).toBeLessThanOrEqual(now + delayMs);
          expect(due).toBeGreaterThan(now);
        },
      ),
    );
  });
});

describe("final states", () => {
  it("succeeded, cancelled and dead_letter are final", () => {
    for (const status of ["succeeded", "cancelled", "dead_letter"] as const) {
      expect(isFinal({ status, attempts: 0, maxAttempts: 5 })).toBe(true);
    }
  });

  it("failed is final only once attempts >= maxAttempts", () => {
    expect(isFinal({ status: "failed", attempts: 1, maxAttempts: 3 })).toBe(false);
    expect(isFinal({ status: "failed", attempts: 3, maxAttempts: 3 })).toBe(true);
    expect(isFinal({ status: "failed", attempts: 4, maxAttempts: 3 })).toBe(true);
  });

  it("pending, queued and running are never final", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("pending", "queued", "running" as const),
        fc.nat(),
        fc.nat(),
        (status, attempts, maxAttempts) => {
          expect(isFinal({ status, attempts, maxAttempts })).toBe(false);
        },
      ),
    );
  });

  it("covers every documented status", () => {
    const finals = JOB_STATUSES.filter((status) =>
      isFinal({ status, attempts: 9, maxAttempts: 1 }),
    );
    expect(finals).toEqual(["succeeded", "failed", "cancelled", "dead_letter"]);
  });
});

describe("SLA breach", () => {
  const base = { status: "running" as const, attempts: 0, maxAttempts: 3, slaBreached: false };
  const deadline = "2026-01-01T00:00:00.000Z";
  const t = Date.parse(deadline);

  it("is detected from the API flag", () => {
    expect(slaBreachDetection({ ...base, slaBreached: true, slaDeadlineAt: null }, 0, false)).toBe(
      "api",
    );
  });

  it("is detected from the deadline by the daemon's clock while not final", () => {
    expect(slaBreachDetection({ ...base, slaDeadlineAt: deadline }, t - 1, false)).toBeNull();
    expect(slaBreachDetection({ ...base, slaDeadlineAt: deadline }, t, false)).toBe("deadline");
    expect(
      slaBreachDetection({ ...base, status: "succeeded", slaDeadlineAt: deadline }, t + 1, false),
    ).toBeNull();
  });

  it("is reported once", () => {
    expect(
      slaBreachDetection({ ...base, slaBreached: true, slaDeadlineAt: deadline }, t, true),
    ).toBeNull();
  });
});

describe("404 grace and failure alerts", () => {
  it("not_found only once the grace has passed", () => {
    expect(notFoundExpired(1000, 60_999, 60_000)).toBe(false);
    expect(notFoundExpired(1000, 61_000, 60_000)).toBe(true);
  });

  it("poll_failed at the threshold, once per streak", () => {
    expect(shouldAlertPollFailure(9, 10, false)).toBe(false);
    expect(shouldAlertPollFailure(10, 10, false)).toBe(true);
    expect(shouldAlertPollFailure(11, 10, true)).toBe(false);
  });

  it("stale means strictly older than recorded", () => {
    expect(isStale(5, null)).toBe(false);
    expect(isStale(5, 5)).toBe(false);
    expect(isStale(4, 5)).toBe(true);
  });
});
