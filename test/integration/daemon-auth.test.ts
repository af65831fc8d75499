import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { jobBody } from "../fixtures/job.js";
import {
  logsWith,
  reached,
  simulatorPerTest,
  TEST_API_KEY,
  transitions,
} from "../helpers/daemon.js";
import { waitFor } from "../helpers/redis.js";
import { readUntil } from "../helpers/streams.js";

/**
 * CONTRACT §2, 401/403: a rejected key pauses polling for every job, takes readiness down, emits
 * nothing and removes nothing; the daemon probes every POLLER_AUTH_RETRY_MS and resumes by itself.
 */

const scope = simulatorPerTest(14);
let dir: string | null = null;

afterEach(async () => {
  if (dir !== null) await rm(dir, { recursive: true, force: true });
  dir = null;
});

/** Jobs that run until a scripted `succeeded` is queued for them. */
function runningJobs(n: number): string[] {
  return Array.from({ length: n }, () =>
    scope.sim.addJob({ steps: [{ afterMs: 0, status: "running" }] }),
  );
}

/** Queues the final answer; newer than anything the lifecycle served, so it is not stale. */
function finish(jobIds: readonly string[]): void {
  const updatedAt = new Date(Date.now() + 60_000).toISOString();
  for (const jobId of jobIds) {
    scope.sim.script(jobId, [
      { status: 200, body: jobBody({ jobId, status: "succeeded", updatedAt }) },
    ]);
  }
}

describe("a rejected API key", () => {
  it("pauses every job without events or removals, and resumes when the key works again", async () => {
    const jobs = runningJobs(3);
    const t = await scope.start();
    const { redis, keys, daemon } = t;
    await redis.sadd(keys.pending, ...jobs);
    await readUntil(redis, keys.events, (ev) => jobs.every((j) => reached(j, "running")(ev)));
    expect(daemon.readiness().ready).toBe(true);

    scope.sim.setApiKey(`other-${randomUUID()}`);
    await waitFor(() => !daemon.readiness().ready, { what: "the auth pause" });
    const readiness = daemon.readiness();
    expect(readiness.checks["apiKey"]).toEqual({ ok: false, reason: expect.stringMatching(/401/) });
    expect(readiness.checks["redis"]?.ok).toBe(true);
    const eventsAtPause = await redis.xlen(keys.events);

    // Two failed probes later the daemon is still paused, and nothing moved.
    await waitFor(() => logsWith(t?.logs ?? [], "API key still rejected").length >= 2, {
      what: "two auth probes",
    });
    expect(daemon.readiness().ready).toBe(false);
    expect(await redis.xlen(keys.events)).toBe(eventsAtPause);
    expect((await redis.smembers(keys.pending)).sort()).toEqual([...jobs].sort());
    expect(logsWith(t.logs, "API key rejected: polling paused for all jobs")).toHaveLength(1);

    finish(jobs);
    scope.sim.setApiKey(TEST_API_KEY);
    await waitFor(() => daemon.readiness().ready, { what: "readiness after the key works" });
    const events = await readUntil(redis, keys.events, (ev) =>
      jobs.every((j) => reached(j, "succeeded")(ev)),
    );
    for (const jobId of jobs) {
      expect(transitions(events, jobId)).toEqual(["null>running", "running>succeeded"]);
    }
    expect(await redis.scard(keys.pending)).toBe(0);
    expect(logsWith(t.logs, "API key accepted again: polling resumed").length).toBeGreaterThan(0);
  });

  it("picks up a key rotated in IDUNOX_API_KEY_FILE at the next auth retry", async () => {
    dir = await mkdtemp(join(tmpdir(), "poller-key-"));
    const keyFile = join(dir, "api-key");
    const oldKey = `old-${randomUUID()}`;
    const newKey = `new-${randomUUID()}`;
    await writeFile(keyFile, `${oldKey}\n`);
    scope.sim.setApiKey(newKey);
    const jobs = runningJobs(2);

    const t = await scope.start({ env: { IDUNOX_API_KEY_FILE: keyFile } });
    const { redis, keys, daemon } = t;
    await redis.sadd(keys.pending, ...jobs);
    await waitFor(() => !daemon.readiness().ready, { what: "the auth pause" });
    expect(await redis.xlen(keys.events)).toBe(0);
    expect(await redis.scard(keys.pending)).toBe(2);

    // A mounted secret is replaced in place; no restart, no signal.
    finish(jobs);
    await writeFile(keyFile, `${newKey}\n`);
    await waitFor(() => daemon.readiness().ready, { what: "readiness after the rotation" });
    const events = await readUntil(redis, keys.events, (ev) =>
      jobs.every((j) => reached(j, "succeeded")(ev)),
    );
    // Nothing was observed while paused, so the first event is the first answer after it.
    for (const jobId of jobs) expect(transitions(events, jobId)).toEqual(["null>succeeded"]);
    expect(logsWith(t.logs, "API key file changed: using the new key")).toHaveLength(1);
    const text = JSON.stringify(t.logs);
    expect(text).not.toContain(oldKey);
    expect(text).not.toContain(newKey);
  });
});
