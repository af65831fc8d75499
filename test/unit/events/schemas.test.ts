import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { buildEvent, dataSchemaUri } from "../../../src/events/cloudevents.js";
import { eventDataJsonSchemas, schemaFileText } from "../../../src/events/schemas.js";
import { EVENT_KINDS } from "../../../src/events/types.js";
import { jobBody } from "../../fixtures/job.js";
import { assertEventMatchesSchema } from "../../helpers/schemas.js";

const DIR = new URL("../../../schemas/", import.meta.url);

describe("the shipped JSON Schemas", () => {
  it("are exactly what the zod types generate (run `npm run build` after changing them)", () => {
    const generated = eventDataJsonSchemas();
    expect(readdirSync(DIR).sort()).toEqual(EVENT_KINDS.map((k) => `${k}.json`).sort());
    for (const kind of EVENT_KINDS) {
      expect(readFileSync(new URL(`${kind}.json`, DIR), "utf8"), kind).toBe(
        schemaFileText(generated[kind]),
      );
    }
  });

  it("have the events' dataschema as $id and use draft 2020-12", () => {
    for (const [kind, schema] of Object.entries(eventDataJsonSchemas())) {
      expect(schema["$id"]).toBe(`urn:idunox:job-poller:schema:${kind}:1`);
      expect(schema["$schema"]).toBe("https://json-schema.org/draft/2020-12/schema");
    }
  });

  it("accept a built event and refuse one whose data breaks the contract", () => {
    const jobId = "0b5e3c1c-5a3e-4d7a-9a51-0c8f6f5e2b11";
    const event = buildEvent({
      kind: "status_changed",
      source: "urn:test",
      subject: jobId,
      epoch: "e",
      sequence: 1,
      timeMs: 0,
      data: { jobId, previousStatus: null, status: "running", job: jobBody({ jobId }) },
    });
    expect(event.dataschema).toBe(dataSchemaUri("status_changed"));
    expect(() => assertEventMatchesSchema(event)).not.toThrow();
    const broken = { ...event, data: { ...event.data, status: "exploded" } };
    expect(() => assertEventMatchesSchema(broken)).toThrow(/breaks its schema: \/status/);
    const noJob = { ...event, data: { jobId, previousStatus: null, status: "running" } };
    expect(() => assertEventMatchesSchema(noJob)).toThrow(/job/);
    expect(() => assertEventMatchesSchema({ ...event, dataschema: "urn:x" })).toThrow(/dataschema/);
  });
});
