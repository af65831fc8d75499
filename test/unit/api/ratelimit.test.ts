import { describe, expect, it } from "vitest";
import { parseRateLimitHeaders } from "../../../src/api/ratelimit.js";

const NOW = Date.UTC(2026, 0, 1);

describe("parseRateLimitHeaders", () => {
  it("takes the strictest IETF policy as the rate", () => {
    expect(
      parseRateLimitHeaders(
        { "ratelimit-policy": '"burst";q=100;w=1, "daily";q=86400;w=86400' },
        NOW,
      ),
    ).toEqual({ rate: 1 });
    expect(parseRateLimitHeaders({ "ratelimit-policy": '"default";q=200;w=1' }, NOW)).toEqual({
      rate: 200,
    });
  });

  it("reads the older policy form and skips policies not counted in requests", () => {
    expect(parseRateLimitHeaders({ "ratelimit-policy": "100;w=10" }, NOW)).toEqual({ rate: 10 });
    expect(
      parseRateLimitHeaders(
        { "ratelimit-policy": '"bytes";q=1000;w=1;qu="content-bytes", "req";q=50;w=10' },
        NOW,
      ),
    ).toEqual({ rate: 5 });
  });

  it("pauses until the reset when nothing remains, keeping the policy rate", () => {
    expect(
      parseRateLimitHeaders(
        { "ratelimit-policy": '"default";q=200;w=1', ratelimit: '"default";r=0;t=2' },
        NOW,
      ),
    ).toEqual({ rate: 200, pauseMs: 2000 });
  });

  it("does not pause for a reset a second away when a policy paces the sends", () => {
    expect(
      parseRateLimitHeaders(
        { "ratelimit-policy": '"quota";q=200;w=1', ratelimit: '"quota";r=0;t=1' },
        NOW,
      ),
    ).toEqual({ rate: 200 });
    expect(parseRateLimitHeaders({ ratelimit: '"quota";r=0;t=1' }, NOW)).toEqual({
      pauseMs: 1000,
    });
  });

  it("spreads the remaining requests over the time to the reset without a policy", () => {
    expect(parseRateLimitHeaders({ ratelimit: '"default";r=50;t=10' }, NOW)).toEqual({ rate: 5 });
    expect(parseRateLimitHeaders({ ratelimit: "limit=100, remaining=30, reset=15" }, NOW)).toEqual({
      rate: 2,
    });
    expect(
      parseRateLimitHeaders(
        { "ratelimit-limit": "100", "ratelimit-remaining": "20", "ratelimit-reset": "4" },
        NOW,
      ),
    ).toEqual({ rate: 5 });
  });

  it("reads X-RateLimit-* with the reset in seconds or as a Unix time", () => {
    expect(
      parseRateLimitHeaders(
        {
          "x-ratelimit-limit": "5000",
          "x-ratelimit-remaining": "3600",
          "x-ratelimit-reset": "1800",
        },
        NOW,
      ),
    ).toEqual({ rate: 2 });
    const resetAt = String(NOW / 1000 + 30);
    expect(
      parseRateLimitHeaders({ "x-ratelimit-remaining": "0", "x-ratelimit-reset": resetAt }, NOW),
    ).toEqual({ pauseMs: 30_000 });
  });

  it("bounds the pause at one hour", () => {
    expect(
      parseRateLimitHeaders({ "x-ratelimit-remaining": "0", "x-ratelimit-reset": "999999" }, NOW),
    ).toEqual({ pauseMs: 3_600_000 });
  });

  it("says nothing for missing, garbage or useless headers", () => {
    expect(parseRateLimitHeaders({}, NOW)).toBeNull();
    expect(parseRateLimitHeaders({ "ratelimit-policy": "garbage;;;" }, NOW)).toBeNull();
    expect(parseRateLimitHeaders({ "ratelimit-policy": '"p";q=10;w=0' }, NOW)).toBeNull();
    expect(parseRateLimitHeaders({ "x-ratelimit-remaining": "-3" }, NOW)).toBeNull();
    expect(parseRateLimitHeaders({ "x-ratelimit-remaining": "5" }, NOW)).toBeNull();
    expect(parseRateLimitHeaders({ ratelimit: "r=0x10;t=1e3" }, NOW)).toBeNull();
    expect(
      parseRateLimitHeaders({ "ratelimit-policy": `"p";q=1;w=1${" ".repeat(2000)}` }, NOW),
    ).toBeNull();
  });

  it("keeps a quoted comma inside a policy name from splitting the list", () => {
    expect(parseRateLimitHeaders({ "ratelimit-policy": '"a,b";q=30;w=3' }, NOW)).toEqual({
      rate: 10,
    });
  });
});
