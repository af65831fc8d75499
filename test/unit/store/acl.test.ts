import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  aclRules,
  describeAclRefusal,
  globEscape,
  renderAclFile,
  scriptCommands,
} from "../../../src/store/acl.js";

const rulesOf = (prefix: string, user: string) => {
  const found = aclRules(prefix).find((r) => r.user === user);
  if (found === undefined) throw new Error(`no user ${user}`);
  return found;
};

describe("the ACL users", () => {
  it("config/redis/users.acl is the generator's output for the default prefix", () => {
    const shipped = readFileSync(
      new URL("../../../config/redis/users.acl", import.meta.url),
      "utf8",
    );
    expect(
      shipped,
      "config/redis/users.acl is out of date: regenerate it with `npx tsx src/cli/main.ts acl > config/redis/users.acl`",
    ).toBe(renderAclFile("idunox:jobs:"));
  });

  it("lets the poller run every command its Lua scripts call", () => {
    const lua = scriptCommands();
    expect(lua).toEqual(expect.arrayContaining(["xadd", "hset", "zadd", "sadd"]));
    expect(rulesOf("p:", "poller").commands).toEqual(expect.arrayContaining(lua));
  });

  it("keeps the producer and the consumer off the daemon's write commands", () => {
    const writes = [
      "hset",
      "hdel",
      "zadd",
      "zrem",
      "srem",
      "xadd",
      "xdel",
      "xtrim",
      "del",
      "eval",
      "evalsha",
    ];
    expect(rulesOf("p:", "producer").commands.filter((c) => writes.includes(c))).toEqual([]);
    expect(rulesOf("p:", "consumer").commands.filter((c) => writes.includes(c))).toEqual([]);
    // track() writes the pending set and the intake hint, nothing else.
    expect(rulesOf("p:", "producer").keys).toEqual(["~p:pending", "~p:intake:hints"]);
    expect(rulesOf("p:", "consumer").keys).toEqual(["%R~p:*", "~p:events", "~p:alerts"]);
  });

  it("carries a Cluster prefix's hash tag in the patterns and escapes glob characters", () => {
    expect(rulesOf("{idunox}:jobs:", "poller").keys).toEqual(["~{idunox}:jobs:*"]);
    expect(globEscape("a*b?c[d]e\\f")).toBe("a\\*b\\?c\\[d\\]e\\\\f");
    expect(rulesOf("x[1]:", "producer").keys).toEqual([
      "~x\\[1\\]:pending",
      "~x\\[1\\]:intake:hints",
    ]);
  });

  it("writes a password only as its SHA-256 digest, and a user without one as off", () => {
    const text = renderAclFile("p:", { passwords: { poller: "s3cret" } });
    expect(text).not.toContain("s3cret");
    expect(text).toMatch(/^user poller reset on #[0-9a-f]{64} ~p:\* /m);
    expect(text).toMatch(/^user producer reset off ~p:pending /m);
    expect(renderAclFile("p:", { format: "commands" })).toMatch(
      /^ACL SETUSER consumer reset off /m,
    );
  });
});

describe("describeAclRefusal", () => {
  it.each([
    ["NOPERM this user has no permissions to run the 'xadd' command", /command XADD .*\(NOPERM\)/],
    ["NOPERM User producer has no permissions to run the 'evalsha' command", /command EVALSHA/],
    [
      "NOPERM this user has no permissions to access one of the keys used as arguments",
      /a key outside/,
    ],
    [
      "ERR The user executing the script can't run this command or subcommand script: 2b58…, on @user_script:1.",
      /a command of a Lua script .*\(NOPERM\)/,
    ],
    [
      "ERR The user executing the script can't access at least one of the keys mentioned",
      /a key outside/,
    ],
  ])("names the refusal in %s", (message, line) => {
    const described = describeAclRefusal(message);
    expect(described).toMatch(line);
    expect(described).toContain("idunox-poller acl");
  });

  it("leaves other errors alone", () => {
    expect(
      describeAclRefusal("WRONGTYPE Operation against a key holding the wrong kind of value"),
    ).toBeNull();
    expect(describeAclRefusal("Connection is closed.")).toBeNull();
  });
});
