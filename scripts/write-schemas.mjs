// Writes schemas/<kind>.json, the JSON Schema of each event's `data`, from the zod types in
// the compiled dist/events/schemas.js. Runs as part of `npm run build`; test/unit/events/
// schemas.test.ts fails when the committed files are not what this writes.
import { mkdirSync, writeFileSync } from "node:fs";
import { eventDataJsonSchemas, schemaFileText } from "../dist/events/schemas.js";

const dir = new URL("../schemas/", import.meta.url);
mkdirSync(dir, { recursive: true });
for (const [kind, schema] of Object.entries(eventDataJsonSchemas())) {
  writeFileSync(new URL(`${kind}.json`, dir), schemaFileText(schema));
}
