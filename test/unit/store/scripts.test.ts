import { describe, expect, it } from "vitest";
import { loadScriptSources, stitchIncludes } from "../../../src/store/scripts.js";

describe("Lua includes", () => {
  it("stitches the key-type guard into both scripts that use it, once each", () => {
    const sources = loadScriptSources();
    for (const name of ["applyDecisions", "rejectMember"] as const) {
      const lua = sources.get(name)?.lua ?? "";
      expect(lua.match(/local function expect\(key, kind\)/g)).toHaveLength(1);
      // The guard is defined before its first use.
      expect(lua.indexOf("local function expect(")).toBeLessThan(lua.search(/^expect\(/m));
    }
    for (const [name, source] of sources) {
      expect({ name, leftover: /@include/.test(source.lua) }).toEqual({ name, leftover: false });
    }
  });

  it("includes a snippet once per script, follows nested includes and names a missing one", () => {
    const files: Record<string, string> = {
      a: '--- @include "b"\nlocal a = 1\n',
      b: "local b = 2\n",
    };
    const read = (name: string) => {
      const text = files[name];
      if (text === undefined) throw new Error(`missing Lua include ${name}.lua`);
      return text;
    };
    expect(stitchIncludes('--- @include "a"\n--- @include "b"\nreturn a + b\n', read)).toBe(
      "local b = 2\nlocal a = 1\n\nreturn a + b\n",
    );
    expect(() => stitchIncludes('--- @include "nope"\n', read)).toThrow(/nope/);
  });
});
