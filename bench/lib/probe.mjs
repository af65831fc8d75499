/**
 * Preloaded (`node --import`) into every measured subject, including the production daemon
 * from dist/, so the subject needs no benchmark code of its own. It counts the commands the
 * subject's ioredis clients send (the client-side round trips; Redis' own commandstats also
 * count the calls made inside Lua scripts, which is a different figure) and answers the
 * driver's "bench:sample" messages over the IPC channel with that count, process.cpuUsage()
 * (every thread of the process, GC included), the resident set size (and its anonymous and
 * file-backed parts) and the V8 heap (live objects, the heap V8 reserved for them) and external
 * memory (Buffers, undici).
 *
 * Plain JavaScript: the daemon runs from dist/ without tsx, and this file must load there too.
 */
import { readFileSync } from "node:fs";
import { Redis } from "ioredis";

/**
 * The resident set split as Linux counts it: anonymous memory is what the process allocated
 * (heaps, stacks, buffers); file-backed pages are the node binary and libraries mapped from disk,
 * shared with every other Node process on the host. Null where /proc is not there.
 */
function residentSplit() {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const kib = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
    const anon = kib("RssAnon");
    const file = kib("RssFile");
    return Number.isFinite(anon) && Number.isFinite(file)
      ? { rssAnon: anon * 1024, rssFile: file * 1024 }
      : {};
  } catch {
    return {};
  }
}

let sent = 0;
const original = Redis.prototype.sendCommand;
// Pipelines and auto-pipelining also go through sendCommand, one call per command.
Redis.prototype.sendCommand = function countedSendCommand(...args) {
  sent++;
  return original.apply(this, args);
};

if (typeof process.send === "function") {
  process.on("message", (message) => {
    if (message !== "bench:sample") return;
    process.send?.({
      type: "bench:sample",
      redisCommandsSent: sent,
      cpu: process.cpuUsage(),
      ...(() => {
        const m = process.memoryUsage();
        return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external };
      })(),
      ...residentSplit(),
    });
  });
  // The channel must not keep the subject alive: it exits by its own shutdown path.
  process.channel?.unref();
}
