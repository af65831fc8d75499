#!/usr/bin/env -S node --import tsx
// A producer with the client library: tracks job ids (validated as the daemon does, picked up
// at once through the intake hint) and waits for each job's final event. See docs/producers.md.
//
//   node --import tsx examples/producer.ts <jobId...>
//
// Env: REDIS_URL, POLLER_KEY_PREFIX (default idunox:jobs:), WAIT_TIMEOUT_MS (default 60000).
// Prints one line per job; exits 1 if an id was rejected or a job did not finish in time.
import { createClient, type FinalJobEvent, WaitTimeoutError } from "idunox-job-poller";

const env = process.env;
const ids = process.argv.slice(2);
const timeoutMs = Number(env["WAIT_TIMEOUT_MS"] ?? 60_000);

const client = createClient({
  redis: env["REDIS_URL"] ?? "redis://127.0.0.1:6379",
  prefix: env["POLLER_KEY_PREFIX"] ?? "idunox:jobs:",
});

function describe(event: FinalJobEvent): string {
  return event.type === "idunox.job.status_changed"
    ? `${event.data.status} after ${event.data.job.attempts} attempt(s)`
    : `not found since ${event.data.firstNotFoundAt}`;
}

let failed = false;
try {
  const { added, alreadyTracked, rejected } = await client.track(ids);
  console.log(
    `tracked added=${added} alreadyTracked=${alreadyTracked} rejected=${rejected.length}`,
  );
  for (const { id, reason } of rejected) {
    console.log(`rejected ${JSON.stringify(id.slice(0, 40))}: ${reason}`);
    failed = true;
  }
  const rejectedIds = new Set(rejected.map((r) => r.id));
  const results = await Promise.allSettled(
    ids.filter((id) => !rejectedIds.has(id)).map((id) => client.waitFor(id, { timeoutMs })),
  );
  for (const result of results) {
    if (result.status === "fulfilled") {
      console.log(
        `finished ${result.value.subject} ${describe(result.value)} id=${result.value.id}`,
      );
    } else if (result.reason instanceof WaitTimeoutError) {
      console.log(`timeout ${result.reason.jobId} after ${result.reason.timeoutMs} ms`);
      failed = true;
    } else {
      throw result.reason;
    }
  }
} finally {
  await client.close();
}
process.exitCode = failed ? 1 : 0;
