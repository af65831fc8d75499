/**
 * A seeded pseudo-random source. The simulator must replay the same jobs and the same fault
 * rolls for the same seed (reproducible demos, tests and benchmarks), which Math.random cannot.
 * It is a Weyl sequence passed through a 32-bit avalanche mix: plenty for simulated traffic,
 * not meant for anything secret.
 */
export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [min, max], both included. */
  int(min: number, max: number): number;
  /** True with probability p; p <= 0 never draws, so unused faults do not shift the sequence. */
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
  /** A lowercase RFC 9562 version 4 UUID built from this sequence. */
  uuid(): string;
}

const GOLDEN = 0x9e3779b9;

export function createRng(seed: number): Rng {
  let state = seed >>> 0;

  const nextU32 = (): number => {
    state = (state + GOLDEN) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };

  const next = (): number => nextU32() / 0x1_0000_0000;

  return {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    chance: (p) => p > 0 && next() < p,
    pick: (items) => {
      if (items.length === 0) throw new RangeError("pick from an empty list");
      return items[Math.floor(next() * items.length)] as (typeof items)[number];
    },
    uuid: () => {
      const words = [nextU32(), nextU32(), nextU32(), nextU32()];
      // Version 4 in the high nibble of byte 6, variant 10xx in the high bits of byte 8.
      words[1] = (((words[1] as number) & 0xffff0fff) | 0x00004000) >>> 0;
      words[2] = (((words[2] as number) & 0x3fffffff) | 0x80000000) >>> 0;
      const hex = words.map((w) => w.toString(16).padStart(8, "0")).join("");
      return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
    },
  };
}

/** A seed for when none is given; logged by callers so a run can be replayed. */
export function randomSeed(): number {
  return Math.floor(Math.random() * 0x7fff_ffff);
}
