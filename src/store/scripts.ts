import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { RedisClient } from "./connection.js";

/**
 * The Lua scripts of `lua/`, one per file, named `<name>-<numberOfKeys>.lua`. They are
 * registered with ioredis `defineCommand`, which calls EVALSHA and falls back to EVAL on
 * NOSCRIPT, so a Redis restart or SCRIPT FLUSH needs no handling here.
 *
 * Lua shared between scripts lives in `lua/includes/<name>.lua` and is pulled in where a script
 * has a line `--- @include "<name>"` (BullMQ's convention). Scripts cannot call each other, so
 * the snippet is stitched into each script's text at load time, never copied by hand.
 */
export const SCRIPT_NAMES = [
  "intake",
  "claimDue",
  "applyDecisions",
  "releaseLeases",
  "rejectMember",
  "expireStates",
  "takePermits",
  "mergeDurations",
] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

type ScriptFn = (...args: Array<string | number>) => Promise<unknown>;
export type ScriptCommands = Record<ScriptName, ScriptFn>;

const LUA_DIR = fileURLToPath(new URL("./lua/", import.meta.url));
const INCLUDES_DIR = `${LUA_DIR}includes/`;
const INCLUDE_LINE = /^--- @include "([A-Za-z0-9_-]+)"[ \t]*$/gm;

/**
 * Replaces each include line with the snippet it names. A snippet is included once per script
 * (a second include of it becomes empty) and may include others; a missing one is an error.
 */
export function stitchIncludes(
  lua: string,
  readInclude: (name: string) => string,
  seen = new Set<string>(),
): string {
  return lua.replace(INCLUDE_LINE, (_line, name: string) => {
    if (seen.has(name)) return "";
    seen.add(name);
    return stitchIncludes(readInclude(name), readInclude, seen).trimEnd();
  });
}

function readInclude(name: string): string {
  try {
    return readFileSync(`${INCLUDES_DIR}${name}.lua`, "utf8");
  } catch {
    throw new Error(`missing Lua include ${name}.lua in ${INCLUDES_DIR}`);
  }
}

interface ScriptSource {
  numberOfKeys: number;
  lua: string;
}

let cache: Map<ScriptName, ScriptSource> | undefined;

export function loadScriptSources(): Map<ScriptName, ScriptSource> {
  if (cache) return cache;
  const found = new Map<ScriptName, ScriptSource>();
  for (const file of readdirSync(LUA_DIR)) {
    const match = /^([A-Za-z]+)-(\d+)\.lua$/.exec(file);
    if (!match) continue;
    const name = match[1] as ScriptName;
    if (!SCRIPT_NAMES.includes(name)) throw new Error(`unexpected Lua script ${file}`);
    found.set(name, {
      numberOfKeys: Number(match[2]),
      lua: stitchIncludes(readFileSync(`${LUA_DIR}${file}`, "utf8"), readInclude),
    });
  }
  for (const name of SCRIPT_NAMES) {
    if (!found.has(name)) throw new Error(`missing Lua script ${name}-<keys>.lua in ${LUA_DIR}`);
  }
  cache = found;
  return found;
}

export function defineScripts(redis: RedisClient): ScriptCommands {
  for (const [name, source] of loadScriptSources()) {
    redis.defineCommand(name, source);
  }
  return redis as unknown as ScriptCommands;
}
