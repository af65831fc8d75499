import { readFileSync } from "node:fs";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { dataSchemaUri, kindOfType } from "../../src/events/cloudevents.js";
import { EVENT_KINDS, type EventKind } from "../../src/events/types.js";

/**
 * The shipped JSON Schemas (`schemas/<kind>.json`, as committed) compiled once, so every test
 * that reads events from a stream checks each against the schema of its `dataschema`.
 */
const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;
const ajv = addFormats(new Ajv2020({ strict: true, allErrors: true }));
const validators = new Map<EventKind, ValidateFunction>();
for (const kind of EVENT_KINDS) {
  const schema = JSON.parse(
    readFileSync(new URL(`../../schemas/${kind}.json`, import.meta.url), "utf8"),
  ) as Record<string, unknown>;
  validators.set(kind, ajv.compile(schema));
}

/** Throws, naming the event and the failing paths, when an event breaks its published schema. */
export function assertEventMatchesSchema(event: {
  type: string;
  id: string;
  dataschema?: unknown;
  data: unknown;
}): void {
  const kind = kindOfType(event.type);
  if (kind === undefined) throw new Error(`event ${event.id} has an unknown type ${event.type}`);
  if (event.dataschema !== dataSchemaUri(kind)) {
    throw new Error(`event ${event.id} (${event.type}) has dataschema ${String(event.dataschema)}`);
  }
  const validate = validators.get(kind) as ValidateFunction;
  if (!validate(event.data)) {
    const where = (validate.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message}`);
    throw new Error(`event ${event.id} (${event.type}) breaks its schema: ${where.join("; ")}`);
  }
}
