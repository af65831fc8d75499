#!/usr/bin/env bash
# Operations checks: alert rules (promtool check + unit tests), the Prometheus config for compose,
# the AsyncAPI document of the streams (valid AsyncAPI 3.0, payload schemas resolved),
# the compose file (docker compose / docker-compose config), the Dockerfile (dockerfile-utils
# lint plus the properties docs/operations.md promises), and the Grafana dashboard (valid JSON,
# sane panel ids and layout). Every idunox_poller_* name used by the rules and the dashboard
# must be a metric the daemon exports, and every alert and metric must be in docs/operations.md.
# Installs what it needs (Debian packages, npm) when missing. Run from anywhere; needs npm ci.
set -euo pipefail
trap 'echo "check-ops: failed at line $LINENO" >&2' ERR
cd "$(dirname "$0")/.."

step() { printf '\n--> %s\n' "$*"; }
fail() {
  printf 'check-ops: %s\n' "$*" >&2
  exit 1
}

apt_ready=0
apt_install() {
  if [ "$apt_ready" = 0 ]; then
    apt-get update -qq
    apt_ready=1
  fi
  # No recommends: docker-compose would otherwise pull in a whole Docker engine.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step "promtool"
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus; its service is not started)"
  apt_install prometheus
fi
promtool --version 2>&1 | sed -n 1p
promtool check rules config/prometheus/alerts.yml
promtool test rules config/prometheus/alerts.test.yml
# prometheus.yml names the rules by their path inside the container; check it against the copy.
cp config/prometheus/alerts.yml "$tmp/alerts.yml"
sed "s#/etc/prometheus/rules/alerts.yml#$tmp/alerts.yml#" config/prometheus/prometheus.yml \
  >"$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml"

step "docker-compose.yml"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  if ! command -v docker-compose >/dev/null 2>&1; then
    echo "installing docker-compose (Debian package, used only to validate the file)"
    apt_install docker-compose
  fi
  compose=(docker-compose)
fi
"${compose[@]}" version 2>&1 | sed -n 1p # sed reads to the end: head could SIGPIPE the writer under pipefail
# Validates against the Compose schema, resolves anchors and interpolation; no engine needed.
"${compose[@]}" -f docker-compose.yml --profile monitoring config -q
services=$("${compose[@]}" -f docker-compose.yml --profile monitoring config --services | sort | tr '\n' ' ')
[ "$services" = "poller prometheus redis seed simulator tail " ] ||
  fail "unexpected compose services: $services"
# The poller's hardening (docs/operations.md): read-only root, no capabilities, no privilege
# escalation, and the key from a secret file rather than the environment.
poller=$("${compose[@]}" -f docker-compose.yml config | sed -n '/^  poller:$/,/^  [a-z][a-z-]*:$/p')
for want in 'read_only: true' '- ALL' 'no-new-privileges:true' 'IDUNOX_API_KEY_FILE: /run/secrets/idunox_api_key' \
  'source: idunox_api_key'; do
  grep -Fq -- "$want" <<<"$poller" || fail "docker-compose.yml: the poller service lacks: $want"
done
if grep -Eq '^ +IDUNOX_API_KEY:' <<<"$poller"; then fail "docker-compose.yml: the poller gets the key from the environment"; fi
for mounted in config/prometheus/prometheus.yml config/prometheus/alerts.yml examples/compose/demo-api-key; do
  [ -f "$mounted" ] || fail "docker-compose.yml mounts $mounted, which does not exist"
done

step "Dockerfile"
lint=$(npx --yes dockerfile-utils@0.16.3 lint Dockerfile 2>&1) || true
[ -z "$lint" ] || fail "dockerfile-utils lint:"$'\n'"$lint"
grep -Eq '^FROM node:24-bookworm-slim AS build$' Dockerfile || fail "build stage is not node:24-bookworm-slim"
grep -Eq '^FROM node:24-bookworm-slim AS runtime$' Dockerfile || fail "runtime stage is not node:24-bookworm-slim"
grep -Eq '^USER node$' Dockerfile || fail "the image must run as user node"
grep -Eq '^EXPOSE 9464$' Dockerfile || fail "EXPOSE 9464 missing"
grep -Eq '^ENTRYPOINT \["/usr/bin/tini", "--"\]$' Dockerfile || fail "tini is not PID 1"
grep -Eq '^HEALTHCHECK .*' Dockerfile || fail "HEALTHCHECK missing"
grep -Fq '/healthz' Dockerfile || fail "HEALTHCHECK does not probe /healthz"
# The image runs the daemon exactly as `npm start` does (the benchmark measures that command too).
cmd=$(sed -nE 's/^CMD \[(.*)\]$/\1/p' Dockerfile | node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>console.log(JSON.parse(`[${s}]`).join(" ")))')
start=$(node -p 'require("./package.json").scripts.start')
[ "$cmd" = "$start" ] || fail "Dockerfile CMD ($cmd) differs from npm start ($start)"
[[ "$start" =~ ^node\ (--[a-z0-9=-]+\ )*dist/cli/main\.js\ run$ ]] || fail "unexpected start command: $start"
grep -Eq 'npm ci --omit=dev' Dockerfile || fail "runtime stage must install with npm ci --omit=dev"
# Every build-context path the Dockerfile copies must exist and must not be dockerignored.
while read -r src; do
  [ -e "$src" ] || fail "Dockerfile copies $src, which does not exist"
  if grep -Fxq "$src" .dockerignore; then fail ".dockerignore excludes $src, which the Dockerfile copies"; fi
