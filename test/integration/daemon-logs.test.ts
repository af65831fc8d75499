import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { type Simulator, startSimulator } from "../../src/sim/simulator.js";
import { jobBody } from "../fixtures/job.js";
import {
  eventsOf,
  freePort,
  reached,
  startTestDaemon,
  TEST_API_KEY,
  type TestDaemon,
} from "../helpers/daemon.js";
import { waitFor } from "../helpers/redis.js";
import { readAll, readUntil } from "../helpers/streams.js";

/**
 * CONTRACT §5 as far as a running daemon shows it: what its logs, /readyz and /metrics let out.
 * The API key never leaves the process; partnerSubjectId, lastError and errorDetail reach the
 * events (the partner's own data) and nothing else.
 */

let sim: Simulator | null = null;
let t: TestDaemon | null = null;

afterEach(async () => {
  await t?.stop();
  t = null;
  await sim?.close();
  sim = null;
});

const tag = () => randomBytes(6).toString("hex");

async function get(port: number, path: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, text: await res.text() };
}

describe("logs", () => {
  it("never carry the API key or patient fields, at trace level, through failures and dead_letter", async () => {
    const KEY = `SENTINEL-KEY-${tag()}`;
    const SUBJECT = `SENTINEL-SUBJECT-${tag()}`;
    const LAST_ERROR = `SENTINEL-LASTERROR-${tag()}`;
    const DETAIL = `SENTINEL-DETAIL-${tag()}`;
    const sentinels = [KEY, SUBJECT, LAST_ERROR, DETAIL];
    const s = await startSimulator({ apiKey: KEY, seed: 15 });
    sim = s;
    const patient = { partnerSubjectId: SUBJECT, lastError: LAST_ERROR, errorDetail: { DETAIL } };
    const jobId = s.addJob({
      maxAttempts: 2,
      ...patient,
      steps: [
        { afterMs: 0, status: "running" },
        { afterMs: 300, status: "failed", attempts: 1 },
        { afterMs: 600, status: "queued", attempts: 1 },
        { afterMs: 900, status: "running", attempts: 2 },
        { afterMs: 1200, status: "dead_letter", attempts: 2 },
      ],
    });
    // Broken answers full of patient values first: they are logged as invalid, never shown.
    const broken = { ...jobBody({ jobId, ...patient }), status: DETAIL };
    s.script(jobId, [
      { status: 200, body: `{"jobId":"${jobId}","partnerSubjectId":"${SUBJECT}","lastEr` },
      { status: 200, body: broken },
      { status: 200, body: { ...jobBody({ ...patient }), status: "running" } },
      { status: 500, body: { error: LAST_ERROR, detail: DETAIL } },
      { status: 418, body: { error: LAST_ERROR } },
      { status: 200, body: { ...broken, status: "running", attempts: SUBJECT } },
    ]);
    const port = await freePort();
    t = await startTestDaemon({
      sim: s,
      apiKey: KEY,
      env: {
        LOG_LEVEL: "trace",
        POLLER_FAILURE_ALERT_AFTER: "2",
        POLLER_HTTP_PORT: String(port),
        POLLER_HTTP_HOST: "127.0.0.1",
      },
    });
    await t.redis.sadd(t.keys.pending, jobId, `not-a-job-${SUBJECT.length}`);
    const events = await readUntil(t.redis, t.keys.events, (ev) =>
      eventsOf(ev, jobId).some((e) => e.type === "idunox.job.dead_lettered"),
    );
    const metrics = await get(port, "/metrics");

    // The run went through every path that writes text: invalid answers, poll_failed, dead_letter.
    const kinds = new Set(eventsOf(events, jobId).map((e) => e.type));
    expect(kinds).toContain("idunox.job.poll_failed");
    expect(reached(jobId, "dead_letter")(events)).toBe(true);
    expect(t.logs.filter((l) => l["msg"] === "invalid API response").length).toBeGreaterThan(0);
    expect(t.logs.some((l) => l["level"] === 10 || l["level"] === 20)).toBe(true);
    expect(t.logs.filter((l) => "unparsed" in l)).toEqual([]);

    const logText = t.logs.map((l) => JSON.stringify(l)).join("\n");
    expect(sentinels.filter((v) => logText.includes(v))).toEqual([]);
    expect(sentinels.filter((v) => metrics.text.includes(v))).toEqual([]);

    // The events carry the partner's data as the API gave it, and never the key.
    const stream = (await readAll(t.redis, t.keys.events)).map((e) => e.fields["data"]).join("\n");
    expect(stream).toContain(SUBJECT);
    expect(stream).toContain(LAST_ERROR);
    expect(stream).toContain(DETAIL);
    expect(stream).not.toContain(KEY);
  });
});

