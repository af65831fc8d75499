import { writeFileSync } from "node:fs";
import { SETTINGS } from "../config/schema.js";
import { ACL_USERS, type AclUser, renderAclFile } from "../store/acl.js";
import { EXIT, parseCommandArgs, UsageError } from "./common.js";

const HELP = `Usage: idunox-poller acl [options]

Prints a Redis ACL file (for redis-server --aclfile) with three users, each allowed only the
commands it uses on the keys of one prefix: poller (the daemon), producer (track) and
consumer (tail, status, consumer groups). See docs/operations.md, "Redis ACL users".

Options:
  --prefix PREFIX        key prefix (default: $POLLER_KEY_PREFIX or idunox:jobs:)
  --passwords-from-env   set each user's password from ACL_POLLER_PASSWORD,
                         ACL_PRODUCER_PASSWORD and ACL_CONSUMER_PASSWORD (written as SHA-256
                         digests); a user without one is written "off"
  --commands             print ACL SETUSER commands for redis-cli instead of an ACL file
                         (for a Redis whose users are managed live, e.g. one that holds
                         other users already)
  --out FILE             write the file instead of printing it (mode 0600)
Exit codes: 0 written, 2 usage.`;

export const ACL_PASSWORD_ENV: Record<AclUser, string> = {
  poller: "ACL_POLLER_PASSWORD",
  producer: "ACL_PRODUCER_PASSWORD",
  consumer: "ACL_CONSUMER_PASSWORD",
};

export async function runAclCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {
    prefix: { type: "string" },
    "passwords-from-env": { type: "boolean" },
    out: { type: "string" },
    commands: { type: "boolean" },
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  const prefix = values.prefix ?? process.env.POLLER_KEY_PREFIX ?? "idunox:jobs:";
  // The daemon would refuse a prefix its schema refuses; an ACL for it would be of no use.
  const checked = SETTINGS.keyPrefix.schema.safeParse(prefix);
  if (!checked.success) throw new UsageError(`--prefix: expected ${SETTINGS.keyPrefix.expect}`);
  const passwords: Partial<Record<AclUser, string>> = {};
  if (values["passwords-from-env"]) {
    for (const user of ACL_USERS) {
      const password = process.env[ACL_PASSWORD_ENV[user]];
      if (password !== undefined && password !== "") passwords[user] = password;
    }
  }
  const text = renderAclFile(checked.data, {
    passwords,
    format: values.commands ? "commands" : "aclfile",
  });
  if (values.out === undefined) process.stdout.write(text);
  else writeFileSync(values.out, text, { mode: 0o600 });
  return EXIT.ok;
}
