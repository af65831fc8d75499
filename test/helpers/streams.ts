import type { Redis } from "ioredis";
import { entryFields } from "../../src/events/cloudevents.js";
import type { AnyCloudEvent } from "../../src/events/types.js";
import { assertEventMatchesSchema } from "./schemas.js";

export interface StreamEvent {
  streamId: string;
  fields: Record<string, string>;
  event: AnyCloudEvent;
}

/**
 * Parses one entry's event and holds it to its published JSON Schema: every event the
 * integration tests read from a stream is checked this way (CONTRACT §4, `dataschema`).
 */
function parseEvent(fields: Record<string, string>): AnyCloudEvent {
  const event = JSON.parse(fields["data"] ?? "null") as AnyCloudEvent;
  assertEventMatchesSchema(event);
  return event;
}

export async function readAll(redis: Redis, stream: string): Promise<StreamEvent[]> {
  const entries = await redis.xrange(stream, "-", "+");
  return entries.map(([streamId, flat]) => {
    const fields = entryFields(flat);
    return { streamId, fields, event: parseEvent(fields) };
  });
}

/**
 * Reads the stream with XREAD BLOCK until `done(events)` holds or the deadline passes; returns
 * every event read so far.
 */
export async function readUntil(
  redis: Redis,
  stream: string,
  done: (events: StreamEvent[]) => boolean,
  timeoutMs = 20_000,
): Promise<StreamEvent[]> {
  const events: StreamEvent[] = [];
  let last = "0";
  const deadline = Date.now() + timeoutMs;
  const reader = redis.duplicate();
  try {
    while (!done(events)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out on ${stream} after ${events.length} events: ${events
            .map((e) => `${e.event.type}:${e.event.subject.slice(0, 8)}`)
            .join(", ")}`,
        );
      }
      const reply = await reader.xread(
        "COUNT",
        1000,
        "BLOCK",
        Math.min(left, 500),
        "STREAMS",
        stream,
        last,
      );
      if (!reply) continue;
      for (const [, entries] of reply) {
        for (const [streamId, flat] of entries) {
          last = streamId;
          const fields = entryFields(flat);
          events.push({ streamId, fields, event: parseEvent(fields) });
        }
      }
    }
    return events;
  } finally {
    reader.disconnect();
  }
}
