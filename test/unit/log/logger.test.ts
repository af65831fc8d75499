import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger, serializeError, setSecretsForScrubbing } from "../../../src/log/logger.js";

const KEY = "sk_live_ABCDEF0123456789";

/** A logger writing into memory; `lines()` parses what it wrote so far. */
function memoryLogger(level = "trace") {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  const logger = createLogger({ level, destination, base: { service: "test" } });
  const lines = () =>
    chunks
      .join("")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const raw = () => chunks.join("");
  return { logger, lines, raw };
}

afterEach(() => setSecretsForScrubbing([]));

describe("redaction", () => {
  const levels = ["trace", "debug", "info", "warn", "error", "fatal"] as const;

  it.each(levels)("redacts the key and patient fields at level %s", (level) => {
    const { logger, lines, raw } = memoryLogger();
    logger[level](
      {
        apiKey: KEY,
        client: { apiKey: KEY },
        headers: { "x-api-key": KEY },
        req: { headers: { "x-api-key": KEY, accept: "application/json" } },
        partnerSubjectId: "patient-1",
        lastError: "patient-2",
        errorDetail: { mrn: "patient-3" },
        job: {
          jobId: "j1",
          partnerSubjectId: "patient-4",
          lastError: "patient-5",
          errorDetail: {},
        },
        outcome: { job: { partnerSubjectId: "patient-6", status: "failed" } },
        data: { job: { lastError: "patient-7", errorDetail: { x: "patient-8" } } },
      },
      "polled",
    );
    const [line] = lines();
    expect(line).toMatchObject({
      msg: "polled",
      service: "test",
      apiKey: "[redacted]",
      client: { apiKey: "[redacted]" },
      headers: { "x-api-key": "[redacted]" },
      req: { headers: { "x-api-key": "[redacted]", accept: "application/json" } },
      partnerSubjectId: "[redacted]",
      lastError: "[redacted]",
      errorDetail: "[redacted]",
      job: { jobId: "j1", partnerSubjectId: "[redacted]", lastError: "[redacted]" },
      outcome: { job: { partnerSubjectId: "[redacted]", status: "failed" } },
      data: { job: { lastError: "[redacted]", errorDetail: "[redacted]" } },
    });
    expect(raw()).not.toContain(KEY);
    expect(raw()).not.toContain("patient-");
  });

  it("redacts fields bound on a child logger", () => {
    const { logger, raw, lines } = memoryLogger();
    logger.child({ job: { jobId: "j2", partnerSubjectId: "patient-9" } }).info("bound");
    expect(lines()[0]).toMatchObject({ msg: "bound", job: { jobId: "j2" } });
    expect(raw()).not.toContain("patient-9");
  });

  it("writes nothing below the level", () => {
    const { logger, lines } = memoryLogger("warn");
    logger.info("quiet");
    logger.warn("loud");
    expect(lines().map((l) => l.msg)).toEqual(["loud"]);
  });
});

