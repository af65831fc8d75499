import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isJobId } from "../../../src/api/schema.js";
import { createRng } from "../../../src/sim/random.js";

describe("createRng", () => {
  it("replays the same sequence for the same seed and differs across seeds", () => {
    const draw = (seed: number) => {
      const rng = createRng(seed);
      return [rng.next(), rng.int(1, 100), rng.uuid(), rng.pick(["a", "b", "c"])];
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
  });

  it("stays within bounds and builds version 4 uuids", () => {
    fc.assert(
      fc.property(
        fc.integer(),
        fc.integer({ min: -50, max: 50 }),
        fc.nat(100),
        (seed, min, span) => {
          const rng = createRng(seed);
          const x = rng.next();
          const n = rng.int(min, min + span);
          const id = rng.uuid();
          expect(x).toBeGreaterThanOrEqual(0);
          expect(x).toBeLessThan(1);
          expect(n).toBeGreaterThanOrEqual(min);
          expect(n).toBeLessThanOrEqual(min + span);
          expect(isJobId(id)).toBe(true);
          expect(id).toBe(id.toLowerCase());
          expect(id[14]).toBe("4");
          expect("89ab").toContain(id[19]);
        },
      ),
    );
  });

  it("does not draw for a zero probability, so unused faults leave the sequence alone", () => {
    const a = createRng(7);
    const b = createRng(7);
    expect(a.chance(0)).toBe(false);
    expect(a.next()).toBe(b.next());
  });
});
