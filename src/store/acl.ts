import { createHash } from "node:crypto";
import { loadScriptSources } from "./scripts.js";

/**
 * Redis ACL users for least privilege (config/redis/users.acl is this module's output for the
 * default prefix; a test holds the two equal). Each user gets the commands its component sends
 * and nothing else, on the keys of one prefix:
 *
 * - `poller`, the daemon: every key under the prefix (`~<prefix>*`), so keys added to the
 *   daemon later need no ACL change. Its commands are the ones it sends itself plus every
 *   command its Lua scripts call, read from `lua/` (Redis checks each call inside a script
 *   against the user running it).
 * - `producer`: adds job ids (the client library's `track()`: SADD to the pending set, RPUSH
 *   to the intake hint list), and nothing else: it can neither read the events nor touch the
 *   daemon's state. `waitFor()` reads, so it runs under the consumer's rights.
 * - `consumer`: reads the streams with consumer groups, acks and claims, and reads (never
 *   writes) the rest of the prefix for `status`. Its only writable keys are the two streams,
 *   and it has no command that adds or deletes entries in them, only group bookkeeping. A
 *   selector lets it XADD to the dead-letter streams of `subscribe()`, and only there.
 *
 * Patterns are the prefix with glob characters escaped, so a Cluster prefix such as
 * `{idunox}:jobs:` yields `~{idunox}:jobs:*`: the hash tag is part of the pattern.
 */

export const ACL_USERS = ["poller", "producer", "consumer"] as const;
export type AclUser = (typeof ACL_USERS)[number];

/**
 * What every client sends on its own: CLIENT SETNAME (connectionName), INFO (the ready check,
 * and the role check behind Sentinel), PING, SELECT (a database number in REDIS_URL), and on a
 * Cluster CLUSTER SLOTS (slot map) and ASKING (a slot being migrated).
 */
const CONNECTION = ["client|setname", "info", "ping", "select", "cluster|slots", "asking"];

/** The daemon's commands outside its scripts: store statistics, `job()`, heartbeats. */
const POLLER_DIRECT = [
  // EVALSHA, with EVAL as ioredis's fallback after NOSCRIPT (a restarted or flushed Redis).
  "evalsha",
  "eval",
  "zcard",
  "zcount",
  "zrangebyscore",
  "zscore",
  "scard",
  "sismember",
  "hget",
  "hgetall",
  "hset",
  "hdel",
  // The consumer group lag metric.
  "xinfo|groups",
];

const PRODUCER = ["sadd", "rpush"];

const CONSUMER = [
  "xread",
  "xreadgroup",
  "xrange",
  "xrevrange",
  "xlen",
  "xack",
  "xclaim",
  "xautoclaim",
  "xpending",
  "xgroup|create",
  "xgroup|createconsumer",
  "xinfo|groups",
  "xinfo|stream",
  "xinfo|consumers",
  // subscribe() parks an entry and acks it in one MULTI; waitFor() reads in one.
  "multi",
  "exec",
  // `status`: what the store reads for its statistics and for one job.
  "zcard",
  "zcount",
  "zrangebyscore",
  "zscore",
  "scard",
  "sismember",
  "hget",
  "hgetall",
];

/** Every command the daemon's Lua scripts call, lower-case, from the script sources. */
export function scriptCommands(): string[] {
  const found = new Set<string>();
  for (const { lua } of loadScriptSources().values()) {
    for (const m of lua.matchAll(/\b(?:rcall|redis\.p?call)\(\s*["']([A-Za-z]+)["']/g)) {
      found.add(m[1]!.toLowerCase());
    }
  }
  return [...found];
}

/** A literal string as a Redis glob: `*`, `?`, `[`, `]` and `\` escaped. */
export function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

export interface AclUserRules {
  user: AclUser;
  /** Key patterns, `~` (read and write) and `%R~` (read only). */
  keys: string[];
  commands: string[];
  /** ACL selectors (Redis 7), `(<keys> <commands>)`: a command passes if any of them allows it. */
  selectors: string[];
}

export function aclRules(prefix: string): AclUserRules[] {
  const p = globEscape(prefix);
  const sorted = (list: string[]) => [...new Set(list)].sort();
  return [
    {
      user: "poller",
      keys: [`~${p}*`],
      commands: sorted([...CONNECTION, ...POLLER_DIRECT, ...scriptCommands()]),
      selectors: [],
    },
    {
      user: "producer",
      keys: [`~${p}pending`, `~${p}intake:hints`],
      commands: sorted([...CONNECTION, ...PRODUCER]),
      selectors: [],
    },
    {
      user: "consumer",
      keys: [`%R~${p}*`, `~${p}events`, `~${p}alerts`],
      commands: sorted([...CONNECTION, ...CONSUMER]),
      // The default dead-letter streams of subscribe(), `<prefix><stream>:dead-letter`.
      selectors: [`(~${p}events:dead-letter ~${p}alerts:dead-letter +xadd)`],
    },
  ];
}

export interface AclFileOptions {
  /** Password per user; a user without one is written `off` (cannot log in). */
  passwords?: Partial<Record<AclUser, string>>;
  /**
   * `aclfile` (default): lines for `redis-server --aclfile`, which holds no comments.
   * `commands`: `ACL SETUSER` lines for `redis-cli`, for a Redis whose users are managed live.
   */
  format?: "aclfile" | "commands";
}

/**
 * The ACL users for `prefix`, one line each. Passwords are written as SHA-256 digests
 * (`#<hex>`), so the output never holds one in clear text.
 */
export function renderAclFile(prefix: string, options: AclFileOptions = {}): string {
  const lead = options.format === "commands" ? "ACL SETUSER" : "user";
  const lines = aclRules(prefix).map((rules) => {
    const password = options.passwords?.[rules.user];
    const auth =
      password === undefined ? "off" : `on #${createHash("sha256").update(password).digest("hex")}`;
    // `reset` first: no password, no keys, no channels, no commands; then only what is listed.
    const commands = rules.commands.map((c) => `+${c}`);
    return [lead, rules.user, "reset", auth, ...rules.keys, ...commands, ...rules.selectors].join(
      " ",
    );
  });
  return `${lines.join("\n")}\n`;
}

/**
 * One line for a command Redis refused under ACL, or null when `message` is not such a refusal.
 * Redis names the command (`NOPERM … 'xadd' command`) or says a key was out of reach; inside a
 * script, Redis 7.0 says only "The user executing the script can't run this command". The line
 * always says NOPERM and what to do, so an operator never has to guess it is a permission.
 */
export function describeAclRefusal(message: string): string | null {
  const fix =
    "give this user the rules of `idunox-poller acl` (docs/operations.md, Redis ACL users)";
  const command = /\bNOPERM\b.*?'([^']+)' command/.exec(message)?.[1];
  if (command !== undefined) {
    return `Redis refused the command ${command.toUpperCase()} for this user (NOPERM): ${fix}`;
  }
  if (/\bNOPERM\b.*\bkeys?\b|can't access at least one of the keys/i.test(message)) {
    return `Redis refused this user a key outside its ACL key patterns (NOPERM): check POLLER_KEY_PREFIX, or ${fix}`;
  }
  if (/\bNOPERM\b.*\bchannel/i.test(message)) {
    return `Redis refused this user a Pub/Sub channel (NOPERM): ${fix}`;
  }
  if (/user executing the script can't run this command|\bNOPERM\b/i.test(message)) {
    return `Redis refused a command of a Lua script for this user (NOPERM): the ACL predates the scripts; ${fix}`;
  }
  return null;
}
