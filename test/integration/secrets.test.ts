import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Redis } from "ioredis";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config/index.js";
import { freePort } from "../../src/lib/net.js";
import { type Simulator, startSimulator } from "../../src/sim/simulator.js";
import { jobBody } from "../fixtures/job.js";
import { type CliProcess, runCli, runCliToEnd } from "../helpers/processes.js";
import { cleanPrefix, redisClient, TEST_REDIS_URL, testPrefix, waitFor } from "../helpers/redis.js";
import { readAll } from "../helpers/streams.js";

/**
 * Sentinel values for every secret, driven through every code path that writes text: they may
 * show up in the events stream (and `tail --json`, which prints events) and nowhere else.
 */
const tag = () => randomBytes(6).toString("hex");
const API_KEY = `SENTINEL-APIKEY-${tag()}`;
const SUBJECT = `SENTINEL-SUBJECT-${tag()}`;
const LAST_ERROR = `SENTINEL-LASTERROR-${tag()}`;
const DETAIL = `SENTINEL-DETAIL-${tag()}`;
const PATIENT = [SUBJECT, LAST_ERROR, DETAIL];
const ALL = [API_KEY, ...PATIENT];

function leaked(text: string, secrets: readonly string[] = ALL): string[] {
  return secrets.filter((s) => text.includes(s));
}

async function get(url: string): Promise<{ status: number; text: string }> {
  const res = await request(url);
  return { status: res.statusCode, text: await res.body.text() };
}

let sim: Simulator;
let redis: Redis;
let prefix: string;
let tmp: string;
const captured: Array<{ what: string; text: string }> = [];
const capture = (what: string, text: string) => captured.push({ what, text });

beforeAll(async () => {
  sim = await startSimulator({ apiKey: API_KEY, seed: 99 });
  redis = redisClient();
  prefix = testPrefix();
  tmp = mkdtempSync(join(tmpdir(), "idunox-secrets-"));
});

afterAll(async () => {
  await sim?.close();
  await cleanPrefix(redis, prefix);
  redis.disconnect();
  rmSync(tmp, { recursive: true, force: true });
});

