import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createInterface } from "node:readline";
import fc from "fast-check";
import { Agent, request } from "undici";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { jobSchema } from "../../src/api/schema.js";
import { type Simulator, type SimulatorOptions, startSimulator } from "../../src/sim/simulator.js";

const KEY = "test-key";
const T0 = Date.UTC(2026, 3, 20, 9, 0, 0);
const agent = new Agent({ keepAliveTimeout: 1_000 });

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

async function call(
  sim: Simulator,
  path: string,
  opts: {
    method?: "GET" | "POST" | "PUT" | "DELETE";
    key?: string | null;
    body?: unknown;
    requestId?: string;
    signal?: AbortSignal;
  } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (opts.key !== null) headers["x-api-key"] = opts.key ?? KEY;
  if (opts.requestId !== undefined) headers["x-request-id"] = opts.requestId;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await request(`${sim.url}${path}`, {
    method: opts.method ?? "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    dispatcher: agent,
    signal: opts.signal,
  });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

const getJob = (sim: Simulator, id: string, opts: Parameters<typeof call>[2] = {}) =>
  call(sim, `/v1/jobs/${id}`, opts);

function validJob(answer: Answer) {
  expect(answer.status).toBe(200);
  expect(answer.headers["content-type"]).toBe("application/json");
  return jobSchema.parse(JSON.parse(answer.text));
}

async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met within 10 s");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

afterAll(() => agent.close());

describe("simulator (normal mode)", () => {
  let now = T0;
  let sim: Simulator;
  const start = (extra: Partial<SimulatorOptions> = {}) =>
    startSimulator({ apiKey: KEY, seed: 11, clock: () => now, ...extra });

  beforeEach(async () => {
    now = T0;
    sim = await start();
  });
  afterEach(() => sim.close());

  it("answers 401 with a JSON body for a missing or wrong key, without echoing the key", async () => {
    const id = sim.addJob();
    for (const key of [null, "wrong-key"]) {
      const answer = await getJob(sim, id, { key });
      expect(answer.status).toBe(401);
      expect(answer.headers["content-type"]).toBe("application/json");
      expect(JSON.parse(answer.text)).toMatchObject({ error: "unauthorized" });
      expect(answer.text).not.toContain(KEY);
    }
  });

  it("follows a rotated key", async () => {
    const id = sim.addJob();
    sim.setApiKey("rotated");
    expect((await getJob(sim, id)).status).toBe(401);
    expect((await getJob(sim, id, { key: "rotated" })).status).toBe(200);
  });

  it("answers 404 for unknown and non-uuid ids", async () => {
    expect((await getJob(sim, randomUUID())).status).toBe(404);
    const notUuid = await getJob(sim, "not-a-uuid");
    expect(notUuid.status).toBe(404);
    expect(JSON.parse(notUuid.text)).toMatchObject({ error: "not_found" });
  });

  it("echoes x-request-id, or generates one", async () => {
    const id = sim.addJob();
    expect((await getJob(sim, id, { requestId: "req-123" })).headers["x-request-id"]).toBe(
      "req-123",
    );
    const generated = (await getJob(sim, id)).headers["x-request-id"];
    expect(generated).toEqual(expect.stringMatching(/^[0-9a-f-]{36}$/));
  });

  it("moves a job through its lifecycle as the injected clock advances", async () => {
    const id = sim.addJob({
      slaDeadlineInMs: 4_000,
      steps: [
        { afterMs: 1_000, status: "queued" },
        { afterMs: 2_000, status: "running" },
        { afterMs: 6_000, status: "succeeded" },
      ],
    });
    const seen: Array<[string, boolean]> = [];
    for (const offset of [0, 1_000, 2_500, 4_000, 6_000]) {
      now = T0 + offset;
      const job = validJob(await getJob(sim, id));
      expect(job.jobId).toBe(id);
      seen.push([job.status, job.slaBreached]);
    }
    expect(seen).toEqual([
      ["pending", false],
      ["queued", false],
      ["running", false],
      ["running", true],
      ["succeeded", true],
    ]);
  });

  it("serves schema-valid bodies for random jobs at any time", async () => {
    const ids = sim.addRandomJobs(25);
    for (const offset of [0, 700, 3_000, 9_000, 25_000, 120_000]) {
      now = T0 + offset;
      for (const id of ids) expect(validJob(await getJob(sim, id)).jobId).toBe(id);
    }
  });

  it("is deterministic for a seed", async () => {
    const twin = await start();
    try {
      const ids = sim.addRandomJobs(10);
      expect(twin.addRandomJobs(10)).toEqual(ids);
      now = T0 + 5_000;
      for (const id of ids)
        expect((await getJob(twin, id)).text).toBe((await getJob(sim, id)).text);
    } finally {
      await twin.close();
    }
  });

  it("serves the pipeline mix: every job queued, then running or cancelled, then final", async () => {
    const twin = await start();
    try {
      const ids = sim.addRandomJobs(40, "pipeline");
      expect(twin.addRandomJobs(40, "pipeline")).toEqual(ids);
      const types = new Set<string>();
      for (const id of ids) {
        const first = validJob(await getJob(sim, id));
        expect(first.status).toBe("pending");
        types.add(first.type);
      }
      // Seven types drawn 40 times: more than one shows up.
      expect(types.size).toBeGreaterThan(3);
      now = T0 + 1_000_000;
      for (const id of ids) {
        const body = validJob(await getJob(sim, id));
        expect(["succeeded", "cancelled", "dead_letter"]).toContain(body.status);
        expect(body.queuedAt).not.toBeNull();
        expect((await getJob(twin, id)).text).toBe(JSON.stringify(body));
      }
    } finally {
      await twin.close();
    }
  });

  it("answers 404 until a job becomes visible", async () => {
    const id = sim.addJob({ visibleAfterMs: 30_000 });
    expect((await getJob(sim, id)).status).toBe(404);
    now = T0 + 30_000;
    validJob(await getJob(sim, id));
  });

  it("creates unknown uuids on first sight with autoCreate", async () => {
    const auto = await start({ autoCreate: true });
    try {
      const id = randomUUID();
      expect(validJob(await getJob(auto, id)).jobId).toBe(id);
      expect((await getJob(auto, "nope")).status).toBe(404);
    } finally {
      await auto.close();
    }
  });

  describe("faults", () => {
    it("error5xx answers 503 by default, or the configured status", async () => {
      const id = sim.addJob();
      sim.setFaults({ error5xx: 1 });
      expect((await getJob(sim, id)).status).toBe(503);
      sim.setFaults({ error5xx: 1, status5xx: 502 });
      expect((await getJob(sim, id)).status).toBe(502);
    });

    it("rateLimit answers 429 with Retry-After", async () => {
      const id = sim.addJob();
      sim.setFaults({ rateLimit: 1, retryAfterS: 7 });
      const answer = await getJob(sim, id);
      expect(answer.status).toBe(429);
      expect(answer.headers["retry-after"]).toBe("7");
    });

    it("authFail answers 401 with the right key", async () => {
      const id = sim.addJob();
      sim.setFaults({ authFail: 1 });
      expect((await getJob(sim, id)).status).toBe(401);
    });

    it("reset destroys the connection", async () => {
      const id = sim.addJob();
      sim.setFaults({ reset: 1 });
      await expect(getJob(sim, id)).rejects.toThrow();
    });

    it("malformed is not JSON", async () => {
      const id = sim.addJob();
      sim.setFaults({ malformed: 1 });
      const answer = await getJob(sim, id);
      expect(answer.status).toBe(200);
      expect(() => JSON.parse(answer.text)).toThrow();
    });

    it("schemaBreak is JSON that fails the schema", async () => {
      const id = sim.addJob();
      sim.setFaults({ schemaBreak: 1 });
      for (let i = 0; i < 10; i++) {
        expect(jobSchema.safeParse(JSON.parse((await getJob(sim, id)).text)).success).toBe(false);
      }
    });

    it("wrongJobId serves a valid body for another job", async () => {
      const id = sim.addJob();
      sim.setFaults({ wrongJobId: 1 });
      expect(validJob(await getJob(sim, id)).jobId).not.toBe(id);
    });

    it("htmlContentType serves an HTML page", async () => {
      const id = sim.addJob();
      sim.setFaults({ htmlContentType: 1 });
      const answer = await getJob(sim, id);
      expect(answer.headers["content-type"]).toMatch(/^text\/html/);
      expect(answer.text).toContain("<html>");
    });

    it("huge serves a multi-megabyte body", async () => {
      const id = sim.addJob();
      sim.setFaults({ huge: 1 });
      const answer = await getJob(sim, id);
      expect(answer.text.length).toBeGreaterThan(4 * 1024 * 1024);
    });

    it("per-job faults touch only their job, and clearFaults restores normal answers", async () => {
      const [a, b] = sim.addRandomJobs(2) as [string, string];
      sim.setFaults({ error5xx: 1 }, a.toUpperCase());
      expect((await getJob(sim, a)).status).toBe(503);
      validJob(await getJob(sim, b));
      sim.clearFaults();
      validJob(await getJob(sim, a));
    });

    it("per-job settings override global ones", async () => {
      const [a, b] = sim.addRandomJobs(2) as [string, string];
      sim.setFaults({ error5xx: 1 });
      sim.setFaults({ error5xx: 0 }, a);
      validJob(await getJob(sim, a));
      expect((await getJob(sim, b)).status).toBe(503);
    });

    it("slow delays the answer: a second request arrives while the first is open", async () => {
      const id = sim.addJob();
      sim.setFaults({ slow: 1, slowMs: 1_500 }, id);
      const first = getJob(sim, id);
      await until(() => sim.stats().requests === 1);
      const second = getJob(sim, id);
      validJob(await first);
      validJob(await second);
      expect(sim.stats()).toMatchObject({ requests: 2, overlapsPerJob: 1, maxConcurrentPerJob: 2 });
      expect(sim.stats().byJob.get(id)).toBe(2);
    });

    it("hang never answers until the client gives up, and close() ends it", async () => {
      const id = sim.addJob();
      sim.setFaults({ hang: 1 });
      const controller = new AbortController();
      const abandoned = getJob(sim, id, { signal: controller.signal });
      const open = getJob(sim, id);
      await until(() => sim.stats().requests === 2);
      controller.abort();
      await expect(abandoned).rejects.toThrow();
      await sim.close();
      await expect(open).rejects.toThrow();
    });
  });

  describe("quota and latency", () => {
    it("answers 429 with Retry-After beyond the key's quota, and counts it", async () => {
      const id = sim.addJob();
      sim.setQuota({ rate: 2, burst: 2 });
      validJob(await getJob(sim, id));
      validJob(await getJob(sim, id));
      const refused = await getJob(sim, id);
      expect(refused.status).toBe(429);
      expect(refused.headers["retry-after"]).toBe("1");
      expect(JSON.parse(refused.text)).toMatchObject({ error: "rate_limited" });
      now += 500;
      validJob(await getJob(sim, id));
      expect(sim.stats()).toMatchObject({ requests: 4, throttled: 1 });
      sim.setQuota(null);
      for (let i = 0; i < 5; i++) validJob(await getJob(sim, id));
    });

    it("sends the IETF rate-limit headers when asked", async () => {
      const id = sim.addJob();
      sim.setQuota({ rate: 3, headers: true });
      const first = await getJob(sim, id);
      expect(first.headers["ratelimit-policy"]).toBe('"quota";q=3;w=1');
      expect(first.headers["ratelimit"]).toBe('"quota";r=2;t=0');
      await getJob(sim, id);
      await getJob(sim, id);
      const refused = await getJob(sim, id);
      expect(refused.status).toBe(429);
      expect(refused.headers["ratelimit"]).toBe('"quota";r=0;t=1');
    });

    it("a wrong key is refused before it spends the quota", async () => {
      const id = sim.addJob();
      sim.setQuota({ rate: 1, burst: 1 });
      expect((await getJob(sim, id, { key: "wrong" })).status).toBe(401);
      validJob(await getJob(sim, id));
    });

    it("delays every answer by the latency: requests overlap instead of queueing", async () => {
      const id = sim.addJob();
      sim.setLatency(400);
      const t0 = performance.now();
      const first = getJob(sim, id);
      await until(() => sim.stats().requests === 1);
      const second = getJob(sim, id);
      validJob(await first);
      validJob(await second);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(400);
      expect(sim.stats()).toMatchObject({ requests: 2, overlapsPerJob: 1 });
    });
  });

  it("serves scripted responses in order, then goes back to the lifecycle", async () => {
    const id = sim.addJob();
    sim.script(id, [
      { status: 500, body: "oops", headers: { "content-type": "text/plain" } },
      { status: 200, body: { hello: "world" }, headers: { "x-extra": "1" }, delayMs: 10 },
    ]);
    sim.script(id, [{ status: 200, reset: true }]);
    sim.setFaults({ error5xx: 1 }, id);
    const first = await getJob(sim, id);
    expect([first.status, first.headers["content-type"], first.text]).toEqual([
      500,
      "text/plain",
      "oops",
    ]);
    const second = await getJob(sim, id);
    expect([second.status, second.headers["x-extra"], JSON.parse(second.text)]).toEqual([
      200,
      "1",
      { hello: "world" },
    ]);
    await expect(getJob(sim, id)).rejects.toThrow();
    // Scripts bypass faults; once they are used up the faults apply again.
    expect((await getJob(sim, id)).status).toBe(503);
    sim.clearFaults();
    validJob(await getJob(sim, id));
  });

  it("resetStats clears the counters", async () => {
    const id = sim.addJob();
    await getJob(sim, id);
    expect(sim.stats().requests).toBe(1);
    sim.resetStats();
    expect(sim.stats()).toEqual({
      requests: 0,
      throttled: 0,
      byJob: new Map(),
      maxConcurrentPerJob: 0,
      overlapsPerJob: 0,
    });
  });
});

describe("admin API over HTTP", () => {
  let now = T0;
  let sim: Simulator;
  beforeEach(async () => {
    now = T0;
    sim = await startSimulator({ apiKey: KEY, seed: 3, clock: () => now });
  });
  afterEach(() => sim.close());

  it("requires the API key", async () => {
    expect((await call(sim, "/__sim/stats", { key: null })).status).toBe(401);
  });

  it("creates jobs, sets and clears faults, scripts and reports stats", async () => {
    const created = await call(sim, "/__sim/jobs", { method: "POST", body: { count: 3 } });
    const { jobIds } = JSON.parse(created.text) as { jobIds: string[] };
    expect(jobIds).toHaveLength(3);
    for (const id of jobIds) validJob(await getJob(sim, id));

    const spec = await call(sim, "/__sim/jobs", {
      method: "POST",
      body: { steps: [{ afterMs: 0, status: "dead_letter" }], maxAttempts: 4, lastError: "boom" },
    });
    const [dead] = (JSON.parse(spec.text) as { jobIds: string[] }).jobIds as [string];
    expect(validJob(await getJob(sim, dead))).toMatchObject({
      status: "dead_letter",
      attempts: 4,
      lastError: "boom",
    });

    expect(
      (await call(sim, "/__sim/faults", { method: "PUT", body: { error5xx: 1, jobId: dead } }))
        .status,
    ).toBe(200);
    expect((await getJob(sim, dead)).status).toBe(503);
    validJob(await getJob(sim, jobIds[0]!));
    expect((await call(sim, "/__sim/faults", { method: "DELETE" })).status).toBe(200);
    validJob(await getJob(sim, dead));

    await call(sim, "/__sim/script", {
      method: "POST",
      body: { jobId: dead, responses: [{ status: 418 }] },
    });
    expect((await getJob(sim, dead)).status).toBe(418);

    const stats = JSON.parse((await call(sim, "/__sim/stats")).text) as {
      requests: number;
      byJob: Record<string, number>;
      cpuUs: number;
    };
    expect(stats.requests).toBe(sim.stats().requests);
    // The process's CPU time so far: benchmarks charge the simulator's share of a poll from it.
    expect(stats.cpuUs).toBeGreaterThan(0);
    expect(stats.byJob[dead]).toBe(4);
    await call(sim, "/__sim/reset-stats", { method: "POST" });
    expect(sim.stats().requests).toBe(0);
  });

  it("sets and removes the quota and the latency", async () => {
    const id = sim.addJob();
    const put = (path: string, body: unknown) => call(sim, path, { method: "PUT", body });
    expect((await put("/__sim/quota", { rate: 1, burst: 1, headers: true })).status).toBe(200);
    expect((await getJob(sim, id)).headers["ratelimit-policy"]).toBe('"quota";q=1;w=1');
    expect((await getJob(sim, id)).status).toBe(429);
    const stats = JSON.parse((await call(sim, "/__sim/stats")).text) as { throttled: number };
    expect(stats.throttled).toBe(1);
    expect((await put("/__sim/quota", { rate: null })).status).toBe(200);
    validJob(await getJob(sim, id));
    expect((await put("/__sim/latency", { ms: 300 })).status).toBe(200);
    const t0 = performance.now();
    validJob(await getJob(sim, id));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(300);
    expect((await put("/__sim/latency", { ms: 0 })).status).toBe(200);
    for (const [path, body, field] of [
      ["/__sim/quota", { rate: 0 }, "rate"],
      ["/__sim/quota", { rate: 5, burst: 0 }, "burst"],
      ["/__sim/quota", { rate: 5, header: true }, "unrecognized_keys"],
      ["/__sim/latency", { ms: -1 }, "ms"],
    ] as const) {
      const bad = await put(path, body);
      expect(bad.status).toBe(400);
      expect(bad.text).toContain(field);
    }
  });

  it("rotates the key", async () => {
    await call(sim, "/__sim/api-key", { method: "PUT", body: { apiKey: "next" } });
    expect((await call(sim, "/__sim/stats", { key: "next" })).status).toBe(200);
    expect((await call(sim, "/__sim/stats")).status).toBe(401);
  });

  it("rejects invalid bodies with a 400 that names the field", async () => {
    const bad = await call(sim, "/__sim/faults", { method: "PUT", body: { error5xx: 2 } });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain("error5xx");
    const typo = await call(sim, "/__sim/jobs", { method: "POST", body: { cuont: 3 } });
    expect(typo.status).toBe(400);
    expect((await call(sim, "/__sim/nope", { method: "POST", body: {} })).status).toBe(404);
  });
});

describe("fast mode", () => {
  let sim: Simulator;
  beforeEach(async () => {
    sim = await startSimulator({ apiKey: KEY, fast: true });
  });
  afterEach(() => sim.close());

  it("serves a valid running body for any lowercase uuid", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uuid(), async (raw) => {
        const id = raw.toLowerCase();
        const job = validJob(await getJob(sim, id, { requestId: "r-1" }));
        expect(job).toMatchObject({ jobId: id, status: "running" });
      }),
      { numRuns: 50 },
    );
    expect(sim.stats().requests).toBe(50);
  });

  it("applies the quota and the latency to the fast path too", async () => {
    const id = randomUUID();
    sim.setQuota({ rate: 0.5, burst: 2 });
    sim.setLatency(200);
    const t0 = performance.now();
    const answers = await Promise.all([getJob(sim, id), getJob(sim, id), getJob(sim, id)]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(200);
    expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 429]);
    expect(answers.find((a) => a.status === 429)?.headers["retry-after"]).toBe("2");
    expect(sim.stats()).toMatchObject({ requests: 3, throttled: 1 });
  });

  it("still checks the key and the id, and echoes x-request-id", async () => {
    const id = randomUUID();
    expect((await getJob(sim, id, { key: "wrong" })).status).toBe(401);
    expect((await getJob(sim, id.toUpperCase())).status).toBe(404);
    expect((await getJob(sim, `${id}?x=1`)).status).toBe(404);
    expect((await getJob(sim, id, { requestId: "abc" })).headers["x-request-id"]).toBe("abc");
  });
});

