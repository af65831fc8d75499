#!/usr/bin/env node
// A production-shaped consumer of the poller's events stream: a consumer group, at-least-once
// delivery made effectively-once by deduplicating on the CloudEvent id. See docs/consumers.md.
//
//   node examples/consumer.mjs [--stream events|alerts] [--count N]
//
// Env: REDIS_URL, POLLER_KEY_PREFIX (default idunox:jobs:), STREAM (events, alerts or a full
// key), CONSUMER_GROUP (default example-consumer), CONSUMER_NAME (default <host>-<pid>; keep it
// stable across restarts so a restart re-reads its own pending entries), CLAIM_IDLE_MS (default
// 60000), HANDLER_DELAY_MS (default 0; makes handling slow, for tests).
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";

const { values: args } = parseArgs({
  options: { stream: { type: "string" }, count: { type: "string" } },
});
const env = process.env;
const prefix = env.POLLER_KEY_PREFIX || "idunox:jobs:";
const which = args.stream ?? env.STREAM ?? "events";
const stream = which === "events" || which === "alerts" ? `${prefix}${which}` : which;
const group = env.CONSUMER_GROUP || "example-consumer";
const consumer = env.CONSUMER_NAME || `${hostname()}-${process.pid}`;
const claimIdleMs = Number(env.CLAIM_IDLE_MS || 60_000);
const handlerDelayMs = Number(env.HANDLER_DELAY_MS || 0);
const limit = args.count === undefined ? Number.POSITIVE_INFINITY : Number(args.count);
const SEEN_TTL_S = 86_400; // longer than any redelivery we expect; bounds memory

/** The pluggable part: do the real work here. It must be safe to run twice (see below). */
async function handle(event, entryId) {
  if (handlerDelayMs > 0) await sleep(handlerDelayMs);
  const d = event.data ?? {};
  const what = d.status ? `${d.previousStatus ?? "(new)"} -> ${d.status}` : (d.reason ?? "");
  console.log(
    `handled ${event.type} ${event.subject} seq=${Number(event.sequence)} id=${event.id} entry=${entryId} ${what}`,
  );
}

const redis = new Redis(env.REDIS_URL || "redis://127.0.0.1:6379");
let stopping = false;
let processed = 0;
for (const sig of ["SIGTERM", "SIGINT"]) {
  // Finish the event in hand, then leave: whatever was delivered but not acked stays in this
  // consumer's pending list and is re-read at restart or claimed by another consumer.
  process.on(sig, () => {
    stopping = true;
  });
}

// At deploy time groups should be created from 0 (see docs/consumers.md); creating it here at
// "$" is the fallback for a first start, and a no-op (BUSYGROUP) when it already exists.
try {
  await redis.xgroup("CREATE", stream, group, "$", "MKSTREAM");
} catch (err) {
  if (!String(err?.message).includes("BUSYGROUP")) throw err;
}
console.log(`consumer ready stream=${stream} group=${group} consumer=${consumer}`);

/** Handles one entry; returns when it is acked. Fields are null for an entry trimmed away. */
async function processEntry(entryId, flat) {
  if (flat) {
    const fields = {};
    for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]] = flat[i + 1];
    const event = JSON.parse(fields.data);
    const seenKey = `${prefix}${group}:seen:${fields.id ?? event.id}`;
    if (await redis.exists(seenKey)) {
      console.log(`skipped duplicate id=${event.id} entry=${entryId}`);
    } else {
      await handle(event, entryId);
      // Marked only after the handler succeeded: a crash before this line means the entry is
      // delivered again and handled again (at-least-once), never lost. A crash between the
      // handler and here is the one window for a second run, hence idempotent handlers.
      await redis.set(seenKey, "1", "NX", "EX", SEEN_TTL_S);
    }
  }
  await redis.xack(stream, group, entryId);
  processed += 1;
}

async function processAll(entries) {
  for (const [entryId, flat] of entries) {
    if (stopping || processed >= limit) return;
    await processEntry(entryId, flat);
  }
}

// 1. After a restart under the same name: our own pending entries (delivered, never acked).
for (;;) {
  const reply = await redis.xreadgroup(
    "GROUP",
    group,
    consumer,
    "COUNT",
    100,
    "STREAMS",
    stream,
    "0",
  );
  const entries = reply?.[0]?.[1] ?? [];
  if (entries.length === 0 || stopping || processed >= limit) break;
  await processAll(entries);
}

// 2. New entries, and now and then entries that a dead consumer left pending too long.
let lastClaim = 0;
while (!stopping && processed < limit) {
  if (Date.now() - lastClaim >= Math.min(claimIdleMs, 30_000)) {
    lastClaim = Date.now();
    let cursor = "0-0";
    do {
      const [next, claimed] = await redis.xautoclaim(
        stream,
        group,
        consumer,
        claimIdleMs,
        cursor,
        "COUNT",
        100,
      );
      cursor = next;
      await processAll(claimed);
    } while (cursor !== "0-0" && !stopping && processed < limit);
  }
  // A bounded BLOCK so a signal is noticed within a second even when the stream is quiet.
  const reply = await redis.xreadgroup(
    "GROUP",
    group,
    consumer,
    "COUNT",
    10,
    "BLOCK",
    1000,
    "STREAMS",
    stream,
    ">",
  );
  await processAll(reply?.[0]?.[1] ?? []);
}

console.log(`consumer stopped after ${processed} entries`);
await redis.quit();
