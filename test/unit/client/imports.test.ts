import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ENTRY = fileURLToPath(new URL("../../../src/client/index.ts", import.meta.url));

/**
 * Every module the library loads at run time, from its entry, and the packages they import.
 * Type-only imports (`import type`, `export type`) are erased by the compiler and not followed.
 */
function runtimeGraph(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = [entry];
  const statement = /^(?:import|export)\s+(type\s+)?(?:[^"';]*?\s+from\s+)?["']([^"']+)["']/gms;
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (files.has(file)) continue;
    files.add(file);
    const source = readFileSync(file, "utf8");
    for (const match of source.matchAll(statement)) {
      if (match[1]) continue;
      const spec = match[2] as string;
      if (spec.startsWith(".")) queue.push(resolve(dirname(file), spec.replace(/\.js$/, ".ts")));
      else
        packages.add(
          spec.startsWith("@")
            ? spec.split("/").slice(0, 2).join("/")
            : (spec.split("/")[0] as string),
        );
    }
  }
  return { files, packages };
}

describe("the client library's import graph", () => {
  it("pulls in ioredis and node built-ins only: not zod, pino, undici, prom-client or p-retry", () => {
    const { files, packages } = runtimeGraph(ENTRY);
    const thirdParty = [...packages].filter((p) => !p.startsWith("node:")).sort();
    expect(thirdParty).toEqual(["ioredis"]);
    // Nothing of the daemon's wiring, logging, HTTP or configuration.
    const rel = [...files].map((f) => f.slice(f.indexOf("/src/") + 1)).sort();
    for (const f of rel) expect(f).toMatch(/^src\/(client|events|poller|store|lib)\//);
    expect(rel).not.toContain("src/store/store.ts");
    expect(rel).not.toContain("src/config/index.ts");
  });
});