describe("secrets never leave through logs, metrics, CLI output or errors", () => {
  it("keeps every sentinel out of everything but the events", async () => {
    const httpPort = await freePort();
    const env = {
      IDUNOX_API_URL: sim.url,
      IDUNOX_API_KEY: API_KEY,
      REDIS_URL: TEST_REDIS_URL,
      POLLER_KEY_PREFIX: prefix,
      POLLER_MIN_INTERVAL_MS: "50",
      POLLER_MAX_INTERVAL_MS: "200",
      POLLER_REQUEST_TIMEOUT_MS: "1000",
      POLLER_RETRIES: "1",
      POLLER_LEASE_MS: "3000",
      POLLER_FAILURE_ALERT_AFTER: "2",
      POLLER_AUTH_RETRY_MS: "200",
      POLLER_INTAKE_INTERVAL_MS: "50",
      POLLER_HTTP_PORT: String(httpPort),
      POLLER_HTTP_HOST: "127.0.0.1",
      LOG_LEVEL: "trace",
    };
    const cliEnv = { REDIS_URL: TEST_REDIS_URL, POLLER_KEY_PREFIX: prefix };
    const base = `http://127.0.0.1:${httpPort}`;
    const children: CliProcess[] = [];
    let retried = "";
    let dead = "";
    let invalid = "";
    const statusOf = async (id: string) =>
      (await readAll(redis, `${prefix}events`)).flatMap((e) =>
        e.event.type === "idunox.job.status_changed" && e.event.subject === id
          ? [e.event.data.status]
          : [],
      );

    try {
      // First daemon: killed with SIGKILL mid-lifecycle.
      const first = runCli(["run"], env);
      children.push(first);
      await first.waitForLine(/"poller started"/);
      // The lifecycles start now, with a daemon already running.
      const patient = {
        partnerSubjectId: SUBJECT,
        lastError: LAST_ERROR,
        errorDetail: { code: "X", note: DETAIL, nested: [{ deeper: DETAIL }] },
      };
      retried = sim.addJob({
        ...patient,
        maxAttempts: 3,
        slaDeadlineInMs: 200,
        steps: [
          { afterMs: 0, status: "queued" },
          { afterMs: 150, status: "running" },
          { afterMs: 400, status: "failed" },
          { afterMs: 700, status: "queued" },
          { afterMs: 900, status: "running" },
          { afterMs: 1500, status: "succeeded" },
        ],
      });
      dead = sim.addJob({
        ...patient,
        maxAttempts: 1,
        slaDeadlineInMs: null,
        steps: [
          { afterMs: 0, status: "running" },
          { afterMs: 600, status: "dead_letter" },
        ],
      });
      invalid = sim.addJob({
        ...patient,
        slaDeadlineInMs: null,
        steps: [
          { afterMs: 0, status: "running" },
          { afterMs: 2500, status: "succeeded" },
        ],
      });
      // Invalid bodies and error answers that carry the sentinels, before the real lifecycle.
      const valid = jobBody({ jobId: invalid, ...patient });
      sim.script(invalid, [
        { status: 200, body: { ...valid, status: "exploded" } },
        { status: 200, body: { ...valid, jobId: randomUUID() } },
        { status: 200, body: `{"partnerSubjectId":"${SUBJECT}","lastError":"${LAST_ERROR}` },
        { status: 200, body: SUBJECT, headers: { "content-type": "text/html" } },
        { status: 500, body: { error: LAST_ERROR, detail: DETAIL, key: API_KEY } },
        { status: 429, body: { error: DETAIL }, headers: { "retry-after": "0" } },
        { status: 400, body: { error: SUBJECT } },
        { status: 302, headers: { location: `http://127.0.0.1:9/${SUBJECT}` } },
      ]);
      // Keeps being polled to the end, so the wrong key below is always noticed.
      const steady = sim.addJob({ ...patient, steps: [{ afterMs: 0, status: "running" }] });
      const ids = [retried, dead, invalid, steady];
      const tracked = await runCliToEnd(["track", ...ids], cliEnv);
      capture("track", tracked.stdout + tracked.stderr);
      expect(tracked.code).toBe(0);
      await waitFor(async () => (await statusOf(retried)).length > 0, {
        what: "the first daemon to report a transition",
      });
      first.child.kill("SIGKILL");
      expect(await first.exited).toBe("SIGKILL");
      capture("daemon 1 (SIGKILL)", first.stdout() + first.stderr());

      // Second daemon: takes over after the leases run out, meets a wrong key, recovers.
      const second = runCli(["run"], env);
      children.push(second);
      await second.waitForLine(/"poller started"/);
      await waitFor(async () => (await statusOf(dead)).includes("dead_letter"), {
        what: "the dead_letter job to be reported",
      });
      capture("metrics (running)", (await get(`${base}/metrics`)).text);
      capture("readyz (ready)", (await get(`${base}/readyz`)).text);

      sim.setApiKey("a-rotated-key");
      const notReady = await waitFor(
        async () => {
          const r = await get(`${base}/readyz`);
          return r.status === 503 && r;
        },
        { what: "readiness to report the rejected key" },
      );
      expect(notReady.text).toMatch(/API key rejected/);
      capture("readyz (auth failure)", notReady.text);
      capture("metrics (auth failure)", (await get(`${base}/metrics`)).text);
      await second.waitForLine(/API key still rejected/);
      sim.setApiKey(API_KEY);

      await waitFor(
        async () =>
          (await statusOf(retried)).at(-1) === "succeeded" &&
          (await statusOf(invalid)).at(-1) === "succeeded",
        { timeoutMs: 60_000, what: "every job to finish" },
      );
      capture("readyz (recovered)", (await get(`${base}/readyz`)).text);
      capture("metrics (end)", (await get(`${base}/metrics`)).text);
      second.child.kill("SIGTERM");
      expect(await second.exited).toBe(0);
      capture("daemon 2", second.stdout() + second.stderr());
      // The paths above really ran: the logs name them.
      const logs = second.stdout();
      // LOG_LEVEL=trace: everything the daemon logs at any level is in these lines.
      expect(logs).toMatch(/"logLevel":"trace"/);
      expect(logs).toMatch(/"level":20/);
      expect(logs).toMatch(/API key rejected/);
      expect(logs).toMatch(/invalid API response/);
      expect(first.stdout() + logs).toMatch(/alert event emitted/);
    } finally {
      for (const c of children) if (c.child.exitCode === null) c.child.kill("SIGKILL");
    }

    for (const args of [["status"], ["status", "--json"], ["status", retried], ["status", dead]]) {
      const out = await runCliToEnd(args, cliEnv);
      expect(out.code, args.join(" ")).toBe(0);
      capture(`status ${args.join(" ")}`, out.stdout + out.stderr);
    }
    const events = await readAll(redis, `${prefix}events`);
    const tail = await runCliToEnd(
      ["tail", "--from", "0", "--count", String(events.length)],
      cliEnv,
    );
    expect(tail.code).toBe(0);
    expect(tail.stdout.trim().split("\n")).toHaveLength(events.length);
    capture("tail", tail.stdout + tail.stderr);

    // Events (and tail --json, which prints them) are where the partner's data belongs.
    const tailJson = await runCliToEnd(
      ["tail", "--json", "--from", "0", "--count", String(events.length)],
      cliEnv,
    );
    expect(leaked(tailJson.stdout, PATIENT)).toEqual(PATIENT);
    expect(leaked(tailJson.stdout, [API_KEY])).toEqual([]);
    const raw = JSON.stringify(await redis.xrange(`${prefix}events`, "-", "+"));
    expect(leaked(raw, [API_KEY])).toEqual([]);
    const kinds = new Set(events.map((e) => e.event.type));
    expect(kinds).toEqual(
      new Set([
        "idunox.job.status_changed",
        "idunox.job.dead_lettered",
        "idunox.job.poll_failed",
        "idunox.job.sla_breached",
      ]),
    );

    for (const { what, text } of captured) {
      expect(text.length, what).toBeGreaterThan(0);
      expect(leaked(text), what).toEqual([]);
    }
  }, 90_000);

  it("keeps the key out of configuration errors", async () => {
    const keyFile = join(tmp, "key");
    writeFileSync(keyFile, `${API_KEY} ${SUBJECT}\n`);
    const badEnvs: Array<Record<string, string>> = [
      { IDUNOX_API_KEY: API_KEY, POLLER_CONCURRENCY: "lots" },
      { IDUNOX_API_KEY: `${API_KEY} with a space`, POLLER_LEASE_MS: "5" },
      { IDUNOX_API_KEY: API_KEY, IDUNOX_API_KEY_FILE: keyFile },
      { IDUNOX_API_KEY_FILE: keyFile, POLLER_JITTER: "2" },
      { IDUNOX_API_KEY: API_KEY, IDUNOX_API_URL: `https://user:${API_KEY}@api.example` },
      { IDUNOX_API_KEY: API_KEY, REDIS_URL: `redis://:${API_KEY}@127.0.0.1:6379/notadb` },
      { IDUNOX_API_KEY: API_KEY, POLLER_APIKEY: API_KEY },
    ];
    for (const env of badEnvs) {
      let message = "";
      try {
        loadConfig(env);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        message = (err as Error).message;
      }
      expect(message, JSON.stringify(Object.keys(env))).toMatch(/invalid configuration/);
      expect(leaked(message), JSON.stringify(Object.keys(env))).toEqual([]);
    }
    // The same through the real CLI: exit 78 with every problem on stderr, no secret.
    const out = await runCliToEnd(["run"], {
      IDUNOX_API_KEY: API_KEY,
      POLLER_CONCURRENCY: "lots",
      REDIS_URL: `redis://:${API_KEY}@127.0.0.1:6379/x`,
    });
    expect(out.code).toBe(78);
    expect(out.stderr).toMatch(/POLLER_CONCURRENCY/);
    expect(out.stderr).toMatch(/REDIS_URL/);
    expect(leaked(out.stdout + out.stderr)).toEqual([]);
  }, 30_000);
});
