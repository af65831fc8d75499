// Validates docs/asyncapi.yaml with the AsyncAPI parser, resolving the payload schemas it
// references under schemas/. Exits 1 with every error-level diagnostic. Run by .ci/check-ops.sh.
import { fileURLToPath } from "node:url";
import { fromFile, Parser } from "@asyncapi/parser";

const path = fileURLToPath(new URL("../docs/asyncapi.yaml", import.meta.url));
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  const level = ["error", "warning", "info", "hint"][d.severity] ?? d.severity;
  console.log(`${level}: ${d.message} at ${d.path.join(".")}`);
}
if (!document || errors.length > 0) {
  console.error(`docs/asyncapi.yaml: ${errors.length} error(s)`);
  process.exit(1);
}
// Every message's payload must reach the shipped schema of its data (the $ref resolved).
for (const message of document.components().messages().all()) {
  const json = message.payload()?.json();
  const data = (json?.allOf ?? []).map((part) => part.properties?.data).find((d) => d?.$id);
  const kind = message.name().replace("idunox.job.", "");
  if (data?.$id !== `urn:idunox:job-poller:schema:${kind}:1`) {
    console.error(`message ${message.name()}: payload data is not schemas/${kind}.json`);
    process.exit(1);
  }
}
const channels = document
  .channels()
  .all()
  .map((c) => c.address());
const messages = document
  .components()
  .messages()
  .all()
  .map((m) => m.name());
console.log(
  `docs/asyncapi.yaml is valid AsyncAPI ${document.version()}: channels ${channels.join(", ")}; ${messages.length} messages`,
);
