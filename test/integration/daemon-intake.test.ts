import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { CloudEvent } from "../../src/events/types.js";
import { answers, eventsOf, reached, simulatorPerTest, transitions } from "../helpers/daemon.js";
import { waitFor } from "../helpers/redis.js";
import { readAll, readUntil } from "../helpers/streams.js";

/** CONTRACT §1 and the 404 rule of §2: what happens to each member a producer writes. */

const scope = simulatorPerTest(12);

const doneAtOnce = () => scope.sim.addJob({ steps: [{ afterMs: 0, status: "succeeded" }] });

describe("the pending set", () => {
  it("picks up a job added while the daemon was down when it starts again", async () => {
    const before = doneAtOnce();
    const t = await scope.start();
    await t.redis.sadd(t.keys.pending, before);
    await readUntil(t.redis, t.keys.events, reached(before, "succeeded"));
    await t.daemon.stop();

    const whileDown = doneAtOnce();
    await t.redis.sadd(t.keys.pending, whileDown);
    expect(scope.sim.stats().byJob.get(whileDown)).toBeUndefined();
    await t.restart();
    const events = await readUntil(t.redis, t.keys.events, reached(whileDown, "succeeded"));
    expect(transitions(events, whileDown)).toEqual(["null>succeeded"]);
    expect(eventsOf(events, before)).toHaveLength(1);
    expect(await t.redis.scard(t.keys.pending)).toBe(0);
  });

  it("emits nothing again for a finished job that is added again, and lets it go again", async () => {
    const jobId = doneAtOnce();
    const t = await scope.start();
    await t.redis.sadd(t.keys.pending, jobId);
    await readUntil(t.redis, t.keys.events, reached(jobId, "succeeded"));
    expect(await t.redis.sismember(t.keys.pending, jobId)).toBe(0);
    const before = await readAll(t.redis, t.keys.events);
    const polls = scope.sim.stats().byJob.get(jobId) ?? 0;

    await t.redis.sadd(t.keys.pending, jobId);
    // The producer asked, so it is polled again, found final with nothing new, and removed.
    await waitFor(() => (scope.sim.stats().byJob.get(jobId) ?? 0) > polls, { what: "the re-poll" });
    await waitFor(async () => (await t?.redis.sismember(t.keys.pending, jobId)) === 0, {
      what: "the re-added job to leave pending",
    });
    expect(await readAll(t.redis, t.keys.events)).toEqual(before);
    expect(before).toHaveLength(1);
  });

  it("rejects every member that is not a job id, once each, and polls a UUID in any case", async () => {
    const bad = ["", "../../etc/passwd", "not-a-uuid", "x".repeat(10_240)];
    const upper = scope.sim.addJob({ steps: [{ afterMs: 0, status: "running" }] });
    scope.sim.script(
      upper,
      answers(upper, [{ status: "running" }, { status: "running" }, { status: "succeeded" }]),
    );
    const twice = doneAtOnce();
    const twiceMixed = twice.replace(/[a-f]/g, (c) => c.toUpperCase());
    expect(twiceMixed).not.toBe(twice);

    const t = await scope.start();
    await t.redis.sadd(t.keys.pending, ...bad, upper.toUpperCase(), twice, twiceMixed);
    const events = await readUntil(
      t.redis,
      t.keys.events,
      (ev) =>
        reached(upper, "succeeded")(ev) &&
        reached(twice, "succeeded")(ev) &&
        ev.filter((e) => e.event.type === "idunox.job.rejected").length >= bad.length,
    );

    // Valid ids: requested in lowercase (the client refuses anything else), reported under it.
    expect(transitions(events, upper)).toEqual(["null>running", "running>succeeded"]);
    expect(scope.sim.stats().byJob.get(upper)).toBe(3);
    expect(transitions(events, twice)).toEqual(["null>succeeded"]);
    expect(eventsOf(events, twiceMixed)).toEqual([]);

    // Invalid members: moved, never requested, one `rejected` event each.
    const rejected = events.filter((e) => e.event.type === "idunox.job.rejected");
    expect(rejected.map((e) => e.event.subject).sort()).toEqual([...bad].sort());
    for (const { event, fields } of rejected) {
      const { data } = event as CloudEvent<"rejected">;
      expect(data.member).toBe(event.subject);
      expect(data.reason).not.toBe("");
      if (event.subject !== "") expect(data.reason).not.toContain(event.subject);
      expect(event.sequence).toBe("0000000001");
      expect(fields["subject"]).toBe(event.subject);
    }
    expect(scope.sim.stats().requests).toBe(3 + (scope.sim.stats().byJob.get(twice) ?? 0));
    expect((await t.redis.smembers(t.keys.rejected)).sort()).toEqual([...bad].sort());

    const alerts = await readAll(t.redis, t.keys.alerts);
    expect(alerts.map((a) => a.event.id).sort()).toEqual(rejected.map((e) => e.event.id).sort());

    // Nothing is left behind: every spelling of a finished job left with it.
    expect(await t.redis.smembers(t.keys.pending)).toEqual([]);
    expect(events.filter((e) => e.event.type === "idunox.job.rejected")).toHaveLength(bad.length);
  });
});

describe("404", () => {
  it("waits out a 404 inside the grace, and reports not_found once past it", async () => {
    const late = scope.sim.addJob({
      visibleAfterMs: 300,
      steps: [
        { afterMs: 0, status: "queued" },
        { afterMs: 400, status: "succeeded" },
      ],
    });
    const missing = randomUUID();
    const t = await scope.start({ env: { POLLER_NOT_FOUND_GRACE_MS: "1500" } });
    await t.redis.sadd(t.keys.pending, late, missing);
    const events = await readUntil(
      t.redis,
      t.keys.events,
      (ev) =>
        reached(late, "succeeded")(ev) &&
        eventsOf(ev, missing).some((e) => e.type === "idunox.job.not_found"),
    );
    // The missing job leaves pending in the same write as its event.
    expect(await t.redis.sismember(t.keys.pending, missing)).toBe(0);

    expect(eventsOf(events, late).map((e) => e.type)).not.toContain("idunox.job.not_found");
    expect(transitions(events, late).at(-1)).toMatch(/>succeeded$/);
    // It was answered 404 while invisible, so the grace was really used.
    const attempts = t.logs.filter((l) => l["jobId"] === late && l["msg"] === "jobs api attempt");
    expect(attempts.map((l) => l["outcome"])).toContain("not_found");

    const gone = eventsOf(events, missing);
    expect(gone.map((e) => e.type)).toEqual(["idunox.job.not_found"]);
    const notFound = gone[0] as CloudEvent<"not_found">;
    expect(Object.keys(notFound.data).sort()).toEqual(["firstNotFoundAt", "jobId"]);
    expect(notFound.data.jobId).toBe(missing);
    expect(
      Date.parse(notFound.time) - Date.parse(notFound.data.firstNotFoundAt),
    ).toBeGreaterThanOrEqual(1500);
    const alerts = await readAll(t.redis, t.keys.alerts);
    expect(alerts.map((a) => a.event)).toEqual([notFound]);
  });
});
