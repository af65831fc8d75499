import { Pool } from "undici";
import { subjectEnv } from "./peers/env.js";

/**
 * The ceiling: what one Node process gets out of the simulator at the same concurrency when
 * it does nothing but request, read and JSON.parse. No Redis, no validation, no state.
 */
const env = subjectEnv();
const pool = new Pool(env.simUrl, { connections: env.concurrency, pipelining: 1 });
const headers = { "x-api-key": env.apiKey };
let stopping = false;
let parsed = 0;

async function worker(offset: number): Promise<void> {
  let i = offset;
  while (!stopping) {
    const id = env.ids[i % env.ids.length] as string;
    i += env.concurrency;
    const { body } = await pool.request({ path: `/v1/jobs/${id}`, method: "GET", headers });
    const job = JSON.parse(await body.text()) as { status?: string };
    if (job.status !== undefined) parsed++;
  }
}

const workers = Array.from({ length: env.concurrency }, (_, i) => worker(i));
process.once("SIGTERM", () => {
  stopping = true;
});
await Promise.all(workers);
await pool.close();
process.stdout.write(`${JSON.stringify({ parsed })}\n`);
