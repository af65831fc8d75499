import { describe, expect, it } from "vitest";
import { BATCH_MS, batchSize, LocalPermits, MAX_BATCH } from "../../../src/poller/budget.js";

describe("batchSize", () => {
  it("takes what the shared rate grants in BATCH_MS, at least one", () => {
    expect(batchSize(200, { limit: 200, burst: 200 })).toBe((200 * BATCH_MS) / 1000);
    expect(batchSize(1, { limit: 1, burst: 1 })).toBe(1);
    expect(batchSize(0.1, { limit: 0, burst: 1 })).toBe(1);
  });

  it("never asks for more than the bucket holds", () => {
    expect(batchSize(1000, { limit: 1000, burst: 3 })).toBe(3);
    // With no fixed limit the bucket holds a second of the adapted rate.
    expect(batchSize(300, { limit: 0, burst: 1 })).toBe((300 * BATCH_MS) / 1000);
  });

  it("takes MAX_BATCH when no rate is in force", () => {
    expect(batchSize(null, { limit: 0, burst: 1 })).toBe(MAX_BATCH);
    expect(batchSize(1e6, { limit: 1e6, burst: 1e6 })).toBe(MAX_BATCH);
  });
});

describe("LocalPermits", () => {
  it("hands out what was added, until the hold time lapses", () => {
    const p = new LocalPermits(100);
    p.add(2, 1000);
    expect(p.available(1099)).toBe(2);
    expect(p.take(1050)).toBe(true);
    expect(p.take(1060)).toBe(true);
    expect(p.take(1070)).toBe(false);
    p.add(5, 2000);
    expect(p.available(2100)).toBe(0);
    expect(p.take(2100)).toBe(false);
  });

  it("keeps each batch until its own hold time lapses, and drops all on demand", () => {
    const p = new LocalPermits(100);
    p.add(3, 0);
    p.add(2, 50);
    expect(p.available(99)).toBe(5);
    expect(p.available(100)).toBe(2);
    expect(p.available(149)).toBe(2);
    p.drop();
    expect(p.available(149)).toBe(0);
  });

  it("holds reserved permits back until they become usable, and times them from then", () => {
    const p = new LocalPermits(100);
    p.add(2, 0, 40);
    expect(p.available(39)).toBe(0);
    expect(p.held(39)).toBe(2);
    expect(p.nextUsableAt(39)).toBe(40);
    expect(p.take(39)).toBe(false);
    expect(p.take(40)).toBe(true);
    expect(p.available(139)).toBe(1);
    expect(p.available(140)).toBe(0);
    expect(p.nextUsableAt(140)).toBeNull();
  });
});