done < <(sed -nE 's/^COPY ([^-][^ ]*( [^ ]+)*) [^ ]+$/\1/p' Dockerfile | tr ' ' '\n')
for excluded in node_modules dist .git test; do
  grep -Fxq "$excluded" .dockerignore || fail ".dockerignore must exclude $excluded"
done

step "dashboard, metric names and docs"
node --import tsx --input-type=module - <<'EOF'
import { readFileSync } from "node:fs";
import { Metrics } from "./src/server/metrics.ts";

const problems = [];
const problem = (msg) => problems.push(msg);

// What the daemon really exports, store gauges included (they exist only with a collector).
const metrics = new Metrics({
  collectStoreStats: async () => ({
    tracked: 0,
    dueBacklog: 0,
    scheduleLagSeconds: 0,
    rejected: 0,
    groups: [],
  }),
});
const exported = new Set();
const own = [];
for (const m of await metrics.registry.getMetricsAsJSON()) {
  exported.add(m.name);
  if (m.type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) exported.add(m.name + s);
  if (!/^idunox_poller_(process|nodejs)_/.test(m.name)) own.push(m.name);
}
// Used by the rules when present; the rules fall back to the default cap without it.
const optional = new Set(["idunox_poller_stream_maxlen"]);
const namesIn = (text) => new Set(text.match(/\bidunox_poller_[a-z0-9_]+/g) ?? []);
const checkNames = (where, text) => {
  for (const name of namesIn(text)) {
    if (!exported.has(name) && !optional.has(name)) problem(`${where} uses ${name}, not exported`);
  }
};

const rules = readFileSync("config/prometheus/alerts.yml", "utf8");
checkNames("alerts.yml", rules);
const alertNames = [...rules.matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1]);
if (alertNames.length === 0) problem("alerts.yml has no alerts");

const dash = JSON.parse(readFileSync("config/grafana/dashboard.json", "utf8"));
const vars = dash.templating?.list ?? [];
if (!vars.some((v) => v.type === "datasource" && v.query === "prometheus" && v.name === "datasource")) {
  problem("dashboard has no prometheus datasource variable named datasource");
}
if (typeof dash.uid !== "string" || typeof dash.title !== "string") problem("dashboard uid/title");
const ids = new Set();
const cells = new Map();
let queries = 0;
for (const p of dash.panels ?? []) {
  const where = `panel ${p.id} "${p.title}"`;
  if (!Number.isInteger(p.id) || p.id < 1) problem(`${where}: id must be a positive integer`);
  if (ids.has(p.id)) problem(`${where}: duplicate id`);
  ids.add(p.id);
  const g = p.gridPos ?? {};
  if (![g.x, g.y, g.w, g.h].every(Number.isInteger) || g.x < 0 || g.y < 0 || g.w < 1 || g.h < 1 || g.x + g.w > 24) {
    problem(`${where}: bad gridPos ${JSON.stringify(g)}`);
    continue;
  }
  for (let x = g.x; x < g.x + g.w; x++) {
    for (let y = g.y; y < g.y + g.h; y++) {
      const other = cells.get(`${x},${y}`);
      if (other !== undefined) problem(`${where} overlaps panel ${other}`);
      cells.set(`${x},${y}`, p.id);
    }
  }
  if (p.type === "row") continue;
  if (p.datasource?.uid !== "${datasource}") problem(`${where}: not bound to the datasource variable`);
  const refIds = new Set();
  for (const t of p.targets ?? []) {
    if (typeof t.expr !== "string" || t.expr === "") problem(`${where}: empty query`);
    if (refIds.has(t.refId)) problem(`${where}: duplicate refId ${t.refId}`);
    refIds.add(t.refId);
    checkNames(where, t.expr ?? "");
    queries++;
  }
  if (refIds.size === 0) problem(`${where}: no query`);
}
// Named once per overlap cell; report each pair once.
const unique = [...new Set(problems)];

const docs = readFileSync("docs/operations.md", "utf8");
for (const name of own) if (!docs.includes(name)) unique.push(`docs/operations.md does not describe ${name}`);
for (const name of alertNames) if (!docs.includes(name)) unique.push(`docs/operations.md does not describe alert ${name}`);

if (unique.length > 0) {
  console.error(unique.join("\n"));
  process.exit(1);
}
console.log(
  `dashboard: ${ids.size} panels, ${queries} queries; ${alertNames.length} alerts; ${own.length} metrics documented`,
);
EOF

step "AsyncAPI document (docs/asyncapi.yaml, @asyncapi/parser)"
# The parser is a devDependency (npm ci installed it); the script resolves the schemas/ refs.
node scripts/check-asyncapi.mjs

step "operations checks passed"
