import { describe, expect, it } from "vitest";
import { maskUrlPassword, parseRedisUrl, RedisUrlError } from "../../../src/config/index.js";

describe("parseRedisUrl", () => {
  it("takes a standalone URL apart with defaults", () => {
    expect(parseRedisUrl("redis://127.0.0.1")).toEqual({
      mode: "standalone",
      tls: false,
      hosts: [{ host: "127.0.0.1", port: 6379 }],
      username: null,
      password: null,
      db: 0,
      masterName: null,
    });
  });

  it("decodes credentials and reads the database number", () => {
    expect(parseRedisUrl("rediss://app:p%40ss%3Aword@redis.example:6380/3")).toMatchObject({
      tls: true,
      username: "app",
      password: "p@ss:word",
      hosts: [{ host: "redis.example", port: 6380 }],
      db: 3,
    });
    expect(parseRedisUrl("redis://:only-password@h")).toMatchObject({
      username: null,
      password: "only-password",
    });
  });

  it("reads a cluster seed list including IPv6 literals", () => {
    expect(parseRedisUrl("redis+cluster://a:7000,b,[::1]:7002")).toMatchObject({
      mode: "cluster",
      hosts: [
        { host: "a", port: 7000 },
        { host: "b", port: 6379 },
        { host: "::1", port: 7002 },
      ],
    });
  });

  it("reads sentinels with their default port and the master name", () => {
    expect(parseRedisUrl("rediss+sentinel://s1,s2:26380/mymaster")).toMatchObject({
      mode: "sentinel",
      tls: true,
      hosts: [
        { host: "s1", port: 26379 },
        { host: "s2", port: 26380 },
      ],
      masterName: "mymaster",
    });
  });

  it("never puts the password in its error", () => {
    for (const url of [
      "redis://u:topsecret@a,b",
      "redis://u:topsecret@h:0",
      "redis://u:topsecret@h/x",
    ]) {
      const err = (() => {
        try {
          parseRedisUrl(url);
        } catch (e) {
          return e;
        }
        return null;
      })();
      expect(err).toBeInstanceOf(RedisUrlError);
      expect((err as Error).message).not.toContain("topsecret");
    }
  });
});

describe("maskUrlPassword", () => {
  it.each([
    ["redis://u:pw@h:1/0", "redis://u:[redacted]@h:1/0"],
    ["redis://:pw@h", "redis://:[redacted]@h"],
    ["redis://token@h", "redis://[redacted]@h"],
    ["redis://u:p/w@x@h", "redis://u:[redacted]@h"],
    ["redis://h:1", "redis://h:1"],
  ])("masks %s", (raw, masked) => {
    expect(maskUrlPassword(raw)).toBe(masked);
  });
});
