import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { buildEvent, streamFields } from "../../src/events/cloudevents.js";
import type { CloudEvent } from "../../src/events/types.js";
import { jobBody } from "../fixtures/job.js";
import { ROOT } from "../helpers/processes.js";
import { cleanPrefix, redisClient, TEST_REDIS_URL, testPrefix, waitFor } from "../helpers/redis.js";

const EXAMPLE = fileURLToPath(new URL("../../examples/consumer.mjs", import.meta.url));
const GROUP = "billing";

/**
 * Runs examples/consumer.mjs as its own process, the way an operator would. It imports the
 * package by name; the `idunox-source` condition resolves that to the TypeScript sources (run
 * through tsx), so no build is needed. test/integration/package.test.ts runs it from the
 * packed tarball.
 */
function startConsumer(env: Record<string, string>, args: string[] = []) {
  const child = spawn(
    process.execPath,
    ["--conditions=idunox-source", "--import", "tsx", EXAMPLE, ...args],
    {
      cwd: ROOT,
      env: { PATH: process.env.PATH, REDIS_URL: TEST_REDIS_URL, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const lines: string[] = [];
  let partial = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    const parts = (partial + chunk).split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts);
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = once(child, "exit").then(([code, signal]) => (code === null ? signal : code));
  return {
    child,
    lines,
    exited,
    stderr: () => stderr,
    waitForLine: (re: RegExp) =>
      waitFor(() => lines.find((l) => re.test(l)), { what: `a line matching ${re}` }),
  };
}

/** CloudEvent ids of the `handled` lines, in order. */
function handledIds(lines: string[]): string[] {
  return lines.flatMap((l) => /^handled .* id=(\S+)/.exec(l)?.[1] ?? []);
}

describe("examples/consumer.mjs", () => {
  let redis: Redis;
  let prefix: string;
  let stream: string;
  const children: Array<ReturnType<typeof startConsumer>> = [];

  // Written exactly as the daemon writes them: the structured event in `data`, attributes beside.
  async function publish(event: CloudEvent): Promise<string> {
    const [data, id, type, subject, time] = streamFields(event);
    const entryId = await redis.xadd(
      stream,
      "*",
      "data",
      data,
      "id",
      id,
      "type",
      type,
      "subject",
      subject,
      "time",
      time,
    );
    return entryId as string;
  }

  function statusEvent(sequence: number, status: "queued" | "running" | "succeeded") {
    const subject = randomUUID();
    return buildEvent({
      kind: "status_changed",
      source: "urn:test",
      subject,
      epoch: "e1",
      sequence,
      timeMs: Date.now(),
      data: {
        jobId: subject,
        previousStatus: null,
        status,
        job: jobBody({ jobId: subject, status }),
      },
    });
  }

  function consumer(name: string, env: Record<string, string> = {}, args: string[] = []) {
    const c = startConsumer(
      { POLLER_KEY_PREFIX: prefix, CONSUMER_GROUP: GROUP, CONSUMER_NAME: name, ...env },
      args,
    );
    children.push(c);
    return c;
  }

  async function pendingCount(): Promise<number> {
    const summary = (await redis.xpending(stream, GROUP)) as [number, ...unknown[]];
    return summary[0];
  }

  beforeEach(() => {
    redis = redisClient();
    prefix = testPrefix();
    stream = `${prefix}events`;
  });

  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
    }
    await cleanPrefix(redis, prefix);
    redis.disconnect();
  });

  it("creates its group, handles each event once, skips a duplicate id and acks everything", async () => {
    const c = consumer("c1", {}, ["--count", "4"]);
    await c.waitForLine(/^consumer ready /);
    const events = [statusEvent(1, "queued"), statusEvent(1, "running"), statusEvent(1, "queued")];
    for (const e of events) await publish(e);
    // The same logical event a second time (a producer retry): same CloudEvent id, new entry.
    await publish(events[0]!);

    expect(await c.exited).toBe(0);
    expect(handledIds(c.lines)).toEqual(events.map((e) => e.id));
    expect(c.lines.filter((l) => l.startsWith("skipped duplicate"))).toEqual([
      expect.stringContaining(`id=${events[0]!.id}`),
    ]);
    expect(await pendingCount()).toBe(0);
    const groups = (await redis.xinfo("GROUPS", stream)) as unknown[][];
    const info = groups[0]!;
    expect(info[info.indexOf("name") + 1]).toBe(GROUP);
    expect(info[info.indexOf("lag") + 1]).toBe(0);
  });

  it("handles an entry left pending by a killed consumer once: a restart under the same name re-reads it", async () => {
    await redis.xgroup("CREATE", stream, GROUP, "0", "MKSTREAM");
    const events = [statusEvent(1, "queued"), statusEvent(1, "running"), statusEvent(1, "queued")];
    for (const e of events) await publish(e);

    const first = consumer("c1", { HANDLER_DELAY_MS: "1500" });
    await first.waitForLine(/^handled /);
    // All three were delivered in one read; once the first is acked, the second is mid-handler.
    await waitFor(async () => (await pendingCount()) === 2, { what: "first entry acked" });
    first.child.kill("SIGKILL");
    await first.exited;

    const second = consumer("c1", {}, ["--count", "2"]);
    expect(await second.exited).toBe(0);
    const all = [...handledIds(first.lines), ...handledIds(second.lines)];
    expect(all.sort()).toEqual(events.map((e) => e.id).sort());
    expect(handledIds(first.lines)).toEqual([events[0]!.id]);
    expect(await pendingCount()).toBe(0);
  });

  it("another consumer claims the dead consumer's idle entries with XAUTOCLAIM, once each", async () => {
    await redis.xgroup("CREATE", stream, GROUP, "0", "MKSTREAM");
    const events = [statusEvent(1, "queued"), statusEvent(1, "running"), statusEvent(1, "queued")];
    for (const e of events) await publish(e);

    const dead = consumer("c1", { HANDLER_DELAY_MS: "1500" });
    await dead.waitForLine(/^handled /);
    await waitFor(async () => (await pendingCount()) === 2, { what: "first entry acked" });
    dead.child.kill("SIGKILL");
    await dead.exited;

    const other = consumer("c2", { CLAIM_IDLE_MS: "200" }, ["--count", "2"]);
    expect(await other.exited).toBe(0);
    expect(handledIds(other.lines).sort()).toEqual([events[1]!.id, events[2]!.id].sort());
    expect(handledIds(dead.lines)).toEqual([events[0]!.id]);
    expect(await pendingCount()).toBe(0);
  });

  it("stops cleanly on SIGTERM with exit code 0", async () => {
    const c = consumer("c1");
    await c.waitForLine(/^consumer ready /);
    c.child.kill("SIGTERM");
    expect(await c.exited).toBe(0);
    expect(c.lines.at(-1)).toBe("consumer stopped after 0 entries");
  });
});
