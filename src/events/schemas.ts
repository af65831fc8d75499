import { z } from "zod";
import { JOB_STATUSES, jobSchema } from "../api/schema.js";
import { dataSchemaUri } from "./cloudevents.js";
import type { EventDataByKind, EventKind } from "./types.js";
import { EVENT_KINDS } from "./types.js";

/**
 * The zod types of every event's `data`: the source of the JSON Schemas shipped under
 * `schemas/` (see `eventDataJsonSchemas`). The TypeScript interfaces in `types.ts` stay the
 * hand-written, readable form; the assertions at the end of this file fail to compile when the
 * two drift apart.
 */

const status = z.enum(JOB_STATUSES);
const dateTime = z.iso.datetime({ offset: true });
const jobId = z.guid();

export const eventDataSchemas = {
  status_changed: z.object({
    jobId,
    previousStatus: status.nullable(),
    status,
    job: jobSchema,
  }),
  sla_breached: z.object({
    jobId,
    status,
    slaDeadlineAt: dateTime.nullable(),
    detectedBy: z.enum(["api", "deadline"]),
    job: jobSchema,
  }),
  dead_lettered: z.object({
    jobId,
    attempts: z.int().min(0),
    maxAttempts: z.int().min(0),
    lastError: z.string().nullable(),
    job: jobSchema,
  }),
  poll_failed: z.object({
    jobId,
    consecutiveFailures: z.int().min(1),
    reason: z.string(),
  }),
  not_found: z.object({ jobId, firstNotFoundAt: dateTime }),
  rejected: z.object({ member: z.string(), reason: z.string() }),
} as const satisfies Record<EventKind, z.ZodType>;

const TITLES: Record<EventKind, string> = {
  status_changed: "data of idunox.job.status_changed: the job's status changed",
  sla_breached: "data of idunox.job.sla_breached: the job missed its SLA",
  dead_lettered: "data of idunox.job.dead_lettered: the job reached dead_letter",
  poll_failed: "data of idunox.job.poll_failed: the job could not be polled repeatedly",
  not_found: "data of idunox.job.not_found: the API does not know the job",
  rejected: "data of idunox.job.rejected: a pending-set member is not a job id",
};

/**
 * One JSON Schema (draft 2020-12) per kind, `$id` equal to the events' `dataschema`. Key order
 * is fixed so the files written from it are byte-stable (a test compares them with `schemas/`).
 */
export function eventDataJsonSchemas(): Record<EventKind, Record<string, unknown>> {
  const out = {} as Record<EventKind, Record<string, unknown>>;
  for (const kind of EVENT_KINDS) {
    const generated = z.toJSONSchema(eventDataSchemas[kind], {
      target: "draft-2020-12",
      // The payload as written by the daemon: the output side of each type.
      io: "output",
      // A field added later must not fail a consumer that validates with this version: only a
      // breaking change bumps the version, so the schemas leave extra properties open.
      override: (ctx) => {
        if (ctx.jsonSchema.additionalProperties === false)
          delete ctx.jsonSchema.additionalProperties;
      },
    }) as Record<string, unknown>;
    const { $schema, ...rest } = generated;
    out[kind] = { $schema, $id: dataSchemaUri(kind), title: TITLES[kind], ...rest };
  }
  return out;
}

// ---- the interfaces in types.ts and the zod types above describe the same payloads ----------
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Check<T extends true> = T;
export type DataSchemasMatchTypes = Check<
  Same<
    { [K in EventKind]: z.output<(typeof eventDataSchemas)[K]> },
    { [K in EventKind]: EventDataByKind[K] }
  >
>;

/** A schema file's text as shipped under `schemas/<kind>.json`. */
export function schemaFileText(schema: Record<string, unknown>): string {
  return `${JSON.stringify(schema, null, 2)}\n`;
}
