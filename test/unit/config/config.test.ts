import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type Config, ConfigError, loadConfig, redactedConfig } from "../../../src/config/index.js";
import { KNOWN_ENV_NAMES, SETTINGS } from "../../../src/config/schema.js";

const KEY = "sk_test_0123456789abcdef";
const dir = mkdtempSync(join(tmpdir(), "poller-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

/** The problems loadConfig reports for an environment; fails the test if it does not throw. */
function problemsOf(env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    expect(e.code).toBe("CONFIG_INVALID");
    for (const p of e.problems) expect(e.message).toContain(p);
    return e.problems;
  }
  throw new Error("loadConfig accepted the environment");
}

function problemFor(env: NodeJS.ProcessEnv, name: string): string {
  const found = problemsOf(env).filter((p) => p.startsWith(`${name}:`));
  expect(found).toHaveLength(1);
  return found[0]!;
}

describe("defaults", () => {
  it("fills every setting from its default when only the key is given", () => {
    const c = loadConfig({ IDUNOX_API_KEY: KEY });
    const expected: Config = {
      apiUrl: "https://api-test.idunox.com",
      apiKey: KEY,
      apiKeyFile: null,
      redisUrl: "redis://127.0.0.1:6379",
      logLevel: "info",
      keyPrefix: "idunox:jobs:",
      minIntervalMs: 2000,
      maxIntervalMs: 60000,
      backoffFactor: 2,
      jitter: 0.2,
      schedule: "predictive",
      scheduleSyncMs: 5000,
      concurrency: 32,
      requestTimeoutMs: 10000,
      retries: 3,
      maxBodyBytes: 1048576,
      authRetryMs: 30000,
      notFoundGraceMs: 60000,
      failureAlertAfter: 10,
      stateTtlMs: 604800000,
      streamMaxLen: 1000000,
      eventSource: "urn:idunox:job-poller",
      httpPort: 9464,
      httpHost: "0.0.0.0",
      shutdownTimeoutMs: 10000,
      leaseMs: 30000,
      intakeIntervalMs: 100,
      claimBatch: 256,
      idleWakeMs: 500,
      rateLimit: 0,
      rateBurst: 1,
      replicaId: `${hostname()}-${process.pid}`,
      allowInsecureHttp: false,
    };
    expect(c).toEqual(expected);
  });

  it("treats an empty or blank value as unset", () => {
    const c = loadConfig({ IDUNOX_API_KEY: KEY, POLLER_CONCURRENCY: "", POLLER_JITTER: "  " });
    expect(c.concurrency).toBe(32);
    expect(c.jitter).toBe(0.2);
  });

  it("reads values from the environment, coerced to numbers", () => {
    const c = loadConfig({
      IDUNOX_API_KEY: KEY,
      POLLER_CONCURRENCY: "7",
      POLLER_JITTER: "0.5",
      POLLER_BACKOFF_FACTOR: "1.5",
      POLLER_HTTP_PORT: "0",
      LOG_LEVEL: "DEBUG",
      POLLER_REPLICA_ID: "pod-a",
    });
    expect(c).toMatchObject({
      concurrency: 7,
      jitter: 0.5,
      backoffFactor: 1.5,
      httpPort: 0,
      logLevel: "debug",
      replicaId: "pod-a",
    });
  });
});

describe("numeric bounds", () => {
  const base = { IDUNOX_API_KEY: KEY };
  const cases: Array<[string, string, string]> = [
    ["POLLER_CONCURRENCY", "0", "an integer from 1 to 1024"],
    ["POLLER_CONCURRENCY", "1025", "an integer from 1 to 1024"],
    ["POLLER_MIN_INTERVAL_MS", "9", "an integer from 10"],
    ["POLLER_BACKOFF_FACTOR", "0.5", "a number from 1 to 10"],
    ["POLLER_BACKOFF_FACTOR", "11", "a number from 1 to 10"],
    ["POLLER_JITTER", "1.01", "a number from 0 to 1"],
    ["POLLER_REQUEST_TIMEOUT_MS", "99", "an integer from 100 to 120000"],
    ["POLLER_RETRIES", "11", "an integer from 0 to 10"],
    ["POLLER_FAILURE_ALERT_AFTER", "0", "an integer from 1"],
    ["POLLER_STREAM_MAXLEN", "999", "an integer from 1000"],
    ["POLLER_HTTP_PORT", "65536", "an integer from 0 to 65535"],
    ["POLLER_LEASE_MS", "999", "an integer from 1000"],
    ["POLLER_CLAIM_BATCH", "1001", "an integer from 1 to 1000"],
  ];
  it.each(cases)("%s=%s is refused", (name, value, expectation) => {
    const problem = problemFor({ ...base, [name]: value }, name);
    expect(problem).toContain(`expected ${expectation}`);
    expect(problem).toContain(`got "${value}"`);
  });

  it.each(["abc", "1e3", "0x10", "-1", "3.5", "12abc"])("an integer setting refuses %j", (v) => {
    expect(problemFor({ ...base, POLLER_CONCURRENCY: v }, "POLLER_CONCURRENCY")).toBe(
      `POLLER_CONCURRENCY: expected an integer from 1 to 1024, got ${JSON.stringify(v)}`,
    );
  });

  it("accepts the edges of each range", () => {
    const c = loadConfig({
      ...base,
      POLLER_CONCURRENCY: "1024",
      POLLER_JITTER: "0",
      POLLER_BACKOFF_FACTOR: "10",
      POLLER_RETRIES: "0",
      POLLER_HTTP_PORT: "65535",
      POLLER_CLAIM_BATCH: "1",
    });
    expect(c).toMatchObject({ concurrency: 1024, jitter: 0, backoffFactor: 10, retries: 0 });
  });

  it("shortens a very long bad value", () => {
    const problem = problemFor(
      { ...base, POLLER_CONCURRENCY: "x".repeat(500) },
      "POLLER_CONCURRENCY",
    );
    expect(problem.length).toBeLessThan(200);
  });
});

describe("cross-field rules", () => {
  it("refuses a max interval below the min interval", () => {
    const problem = problemFor(
      { IDUNOX_API_KEY: KEY, POLLER_MIN_INTERVAL_MS: "5000", POLLER_MAX_INTERVAL_MS: "4000" },
      "POLLER_MAX_INTERVAL_MS",
    );
    expect(problem).toContain("POLLER_MIN_INTERVAL_MS (5000)");
    expect(loadConfig({ IDUNOX_API_KEY: KEY, POLLER_MAX_INTERVAL_MS: "2000" }).maxIntervalMs).toBe(
      2000,
    );
  });

  it("refuses a request timeout of half the lease or more", () => {
    const env = {
      IDUNOX_API_KEY: KEY,
      POLLER_LEASE_MS: "20000",
      POLLER_REQUEST_TIMEOUT_MS: "10000",
    };
    expect(problemFor(env, "POLLER_REQUEST_TIMEOUT_MS")).toContain(
      "half of POLLER_LEASE_MS (20000)",
    );
    expect(loadConfig({ ...env, POLLER_REQUEST_TIMEOUT_MS: "9999" }).requestTimeoutMs).toBe(9999);
  });
});

describe("every bad variable in one error", () => {
  it("lists each problem, one per variable", () => {
    const problems = problemsOf({
      IDUNOX_API_URL: "ftp://example.com",
      REDIS_URL: "mysql://localhost",
      LOG_LEVEL: "loud",
      POLLER_KEY_PREFIX: "has space",
      POLLER_CONCURRENCY: "abc",
      POLLER_JITTER: "2",
      POLLER_EVENT_SOURCE: "not a uri",
      POLLER_HTTP_PORT: "-1",
      POLLER_MIN_INTERVAL_MS: "5000",
      POLLER_MAX_INTERVAL_MS: "100",
      POLLER_CONCURENCY: "3",
    });
    const names = problems.map((p) => p.slice(0, p.indexOf(":")));
    expect(names).toEqual([
      "IDUNOX_API_URL",
      "REDIS_URL",
      "LOG_LEVEL",
      "POLLER_KEY_PREFIX",
      "POLLER_JITTER",
      "POLLER_CONCURRENCY",
      "POLLER_EVENT_SOURCE",
      "POLLER_HTTP_PORT",
      "POLLER_MAX_INTERVAL_MS",
      "IDUNOX_API_KEY",
      "POLLER_CONCURENCY",
    ]);
  });
});

describe("API key", () => {
  it("requires one of IDUNOX_API_KEY and IDUNOX_API_KEY_FILE", () => {
    expect(problemFor({}, "IDUNOX_API_KEY")).toContain("IDUNOX_API_KEY_FILE");
  });

  it("refuses both at once", () => {
    const path = file("both.key", KEY);
    const problems = problemsOf({ IDUNOX_API_KEY: KEY, IDUNOX_API_KEY_FILE: path });
    expect(problems).toEqual([
      "IDUNOX_API_KEY, IDUNOX_API_KEY_FILE: set exactly one of them, not both",
    ]);
  });

  it("reads the key from a file, trimmed, and remembers the path", () => {
    const path = file("good.key", `  ${KEY}\n`);
    const c = loadConfig({ IDUNOX_API_KEY_FILE: path });
    expect(c.apiKey).toBe(KEY);
    expect(c.apiKeyFile).toBe(path);
  });

  it("names an unreadable key file without its contents", () => {
    const missing = join(dir, "missing.key");
    expect(problemFor({ IDUNOX_API_KEY_FILE: missing }, "IDUNOX_API_KEY_FILE")).toBe(
      `IDUNOX_API_KEY_FILE: cannot read the file "${missing}" (ENOENT)`,
    );
    expect(problemFor({ IDUNOX_API_KEY_FILE: dir }, "IDUNOX_API_KEY_FILE")).toContain("EISDIR");
  });

  it("refuses an empty key file and one holding more than a key, never showing it", () => {
    const empty = file("empty.key", "\n\n");
    expect(problemFor({ IDUNOX_API_KEY_FILE: empty }, "IDUNOX_API_KEY_FILE")).toContain("is empty");
    const secret = "line-one-secret\nline-two-secret";
    const messy = file("messy.key", secret);
    const problem = problemFor({ IDUNOX_API_KEY_FILE: messy }, "IDUNOX_API_KEY_FILE");
    expect(problem).toContain("contents not shown");
    expect(problem).not.toContain("secret");
  });

  it("never echoes the key, even when other settings are bad", () => {
    const bad = `${KEY} with spaces`;
    let message = "";
    try {
      loadConfig({ IDUNOX_API_KEY: bad, POLLER_CONCURRENCY: "abc" });
    } catch (err) {
      message = `${(err as Error).message} ${(err as Error).stack}`;
    }
    expect(message).toContain("IDUNOX_API_KEY: expected printable ASCII without spaces");
    expect(message).toContain("POLLER_CONCURRENCY");
    expect(message).not.toContain(KEY);
  });

  it("never echoes a valid key placed where a problem is reported", () => {
    let message = "";
    try {
      loadConfig({ IDUNOX_API_KEY: KEY, POLLER_EVENT_SOURCE: "a b" });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain("POLLER_EVENT_SOURCE");
    expect(message).not.toContain(KEY);
  });
});

describe("unknown POLLER_ names", () => {
  it("reports a typo with a suggestion and the known names", () => {
    const problem = problemFor(
      { IDUNOX_API_KEY: KEY, POLLER_CONCURENCY: "3" },
      "POLLER_CONCURENCY",
    );
    expect(problem).toContain("unknown setting");
    expect(problem).toContain("did you mean POLLER_CONCURRENCY?");
    for (const name of KNOWN_ENV_NAMES.filter((n) => n.startsWith("POLLER_"))) {
      expect(problem).toContain(name);
    }
  });

  it("ignores variables outside the POLLER_ namespace", () => {
    expect(loadConfig({ IDUNOX_API_KEY: KEY, PATH: "/bin", POLLERX: "1" }).concurrency).toBe(32);
  });
});

describe("URLs and names", () => {
  const base = { IDUNOX_API_KEY: KEY };

  it("drops the trailing slash of the API URL and keeps a path prefix", () => {
    expect(loadConfig({ ...base, IDUNOX_API_URL: "http://localhost:8080/" }).apiUrl).toBe(
      "http://localhost:8080",
    );
    expect(loadConfig({ ...base, IDUNOX_API_URL: "https://gw.example/idunox//" }).apiUrl).toBe(
      "https://gw.example/idunox",
    );
  });

  it.each([
    ["ftp://example.com", "http:// or https://"],
    ["not a url", "an http(s) URL"],
    ["https://example.com/?a=1", "query"],
    ["https://user:pw@example.com", "credentials"],
  ])("refuses IDUNOX_API_URL=%s", (value, reason) => {
    const problem = problemFor({ ...base, IDUNOX_API_URL: value }, "IDUNOX_API_URL");
    expect(problem).toContain(reason);
    expect(problem).not.toContain(":pw@");
  });

  it.each([
    "http://127.0.0.1:4010",
    "http://127.9.8.7",
    "http://127.1:8080",
    "http://localhost:4010/api",
    "http://LOCALHOST",
    "http://[::1]:4010",
    "http://[0:0:0:0:0:0:0:1]",
    "https://api.example",
  ])("accepts IDUNOX_API_URL=%s (TLS or a loopback host)", (url) => {
    expect(loadConfig({ ...base, IDUNOX_API_URL: url }).apiUrl).toMatch(/^https?:\/\//);
  });

  it.each([
    "http://api.example",
    "http://10.0.0.5:4010",
    "http://128.0.0.1",
    "http://127.0.0.1.example",
    "http://localhost.example",
    "http://[::2]",
    "http://simulator:4010",
  ])("refuses IDUNOX_API_URL=%s: the key would travel in clear text", (url) => {
    const problem = problemFor({ ...base, IDUNOX_API_URL: url }, "IDUNOX_API_URL");
    expect(problem).toContain("clear text");
    expect(problem).toContain("POLLER_ALLOW_INSECURE_HTTP=true");
  });

  it("accepts a plain-HTTP remote API URL only with POLLER_ALLOW_INSECURE_HTTP=true", () => {
    const env = { ...base, IDUNOX_API_URL: "http://simulator:4010" };
    expect(loadConfig({ ...env, POLLER_ALLOW_INSECURE_HTTP: "true" })).toMatchObject({
      apiUrl: "http://simulator:4010",
      allowInsecureHttp: true,
    });
    expect(problemFor({ ...env, POLLER_ALLOW_INSECURE_HTTP: "false" }, "IDUNOX_API_URL")).toContain(
      "clear text",
    );
    expect(
      problemFor({ ...env, POLLER_ALLOW_INSECURE_HTTP: "yes" }, "POLLER_ALLOW_INSECURE_HTTP"),
    ).toContain("true or false");
  });

  it.each([
    "redis://127.0.0.1:6379",
    "rediss://user:pa%40ss@redis.example:6380/2",
    "redis+cluster://n1:7000,n2:7001,[::1]:7002",
    "rediss+cluster://n1",
    "redis+sentinel://s1:26379,s2:26379/mymaster",
    "rediss+sentinel://:pw@s1/mymaster",
  ])("accepts REDIS_URL=%s", (url) => {
    // A cluster needs a hash-tagged prefix (checked below); give every URL one.
    expect(
      loadConfig({ ...base, REDIS_URL: url, POLLER_KEY_PREFIX: "{idunox}:jobs:" }).redisUrl,
    ).toBe(url);
  });

  it("refuses a Cluster URL with a prefix that has no hash tag", () => {
    const problems = problemsOf({ ...base, REDIS_URL: "redis+cluster://n1:7000" });
    expect(problems.join("\n")).toMatch(/POLLER_KEY_PREFIX: a Redis Cluster needs a hash tag/);
  });

  it.each([
    ["http://localhost:6379", "expected redis://"],
    ["redis://a:1,b:2", "redis+cluster://"],
    ["redis+sentinel://s1:26379", "master name"],
    ["redis+cluster://n1/3", "no path"],
    ["redis://h:99999", "host[:port]"],
    ["redis://h/x", "database number"],
    ["redis://h?tls=true", "no query string"],
  ])("refuses REDIS_URL=%s", (url, reason) => {
    expect(problemFor({ ...base, REDIS_URL: url }, "REDIS_URL")).toContain(reason);
  });

  it("hides the Redis password in a problem line", () => {
    const problem = problemFor({ ...base, REDIS_URL: "redis://u:hunter2@a,b" }, "REDIS_URL");
    expect(problem).toContain("redis://u:[redacted]@a,b");
    expect(problem).not.toContain("hunter2");
  });

  it.each(["{idunox}:jobs:", "idunox:{tenant-1}:jobs:", "a"])("accepts the key prefix %s", (p) => {
    expect(loadConfig({ ...base, POLLER_KEY_PREFIX: p }).keyPrefix).toBe(p);
  });

  it.each(["has space", "{}:jobs:", "{idunox:jobs:", "idunox}:jobs:", "{a}{b}:", "x".repeat(201)])(
    "refuses the key prefix %j",
    (p) => {
      expect(problemFor({ ...base, POLLER_KEY_PREFIX: p }, "POLLER_KEY_PREFIX")).toBeTruthy();
    },
  );

  it("accepts URI references as the event source and refuses other text", () => {
    const ok = "https://poller.example/replica%201#a";
    expect(loadConfig({ ...base, POLLER_EVENT_SOURCE: ok }).eventSource).toBe(ok);
    expect(problemFor({ ...base, POLLER_EVENT_SOURCE: "bad%zz" }, "POLLER_EVENT_SOURCE")).toContain(
      "URI reference",
    );
  });

  it("refuses an unknown log level and a replica id with spaces", () => {
    expect(problemFor({ ...base, LOG_LEVEL: "verbose" }, "LOG_LEVEL")).toContain("one of fatal");
    expect(problemFor({ ...base, POLLER_REPLICA_ID: "a b" }, "POLLER_REPLICA_ID")).toContain(
      "printable",
    );
  });
});

describe("config file", () => {
  it("fills settings from the file and lets the environment win", () => {
    const path = file(
      "file.json",
      JSON.stringify({ POLLER_CONCURRENCY: 8, POLLER_JITTER: "0.1", LOG_LEVEL: "warn" }),
    );
    const c = loadConfig({ IDUNOX_API_KEY: KEY, POLLER_CONFIG_FILE: path, LOG_LEVEL: "error" });
    expect(c).toMatchObject({ concurrency: 8, jitter: 0.1, logLevel: "error" });
  });

  it("says which file a bad value came from", () => {
    const path = file("bad-value.json", JSON.stringify({ POLLER_CONCURRENCY: 0 }));
    expect(
      problemFor({ IDUNOX_API_KEY: KEY, POLLER_CONFIG_FILE: path }, "POLLER_CONCURRENCY"),
    ).toBe(`POLLER_CONCURRENCY: expected an integer from 1 to 1024, got "0" (set in ${path})`);
  });

  it("refuses unknown names, nested values and a nested config file", () => {
    const path = file(
      "unknown.json",
      JSON.stringify({ SOMETHING_ELSE: "1", POLLER_RETRIES: [1], POLLER_CONFIG_FILE: "x.json" }),
    );
    const problems = problemsOf({ IDUNOX_API_KEY: KEY, POLLER_CONFIG_FILE: path });
    expect(problems).toHaveLength(3);
    expect(problems.join("\n")).toMatch(/^SOMETHING_ELSE: unknown setting/m);
    expect(problems.join("\n")).toMatch(/^POLLER_RETRIES: expected a string or a number/m);
    expect(problems.join("\n")).toMatch(/^POLLER_CONFIG_FILE: cannot be set inside/m);
  });

  it.each([
    ["missing.json", null, "cannot be read (ENOENT)"],
    ["broken.json", "{not json", "is not valid JSON"],
    ["array.json", "[]", "one JSON object"],
  ])("reports a config file %s that cannot be used", (name, content, reason) => {
    const path = content === null ? join(dir, name) : file(name, content);
    expect(
      problemFor({ IDUNOX_API_KEY: KEY, POLLER_CONFIG_FILE: path }, "POLLER_CONFIG_FILE"),
    ).toContain(reason);
  });

  it("ships an example that lists every setting with its default", () => {
    const examplePath = new URL("../../../config/poller.example.json", import.meta.url);
    const example = JSON.parse(readFileSync(examplePath, "utf8")) as Record<string, unknown>;
    const expectedNames = KNOWN_ENV_NAMES.filter((n) => n !== "POLLER_CONFIG_FILE");
    expect(Object.keys(example).sort()).toEqual([...expectedNames].sort());
    for (const s of Object.values(SETTINGS)) {
      if (typeof s.fallback === "string") expect(String(example[s.env])).toBe(s.fallback);
    }
    const fromExample = loadConfig({
      IDUNOX_API_KEY: KEY,
      POLLER_CONFIG_FILE: examplePath.pathname,
    });
    expect(fromExample).toEqual(loadConfig({ IDUNOX_API_KEY: KEY }));
  });
});

describe("the request budget settings", () => {
  it("default to no fixed limit and a bucket of one", () => {
    expect(loadConfig({ IDUNOX_API_KEY: KEY })).toMatchObject({ rateLimit: 0, rateBurst: 1 });
  });

  it("default the bucket to the limit, rounded up, and keep an explicit one", () => {
    expect(loadConfig({ IDUNOX_API_KEY: KEY, POLLER_RATE_LIMIT: "200" })).toMatchObject({
      rateLimit: 200,
      rateBurst: 200,
    });
    expect(loadConfig({ IDUNOX_API_KEY: KEY, POLLER_RATE_LIMIT: "0.5" })).toMatchObject({
      rateLimit: 0.5,
      rateBurst: 1,
    });
    expect(
      loadConfig({ IDUNOX_API_KEY: KEY, POLLER_RATE_LIMIT: "200", POLLER_RATE_BURST: "20" }),
    ).toMatchObject({ rateLimit: 200, rateBurst: 20 });
  });

  it.each([
    ["POLLER_RATE_LIMIT", "-1", "a number from 0 to 1000000"],
    ["POLLER_RATE_LIMIT", "2000000", "a number from 0 to 1000000"],
    ["POLLER_RATE_LIMIT", "fast", "a number from 0 to 1000000"],
    ["POLLER_RATE_BURST", "1.5", "an integer from 0 to 1000000"],
    ["POLLER_RATE_BURST", "-2", "an integer from 0 to 1000000"],
  ])("refuses %s=%s", (name, value, expected) => {
    expect(problemFor({ IDUNOX_API_KEY: KEY, [name]: value }, name)).toContain(expected);
  });
});

describe("redactedConfig", () => {
  it("hides the API key and the Redis password and keeps the rest", () => {
    const c = loadConfig({ IDUNOX_API_KEY: KEY, REDIS_URL: "rediss://app:s3cr3t@redis:6380/1" });
    const r = redactedConfig(c);
    expect(r.apiKey).toBe("[redacted]");
    expect(r.redisUrl).toBe("rediss://app:[redacted]@redis:6380/1");
    expect(r.concurrency).toBe(32);
    const text = JSON.stringify(r);
    expect(text).not.toContain(KEY);
    expect(text).not.toContain("s3cr3t");
  });
});
