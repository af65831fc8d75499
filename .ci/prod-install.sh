#!/usr/bin/env bash
# Production install smoke test: what `npm ci --omit=dev` installs from package*.json, plus
# dist/ and config/ (exactly what the Docker image holds), must run the whole flow on its own:
# simulator, daemon, track, readiness, every job to a final state, SIGTERM exiting 0.
# Uses Redis at $REDIS_URL (default redis://127.0.0.1:6379) under a unique key prefix that is
# deleted afterwards. The run (after build and install) fails after PROD_INSTALL_LIMIT_S (90) s.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

LIMIT_S=${PROD_INSTALL_LIMIT_S:-90}
started=$(date +%s)
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
prefix="prod-install:$(node -e 'console.log(crypto.randomUUID().slice(0, 8))'):"
api_key="prod-install-$(node -e 'console.log(crypto.randomUUID())')"
work=$(mktemp -d)
sim_pid=""
daemon_pid=""

log() { printf '[prod-install %3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
rcli() { redis-cli -u "$redis_url" --no-auth-warning "$@"; }

cleanup() {
  local code=$?
  # Only the processes this script started, by pid.
  for pid in $daemon_pid $sim_pid; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$code" != 0 ]; then
    for f in sim.err daemon.out daemon.err; do
      [ -s "$work/$f" ] && { echo "--- last lines of $f"; tail -n 30 "$work/$f"; }
    done
  fi
  rcli --scan --pattern "${prefix}*" | while read -r key; do rcli del "$key" >/dev/null; done || true
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT

fail() {
  log "FAILED: $*"
  exit 1
}
deadline=$((started + LIMIT_S))
left() { echo $((deadline - $(date +%s))); }
# Polls a condition (a shell command) every 0.2 s until it holds; fails when the time budget is
# spent or a process this script started has died.
wait_until() {
  local what=$1
  shift
  until "$@"; do
    [ "$(left)" -gt 0 ] || fail "timed out waiting for $what"
    [ -z "$sim_pid" ] || kill -0 "$sim_pid" 2>/dev/null || fail "the simulator exited"
    [ -z "$daemon_pid" ] || kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited"
    sleep 0.2
  done
}

rcli ping >/dev/null || fail "Redis at $redis_url does not answer"

log "build"
npm run build --silent >/dev/null

log "fresh production install in $work"
cp package.json package-lock.json "$work/"
cp -R dist config "$work/"
(cd "$work" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
for dev in typescript vitest tsx @biomejs/biome; do
  [ ! -e "$work/node_modules/$dev" ] || fail "devDependency $dev was installed by --omit=dev"
done
cd "$work"
export NODE_ENV=production
# The budget covers the run itself, not how fast the registry answers.
deadline=$(($(date +%s) + LIMIT_S))

log "simulator (production install)"
IDUNOX_API_KEY="$api_key" LOG_LEVEL=warn \
  node dist/cli/main.js simulate --port 0 --json --jobs 3 --seed 4242 >sim.out 2>sim.err &
sim_pid=$!
wait_until "the simulator's address" test -s sim.out
read -r sim_url job_ids < <(node -e '
  const { url, jobIds } = JSON.parse(require("node:fs").readFileSync("sim.out", "utf8").split("\n")[0]);
  console.log(url, jobIds.join(" "));
')
[ "$(wc -w <<<"$job_ids")" = 3 ] || fail "simulator did not hand out 3 job ids: $job_ids"

http_port=$(node -e '
  const s = require("node:net").createServer().listen(0, "127.0.0.1", () => {
    console.log(s.address().port);
    s.close();
  });
')

log "daemon on :$http_port, prefix $prefix"
# Started exactly as `npm start` (and the image's CMD) start it, flags included.
read -ra start_command <<<"$(node -p 'require("./package.json").scripts.start')"
env IDUNOX_API_URL="$sim_url" IDUNOX_API_KEY="$api_key" IDUNOX_API_KEY_FILE= REDIS_URL="$redis_url" \
  POLLER_KEY_PREFIX="$prefix" POLLER_HTTP_PORT="$http_port" POLLER_HTTP_HOST=127.0.0.1 \
  POLLER_MIN_INTERVAL_MS=200 POLLER_MAX_INTERVAL_MS=1000 POLLER_INTAKE_INTERVAL_MS=50 \
  POLLER_IDLE_WAKE_MS=50 POLLER_REQUEST_TIMEOUT_MS=2000 POLLER_LEASE_MS=10000 \
  POLLER_SHUTDOWN_TIMEOUT_MS=5000 LOG_LEVEL=info \
  "${start_command[@]}" >daemon.out 2>daemon.err &
daemon_pid=$!

status_of() { node -e '
  fetch(process.argv[1]).then((r) => console.log(r.status), () => console.log(0));
' "http://127.0.0.1:$http_port$1"; }
ready() { [ "$(status_of /readyz)" = 200 ]; }
wait_until "/readyz 200" ready
[ "$(status_of /healthz)" = 200 ] || fail "/healthz is not 200"

log "track the 3 jobs (production install's track)"
# shellcheck disable=SC2086 # one argument per job id
REDIS_URL="$redis_url" POLLER_KEY_PREFIX="$prefix" node dist/cli/main.js track $job_ids

all_done() {
  [ "$(rcli scard "${prefix}pending")" = 0 ] || return 1
  local events
  events=$(rcli xrange "${prefix}events" - +)
  for id in $job_ids; do grep -Fxq "$id" <<<"$events" || return 1; done
}
wait_until "every job to reach a final state" all_done
log "all jobs final: $(rcli xlen "${prefix}events") events"

metrics=$(node -e 'fetch(process.argv[1]).then((r) => r.text()).then(console.log)' \
  "http://127.0.0.1:$http_port/metrics")
grep -Eq '^idunox_poller_polls_total\{outcome="ok"\} [1-9]' <<<"$metrics" ||
  fail "/metrics shows no successful poll"
grep -Eq '^idunox_poller_events_total\{type="status_changed"\} [1-9]' <<<"$metrics" ||
  fail "/metrics shows no status_changed event"
grep -Eq '^idunox_poller_tracked_jobs 0$' <<<"$metrics" || fail "/metrics still shows tracked jobs"
if grep -Fq "$api_key" daemon.out daemon.err sim.err <<<"$metrics"; then
  fail "the API key appears in a log or in /metrics"
fi
REDIS_URL="$redis_url" POLLER_KEY_PREFIX="$prefix" node dist/cli/main.js status --json >status.json
# shellcheck disable=SC2016 # a JavaScript template literal, not a shell expansion
node -e '
  const s = JSON.parse(require("node:fs").readFileSync("status.json", "utf8"));
  if (s.tracked !== 0) throw new Error(`status reports ${s.tracked} tracked jobs`);
' || fail "status command"

log "SIGTERM"
kill -TERM "$daemon_pid"
term_at=$(date +%s)
while kill -0 "$daemon_pid" 2>/dev/null; do
  if [ $(($(date +%s) - term_at)) -ge 15 ] || [ "$(left)" -le 0 ]; then
    fail "daemon did not exit after SIGTERM"
  fi
  sleep 0.2
done
code=0
wait "$daemon_pid" || code=$?
daemon_pid=""
[ "$code" = 0 ] || fail "daemon exited $code after SIGTERM"
grep -q '"msg":"stopped"' daemon.out || fail "daemon log has no \"stopped\" line"

kill -TERM "$sim_pid"
wait "$sim_pid" || true
sim_pid=""
cd "$repo"
log "passed in $(($(date +%s) - started)) s"
