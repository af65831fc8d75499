import type { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ReplicaHeartbeat } from "../../src/store/heartbeat.js";
import { Store } from "../../src/store/store.js";
import { cleanPrefix, redisClient, testPrefix } from "../helpers/redis.js";

let redis: Redis;
let prefix: string;
let store: Store;

beforeEach(() => {
  redis = redisClient();
  prefix = testPrefix();
  store = new Store(redis, { prefix, streamMaxLen: 10_000, stateTtlMs: 60_000 });
});

afterEach(async () => {
  await cleanPrefix(redis, prefix);
  redis.disconnect();
});

const beat = (at: number, leases = 3): ReplicaHeartbeat => ({
  at,
  pid: 42,
  apiKeyAccepted: true,
  circuitOpen: false,
  leases,
});

describe("replica heartbeats", () => {
  it("are written, listed, pruned when old or unreadable, and removed", async () => {
    const now = 10_000_000;
    await store.writeHeartbeat("r1", beat(now, 7));
    await store.writeHeartbeat("r2", beat(now - 3_600_001));
    await redis.hset(store.keys.replicas, "r3", "not json");
    expect(await store.heartbeats()).toEqual(
      expect.arrayContaining([
        { id: "r1", beat: beat(now, 7) },
        { id: "r2", beat: beat(now - 3_600_001) },
      ]),
    );
    expect(await store.heartbeats()).toHaveLength(2);

    expect(await store.pruneHeartbeats(now, 3_600_000)).toBe(2);
    expect((await redis.hkeys(store.keys.replicas)).sort()).toEqual(["r1"]);

    // Writing again replaces the replica's entry; it never adds a second one.
    await store.writeHeartbeat("r1", beat(now + 5000, 2));
    expect(await store.heartbeats()).toEqual([{ id: "r1", beat: beat(now + 5000, 2) }]);

    await store.removeHeartbeat("r1");
    expect(await redis.exists(store.keys.replicas)).toBe(0);
  });
});
