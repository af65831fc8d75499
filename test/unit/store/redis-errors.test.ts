import { describe, expect, it } from "vitest";
import { classifyRedisError, redisAttempt } from "../../../src/store/redis-errors.js";

/** The shapes ioredis and node hand over, as seen against real servers. */
function err(message: string, extra: Record<string, unknown> = {}): Error {
  return Object.assign(new Error(message), extra);
}

const URL = "redis://user:hunter2@cache.internal:6380/2";
const SHOWN = "redis://user:[redacted]@cache.internal:6380/2";

describe("classifyRedisError", () => {
  it.each([
    [
      err("connect ECONNREFUSED 10.0.0.1:6380", { code: "ECONNREFUSED" }),
      "refused",
      `cannot reach Redis at ${SHOWN} (connection refused)`,
    ],
    [
      err("getaddrinfo ENOTFOUND cache.internal", { code: "ENOTFOUND" }),
      "host_not_found",
      `cannot reach Redis at ${SHOWN} (host not found)`,
    ],
    [
      err("connect ETIMEDOUT", { code: "ETIMEDOUT" }),
      "timeout",
      `cannot reach Redis at ${SHOWN} (no answer: timed out)`,
    ],
    [
      err("NOAUTH Authentication required."),
      "auth_required",
      `Redis at ${SHOWN} requires a password (NOAUTH): put it in the URL, e.g. redis://:PASSWORD@host:port`,
    ],
    [
      err("WRONGPASS invalid username-password pair or user is disabled."),
      "auth_failed",
      `Redis at ${SHOWN} refused the user or password in the URL (WRONGPASS)`,
    ],
    [
      err("write ECONNRESET", { code: "ECONNRESET" }),
      "closed",
      `cannot reach Redis at ${SHOWN} (connection closed by the server)`,
    ],
    [
      err("Connection is closed."),
      "closed",
      `cannot reach Redis at ${SHOWN} (connection closed by the server)`,
    ],
    [
      err("LOADING Redis is loading the dataset in memory"),
      "loading",
      `Redis at ${SHOWN} is still loading its data set`,
    ],
  ])("%s -> %s", (e, kind, line) => {
    expect(classifyRedisError(e, URL)).toEqual({ kind, line });
  });

  it("looks inside a Cluster's last node error", () => {
    const e = err("Failed to refresh slots cache.", {
      lastNodeError: err("ERR This instance has cluster support disabled"),
    });
    expect(classifyRedisError(e, "redis+cluster://a:7000,b:7001").kind).toBe("not_cluster");
  });

  it("tells a TLS client that met a plain server, and a failed certificate check", () => {
    const plain = err("ssl3_get_record:wrong version number", {
      code: "ERR_SSL_WRONG_VERSION_NUMBER",
    });
    expect(classifyRedisError(plain, "rediss://h:6379").line).toBe(
      "TLS mismatch at rediss://h:6379: the server speaks plain Redis, not TLS (use redis://)",
    );
    const cert = err("self-signed certificate", { code: "DEPTH_ZERO_SELF_SIGNED_CERT" });
    expect(classifyRedisError(cert, "rediss://h:6379").line).toBe(
      "TLS handshake with Redis at rediss://h:6379 failed (DEPTH_ZERO_SELF_SIGNED_CERT)",
    );
  });

  it("says a bounded wait in seconds when the caller waited", () => {
    const e = err("Command timed out");
    expect(classifyRedisError(e, "redis://h:1", { waitedMs: 3000 }).line).toBe(
      "cannot reach Redis at redis://h:1 (no answer within 3 s)",
    );
  });

  it("keeps an unknown reply to its first line and never shows the password", () => {
    const e = err("ERR something odd\n    at Parser.execute (/x/y.js:1:1)");
    const { kind, line } = classifyRedisError(e, URL);
    expect(kind).toBe("other");
    expect(line).toBe(`Redis at ${SHOWN} failed: ERR something odd`);
    expect(line).not.toContain("hunter2");
  });
});

describe("redisAttempt", () => {
  it("says what connecting involves for each URL form, without the password", () => {
    expect(redisAttempt(URL)).toBe("connect to cache.internal:6380 with a password, db 2");
    expect(redisAttempt("rediss+cluster://a:7000,b:7001")).toBe(
      "ask the cluster seed nodes a:7000,b:7001 over TLS for the slot map",
    );
    expect(redisAttempt("redis+sentinel://s1:26379/main")).toBe(
      'ask the sentinels s1:26379 for master "main"',
    );
  });
});