describe("runSimulatorCli as a process", () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    if (child?.exitCode === null) child.kill("SIGKILL");
  });

  it("prints the job ids as JSON, serves them, and exits 0 on SIGTERM", async () => {
    const script =
      "import('./src/sim/cli.ts').then((m) => m.runSimulatorCli(process.argv.slice(1), process.env))";
    const proc = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "-e",
        script,
        "--",
        "--port",
        "0",
        "--jobs",
        "3",
        "--seed",
        "8",
        "--json",
      ],
      { cwd: process.cwd(), env: { ...process.env, IDUNOX_API_KEY: "cli-key", LOG_LEVEL: "info" } },
    );
    child = proc;
    let stderr = "";
    proc.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const [line] = (await once(createInterface({ input: proc.stdout }), "line")) as [string];
    const { url, jobIds } = JSON.parse(line) as { url: string; jobIds: string[] };
    expect(jobIds).toHaveLength(3);

    const res = await request(`${url}/v1/jobs/${jobIds[0]}`, {
      headers: { "x-api-key": "cli-key" },
      dispatcher: agent,
    });
    expect(jobSchema.parse(await res.body.json()).jobId).toBe(jobIds[0]);

    await until(() => stderr.includes("listening"));
    expect(stderr).not.toContain("cli-key");
    proc.kill("SIGTERM");
    const [code] = (await once(proc, "exit")) as [number | null];
    expect(code).toBe(0);
  });

  it("takes --quota, --rate-headers and --latency", async () => {
    const script =
      "import('./src/sim/cli.ts').then((m) => m.runSimulatorCli(process.argv.slice(1), process.env))";
    const proc = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "-e",
        script,
        "--",
        "--port",
        "0",
        "--jobs",
        "1",
        "--json",
        "--quota",
        "1",
        "--rate-headers",
        "--latency",
        "150",
      ],
      { cwd: process.cwd(), env: { ...process.env, IDUNOX_API_KEY: "cli-key", LOG_LEVEL: "warn" } },
    );
    child = proc;
    const [line] = (await once(createInterface({ input: proc.stdout }), "line")) as [string];
    const { url, jobIds } = JSON.parse(line) as { url: string; jobIds: string[] };
    const get = async () => {
      const res = await request(`${url}/v1/jobs/${jobIds[0]}`, {
        headers: { "x-api-key": "cli-key" },
        dispatcher: agent,
      });
      await res.body.dump();
      return res;
    };
    const t0 = performance.now();
    const first = await get();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(150);
    expect(first.statusCode).toBe(200);
    expect(first.headers["ratelimit-policy"]).toBe('"quota";q=1;w=1');
    const second = await get();
    expect(second.statusCode).toBe(429);
    expect(second.headers["retry-after"]).toBe("1");
    proc.kill("SIGTERM");
    const [code] = (await once(proc, "exit")) as [number | null];
    expect(code).toBe(0);
  });
});
