#!/usr/bin/env node
// A production-shaped consumer of the poller's events with the client library: a consumer
// group, ack after the handler, entries of dead consumers reclaimed, poison events parked in a
// dead-letter stream, duplicates skipped by CloudEvent id. See docs/consumers.md.
//
//   node examples/consumer.mjs [--stream events|alerts] [--count N]
//
// Env: REDIS_URL, POLLER_KEY_PREFIX (default idunox:jobs:), STREAM (events or alerts),
// CONSUMER_GROUP (default example-consumer), CONSUMER_NAME (default <host>-<pid>; keep it stable
// across restarts so a restart re-reads its own pending entries at once), CLAIM_IDLE_MS
// (default 60000), MAX_DELIVERIES (default 5), HANDLER_DELAY_MS (default 0; slow handling, for
// tests), FAIL_SUBJECT (a job id whose events the handler always fails on, for tests).
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { createClient } from "idunox-job-poller";

const { values: args } = parseArgs({
  options: { stream: { type: "string" }, count: { type: "string" } },
});
const env = process.env;
const stream = args.stream ?? env.STREAM ?? "events";
const group = env.CONSUMER_GROUP || "example-consumer";
const consumer = env.CONSUMER_NAME || `${hostname()}-${process.pid}`;
const handlerDelayMs = Number(env.HANDLER_DELAY_MS || 0);
const limit = args.count === undefined ? Number.POSITIVE_INFINITY : Number(args.count);

const client = createClient({
  redis: env.REDIS_URL || "redis://127.0.0.1:6379",
  prefix: env.POLLER_KEY_PREFIX || "idunox:jobs:",
});

let processed = 0;
const stopper = new AbortController();
const counted = () => {
  processed += 1;
  if (processed >= limit) stopper.abort();
};

const subscription = client.subscribe({
  group,
  consumer,
  stream,
  minIdleMs: Number(env.CLAIM_IDLE_MS || 60_000),
  maxDeliveries: Number(env.MAX_DELIVERIES || 5),
  signal: stopper.signal,
  // The pluggable part: do the real work here. It must be safe to run twice: an entry whose
  // handler finished but whose ack was lost to a crash is delivered again.
  async handler(event, { entryId, deliveries }) {
    if (handlerDelayMs > 0) await sleep(handlerDelayMs);
    if (event.subject === env.FAIL_SUBJECT) throw new Error(`refusing ${event.type}`);
    let what = "";
    if (event.type === "idunox.job.status_changed") {
      what = `${event.data.previousStatus ?? "(new)"} -> ${event.data.status}`;
    } else if (event.type === "idunox.job.rejected" || event.type === "idunox.job.poll_failed") {
      what = event.data.reason;
    }
    console.log(
      `handled ${event.type} ${event.subject} seq=${Number(event.sequence)} id=${event.id} entry=${entryId} deliveries=${deliveries} ${what}`,
    );
    counted();
  },
  onDuplicate(event, { entryId }) {
    console.log(`skipped duplicate id=${event.id} entry=${entryId}`);
    counted();
  },
});

for (const sig of ["SIGTERM", "SIGINT"]) {
  // Finish the events in hand, then leave: whatever was read but not handled stays pending
  // and is re-read at restart or claimed by another consumer.
  process.on(sig, () => stopper.abort());
}

await subscription.ready;
console.log(`consumer ready stream=${client.keys[stream]} group=${group} consumer=${consumer}`);
await new Promise((resolve) => stopper.signal.addEventListener("abort", resolve, { once: true }));
await subscription.close();
await client.close();
console.log(`consumer stopped after ${processed} entries`);