describe("errors", () => {
  function httpError(): Error {
    const err = new Error("request failed with 500") as Error & Record<string, unknown>;
    err.statusCode = 500;
    err.code = "UND_ERR_RESPONSE";
    err.body = { partnerSubjectId: "patient-10" };
    err.headers = { "x-api-key": KEY };
    err.response = { body: "patient-11" };
    err.command = { name: "eval", args: ["script", "patient-12"] };
    return err;
  }

  it("keeps the allow-listed fields and drops body, headers, response and command", () => {
    const { logger, lines, raw } = memoryLogger();
    logger.error({ err: httpError() }, "poll failed");
    const err = lines()[0]?.err as Record<string, unknown>;
    expect(err).toMatchObject({
      type: "Error",
      name: "Error",
      message: "request failed with 500",
      statusCode: 500,
      code: "UND_ERR_RESPONSE",
    });
    expect(typeof err.stack).toBe("string");
    for (const dropped of ["body", "headers", "response", "command"]) {
      expect(err).not.toHaveProperty(dropped);
    }
    expect(raw()).not.toContain("patient-");
    expect(raw()).not.toContain(KEY);
  });

  it("serializes an error passed as the first argument the same way", () => {
    const { logger, lines, raw } = memoryLogger();
    logger.warn(httpError(), "first argument");
    expect(lines()[0]).toMatchObject({ msg: "first argument", err: { statusCode: 500 } });
    expect(raw()).not.toContain("patient-");
  });

  it("follows the cause chain, depth-limited, and survives a cycle", () => {
    const inner = Object.assign(new Error("connect ECONNREFUSED"), {
      code: "ECONNREFUSED",
      errno: -111,
      syscall: "connect",
    });
    const outer = new Error("fetch failed", { cause: inner });
    expect(serializeError(outer)).toMatchObject({
      message: "fetch failed",
      cause: {
        message: "connect ECONNREFUSED",
        code: "ECONNREFUSED",
        errno: -111,
        syscall: "connect",
      },
    });

    const a = new Error("a") as Error & { cause?: unknown };
    const b = new Error("b", { cause: a });
    a.cause = b;
    let depth = 0;
    let node: Record<string, unknown> | undefined = serializeError(a);
    while (node !== undefined) {
      depth++;
      node = node.cause as Record<string, unknown> | undefined;
    }
    expect(depth).toBe(6);
  });

  it("keeps the errors of an AggregateError", () => {
    const agg = new AggregateError(
      [new Error("v4 refused"), new Error("v6 refused")],
      "connect failed",
    );
    const out = serializeError(agg);
    expect(out.type).toBe("AggregateError");
    expect((out.errors as Array<Record<string, unknown>>).map((e) => e.message)).toEqual([
      "v4 refused",
      "v6 refused",
    ]);
  });

  it("turns thrown non-errors into a typed message", () => {
    expect(serializeError("boom")).toEqual({ type: "string", message: "boom" });
    expect(serializeError(undefined)).toEqual({ type: "undefined", message: "undefined" });
    expect(serializeError({ message: "plain", body: "patient-13" })).toEqual({
      type: "Object",
      message: "plain",
    });
  });

  it("does not throw on an error whose getters throw", () => {
    const hostile = new Error("x");
    Object.defineProperty(hostile, "code", {
      get() {
        throw new Error("no");
      },
    });
    expect(serializeError(hostile)).toMatchObject({ type: "Error", serializeFailed: true });
  });
});

describe("scrubbing", () => {
  it("removes the key from error messages, stacks and causes", () => {
    setSecretsForScrubbing([KEY]);
    const { logger, raw, lines } = memoryLogger();
    const err = new Error(`bad header X-Api-Key: ${KEY}`, {
      cause: new Error(`inner ${KEY}`),
    });
    logger.error({ err }, "request failed");
    const out = lines()[0]?.err as Record<string, unknown>;
    expect(out.message).toBe("bad header X-Api-Key: [redacted]");
    expect(out.stack).toContain("[redacted]");
    expect(raw()).not.toContain(KEY);
  });

  it("removes the key from the log message and its format arguments", () => {
    setSecretsForScrubbing([KEY]);
    const { logger, raw, lines } = memoryLogger();
    logger.info(`key is ${KEY}`);
    logger.info("key %s here", KEY);
    expect(lines().map((l) => l.msg)).toEqual(["key is [redacted]", "key [redacted] here"]);
    expect(raw()).not.toContain(KEY);
  });

  it("follows a rotation: the new key is scrubbed, the old list replaced", () => {
    setSecretsForScrubbing(["old-key-111"]);
    setSecretsForScrubbing(["new-key-222"]);
    expect(serializeError(new Error("new-key-222 old-key-111")).message).toBe(
      "[redacted] old-key-111",
    );
  });

  it("scrubs a key with JSON-escaped characters", () => {
    const odd = 'k"ey\\with-quote';
    setSecretsForScrubbing([odd]);
    expect(serializeError(new Error(`x ${odd} y`)).message).toBe("x [redacted] y");
  });
});
