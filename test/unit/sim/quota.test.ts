import { describe, expect, it } from "vitest";
import { Quota } from "../../../src/sim/quota.js";

describe("simulator quota", () => {
  it("lets the burst through, then one request per 1/rate s", () => {
    const q = new Quota({ rate: 10, burst: 3 }, 0);
    expect([q.take(0).ok, q.take(0).ok, q.take(0).ok, q.take(0).ok]).toEqual([
      true,
      true,
      true,
      false,
    ]);
    expect(q.take(99).ok).toBe(false);
    expect(q.take(100).ok).toBe(true);
  });

  it("asks for whole seconds, at least one, in Retry-After", () => {
    const q = new Quota({ rate: 0.25, burst: 1 }, 0);
    expect(q.take(0).ok).toBe(true);
    expect(q.take(0)).toMatchObject({ ok: false, retryAfterS: 4 });
    const fast = new Quota({ rate: 1000 }, 0);
    for (let i = 0; i < 1000; i++) fast.take(0);
    expect(fast.take(0)).toMatchObject({ ok: false, retryAfterS: 1 });
  });

  it("holds one second of the rate by default, and never more than the bucket", () => {
    const q = new Quota({ rate: 5 }, 0);
    let passed = 0;
    for (let i = 0; i < 20; i++) if (q.take(60_000).ok) passed++;
    expect(passed).toBe(5);
  });

  it("tells its policy and what remains in IETF headers when asked", () => {
    const q = new Quota({ rate: 200, burst: 2, headers: true }, 0);
    expect(q.take(0).headers).toEqual({
      "ratelimit-policy": '"quota";q=200;w=1',
      ratelimit: '"quota";r=1;t=0',
    });
    q.take(0);
    expect(q.take(0).headers["ratelimit"]).toBe('"quota";r=0;t=1');
    expect(new Quota({ rate: 2.5, headers: true }, 0).take(0).headers["ratelimit-policy"]).toBe(
      '"quota";q=250;w=100',
    );
    expect(new Quota({ rate: 5 }, 0).take(0).headers).toEqual({});
  });

  it("refuses a rate that is not above 0", () => {
    expect(() => new Quota({ rate: 0 }, 0)).toThrow(/above 0/);
  });
});