describe("POLLER_ALLOW_INSECURE_HTTP", () => {
  it("makes the daemon warn at start, and only when it is set", async () => {
    const s = await startSimulator({ apiKey: TEST_API_KEY, seed: 17 });
    sim = s;
    const warnings = (d: TestDaemon) =>
      d.logs.filter(
        (l) => l["level"] === 40 && String(l["msg"]).includes("POLLER_ALLOW_INSECURE_HTTP"),
      );
    t = await startTestDaemon({ sim: s });
    expect(warnings(t)).toEqual([]);
    await t.stop();
    t = await startTestDaemon({ sim: s, env: { POLLER_ALLOW_INSECURE_HTTP: "true" } });
    expect(warnings(t)).toHaveLength(1);
    expect(warnings(t)[0]?.["apiUrl"]).toBe(s.url);
  });
});

describe("/readyz and /metrics", () => {
  it("report the running daemon's state, and no job id in the metrics", async () => {
    const s = await startSimulator({ apiKey: TEST_API_KEY, seed: 16 });
    sim = s;
    const jobId = s.addJob({ steps: [{ afterMs: 0, status: "succeeded" }] });
    const waiting = s.addJob({ steps: [{ afterMs: 0, status: "running" }] });
    const port = await freePort();
    t = await startTestDaemon({
      sim: s,
      env: { POLLER_HTTP_PORT: String(port), POLLER_HTTP_HOST: "127.0.0.1" },
    });
    expect(t.daemon.httpPort).toBe(port);
    await t.redis.sadd(t.keys.pending, jobId, waiting, "not-a-uuid");
    await readUntil(
      t.redis,
      t.keys.events,
      (ev) => reached(jobId, "succeeded")(ev) && reached(waiting, "running")(ev),
    );

    const ready = await get(port, "/readyz");
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.text)).toMatchObject({ ready: true });
    expect((await get(port, "/healthz")).status).toBe(200);

    const metrics = await get(port, "/metrics");
    expect(metrics.status).toBe(200);
    expect(metrics.text).toMatch(/^idunox_poller_polls_total\{outcome="ok"\} [1-9]/m);
    expect(metrics.text).toMatch(/^idunox_poller_events_total\{type="status_changed"\} 2$/m);
    expect(metrics.text).toMatch(/^idunox_poller_events_total\{type="rejected"\} 1$/m);
    for (const id of [jobId, waiting, "not-a-uuid", TEST_API_KEY]) {
      expect(metrics.text).not.toContain(id);
    }
    // Every sample line names a metric of ours (no stray series from elsewhere).
    const samples = metrics.text.split("\n").filter((l) => l !== "" && !l.startsWith("#"));
    expect(samples.filter((l) => !l.startsWith("idunox_poller_"))).toEqual([]);

    // A rejected key takes the replica out of rotation, with the reason.
    s.setApiKey(`other-${tag()}`);
    const down = await waitFor(
      async () => {
        const r = await get(port, "/readyz");
        return r.status === 503 ? r : false;
      },
      { what: "/readyz to report the auth pause" },
    );
    const body = JSON.parse(down.text) as { ready: boolean; checks: Record<string, unknown> };
    expect(body.ready).toBe(false);
    expect(body.checks["apiKey"]).toEqual({ ok: false, reason: expect.stringMatching(/rejected/) });
    expect(await get(port, "/metrics").then((m) => m.text)).toMatch(/^idunox_poller_ready 0$/m);
  });
});
