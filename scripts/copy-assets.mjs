// Copies the non-TypeScript files the daemon reads at run time (Lua scripts) next to the
// compiled JavaScript, so `dist/` is self-contained.
import { cpSync } from "node:fs";

cpSync("src/store/lua", "dist/store/lua", { recursive: true });
