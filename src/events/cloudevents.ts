import { createHash } from "node:crypto";
import type { CloudEvent, EventDataByKind, EventKind } from "./types.js";
import { ALERT_KINDS, DATA_SCHEMA_VERSIONS, EVENT_KINDS } from "./types.js";

export const TYPE_PREFIX = "idunox.job.";

/** The CloudEvents `dataschema` of a kind: the `$id` of its JSON Schema under `schemas/`. */
export function dataSchemaUri(kind: EventKind): string {
  return `urn:idunox:job-poller:schema:${kind}:${DATA_SCHEMA_VERSIONS[kind]}`;
}

export function eventType<K extends EventKind>(kind: K): `idunox.job.${K}` {
  return `${TYPE_PREFIX}${kind}`;
}

export function kindOfType(type: string): EventKind | undefined {
  if (!type.startsWith(TYPE_PREFIX)) return undefined;
  const kind = type.slice(TYPE_PREFIX.length);
  return ALL_KINDS.has(kind) ? (kind as EventKind) : undefined;
}

const ALL_KINDS: ReadonlySet<string> = new Set<string>(EVENT_KINDS);

export function padSequence(sequence: number): string {
  return String(sequence).padStart(10, "0");
}

/**
 * The id of a logical event: a name-based (version 5 layout) UUID of the source, the subject,
 * the subject's history epoch, the sequence number and what the event says (its kind, and for
 * a status change the transition). The same logical event therefore always has the same id,
 * whoever writes it. A job whose state expired and is tracked again starts a new epoch, so its
 * new events never reuse an old id; and if a Redis failover lost a write and the job moved on
 * before the next poll, the event written at that sequence says something else and gets
 * another id, so consumers that deduplicate by id never drop a real step.
 */
export function eventId(
  source: string,
  subject: string,
  epoch: string,
  sequence: number,
  what: string,
): string {
  const hex = createHash("sha1")
    .update(`${source}\n${subject}\n${epoch}\n${sequence}\n${what}`)
    .digest("hex");
  const variant = ((Number.parseInt(hex.slice(16, 18), 16) & 0x3f) | 0x80).toString(16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-${variant}${hex.slice(18, 20)}-${hex.slice(20, 32)}`;
}

export interface EventInput<K extends EventKind> {
  kind: K;
  source: string;
  subject: string;
  epoch: string;
  sequence: number;
  timeMs: number;
  data: EventDataByKind[K];
}

/** What an event says, for its id: the kind, and for a status change the transition. */
function identity(kind: EventKind, data: EventDataByKind[EventKind]): string {
  if (kind === "status_changed") {
    const d = data as EventDataByKind["status_changed"];
    return `${kind}:${d.previousStatus ?? "null"}>${d.status}`;
  }
  return kind;
}

export function buildEvent<K extends EventKind>(input: EventInput<K>): CloudEvent<K> {
  return {
    specversion: "1.0",
    id: eventId(
      input.source,
      input.subject,
      input.epoch,
      input.sequence,
      identity(input.kind, input.data),
    ),
    source: input.source,
    type: eventType(input.kind),
    subject: input.subject,
    time: new Date(input.timeMs).toISOString(),
    datacontenttype: "application/json",
    sequence: padSequence(input.sequence),
    dataschema: dataSchemaUri(input.kind),
    data: input.data,
  };
}

export function isAlert(kind: EventKind): boolean {
  return ALERT_KINDS.has(kind);
}

/**
 * The fields of one stream entry: `data` holds the whole structured event (what Dapr's Redis
 * Streams pub/sub reads), and `id`, `type`, `subject`, `time` repeat the attributes so consumers
 * can filter without parsing JSON.
 */
export function streamFields(event: CloudEvent): [string, string, string, string, string] {
  return [JSON.stringify(event), event.id, event.type, event.subject, event.time];
}

/** Reads a stream entry's flat field list back into a record. */
export function entryFields(flat: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i] as string] = flat[i + 1] as string;
  return out;
}
