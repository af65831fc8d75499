import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BUCKETS,
  bucketOf,
  DECAY_WINDOW,
  decodeHistogram,
  emptyHistogram,
  encodeHistogram,
  lowerEdge,
  mergeSamples,
  PhaseDistribution,
  snapshotFromHash,
  upperEdge,
} from "../../../src/poller/durations.js";
import { createRng, type Rng } from "../../../src/sim/random.js";

function logNormal(rng: Rng, medianMs: number, sigma: number): number {
  const u = 1 - rng.next();
  const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
  return medianMs * Math.exp(sigma * z);
}

/** The exact quantile of a log-normal: median * exp(sigma * z_q). */
const Z = { 0.5: 0, 0.9: 1.2815515655446004 } as const;

function learn(rng: Rng, n: number, medianMs: number, sigma: number, start = emptyHistogram()) {
  let h = start;
  // In batches, as replicas merge them.
  for (let done = 0; done < n; done += 50) {
    const batch = Array.from({ length: Math.min(50, n - done) }, () =>
      logNormal(rng, medianMs, sigma),
    );
    h = mergeSamples(h, batch, done);
  }
  return h;
}

describe("duration histogram", () => {
  it("puts every duration in the bucket whose edges hold it", () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1e10, noNaN: true }), (ms) => {
        const i = bucketOf(ms);
        expect(i).toBeGreaterThanOrEqual(0);
        expect(i).toBeLessThan(BUCKETS);
        expect(ms).toBeGreaterThanOrEqual(lowerEdge(i) * (1 - 1e-12));
        if (i < BUCKETS - 1) expect(ms).toBeLessThan(upperEdge(i) * (1 + 1e-12));
      }),
    );
  });

  it("learns the quantiles of a known log-normal distribution", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        fc.double({ min: 50, max: 600_000, noNaN: true }),
        fc.double({ min: 0.2, max: 1.2, noNaN: true }),
        (seed, median, sigma) => {
          const d = new PhaseDistribution(learn(createRng(seed), 4000, median, sigma));
          for (const q of [0.5, 0.9] as const) {
            const truth = median * Math.exp(sigma * Z[q]);
            // The decay keeps an effective sample of about 2 x DECAY_WINDOW (exponential
            // weights), whatever the number of draws: allow 4.5 standard errors of a quantile of
            // that many draws (80 checks per run: at 3 a correct estimator failed one run in
            // five), plus 4% for the grid's interpolation.
            const density = Math.exp(-(Z[q] ** 2) / 2) / Math.sqrt(2 * Math.PI);
            const se = (sigma * Math.sqrt((q * (1 - q)) / (2 * DECAY_WINDOW))) / density;
            expect(Math.abs(Math.log(d.quantile(q) / truth))).toBeLessThan(4.5 * se + 0.04);
          }
          // The survival function agrees with the quantiles it came from.
          expect(d.survival(d.quantile(0.9))).toBeCloseTo(0.1, 2);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("follows a shift in the pipeline's speed within a few decay windows", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        fc.double({ min: 200, max: 60_000, noNaN: true }),
        fc.double({ min: 0.1, max: 10, noNaN: true }).filter((f) => Math.abs(f - 1) > 0.5),
        (seed, before, factor) => {
          const rng = createRng(seed);
          const old = learn(rng, 3000, before, 0.5);
          const after = before * factor;
          const h = learn(rng, 3 * DECAY_WINDOW, after, 0.5, old);
          const d = new PhaseDistribution(h);
          // After three windows the old regime weighs e^-3 (5%) of the whole.
          expect(Math.abs(d.quantile(0.5) / after - 1)).toBeLessThan(0.15);
          // A batch adds its samples after decaying once for all of them: up to a batch over the window.
          expect(d.total).toBeLessThanOrEqual(DECAY_WINDOW + 50);
          expect(h.samples).toBe(3000 + 3 * DECAY_WINDOW);
        },
      ),
      { numRuns: 30 },
    );
  });

  it("stays bounded and ignores impossible samples", () => {
    const h = mergeSamples(emptyHistogram(), [-1, Number.NaN, Number.POSITIVE_INFINITY, 5], 1);
    expect(h.samples).toBe(1);
    expect(h.weights).toHaveLength(BUCKETS);
  });

  it("reads back what it stores, and refuses what it cannot read", () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 1e9, noNaN: true }), { maxLength: 200 }),
        fc.nat(),
        (samples, now) => {
          const h = mergeSamples(emptyHistogram(), samples, now);
          const back = decodeHistogram(encodeHistogram(h));
          expect(back).not.toBeNull();
          expect(back?.samples).toBe(h.samples);
          back?.weights.forEach((w, i) => {
            expect(w).toBeCloseTo(h.weights[i] as number, 3);
          });
        },
      ),
    );
    expect(decodeHistogram("v2|1|2|3")).toBeNull();
    expect(decodeHistogram("v1|1|2|1,2,3")).toBeNull();
    const snap = snapshotFromHash({
      "pipeline.deidentify|run": encodeHistogram(mergeSamples(emptyHistogram(), [100], 0)),
      "pipeline.unknown|run": encodeHistogram(emptyHistogram()),
      "pipeline.deidentify|other": encodeHistogram(emptyHistogram()),
      "pipeline.map_to_fhir|queue": "garbage",
    });
    expect(snap.entries().map((e) => `${e.type}|${e.phase}`)).toEqual(["pipeline.deidentify|run"]);
  });
});
