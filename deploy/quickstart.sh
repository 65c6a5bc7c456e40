#!/usr/bin/env bash
# Quickstart: installs what is missing (Debian), builds ihc, starts redis-server, one
# ihc-coordinator and three ihc-agents running simulated work, interrupts one
# hardware_id, and shows the result, the work that stopped, the work that kept running
# and what Redis now holds.  Usage: bash deploy/quickstart.sh [--keep]
#   --keep   leave everything running afterwards (stop with: kill $(cat /tmp/ihc-quickstart/pids))
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
keep=0
[ "${1:-}" = "--keep" ] && keep=1
run=/tmp/ihc-quickstart
rm -rf "$run" && mkdir -p "$run"

if [ -t 1 ]; then b=$'\033[1m' d=$'\033[2m' n=$'\033[0m'; else b= d= n=; fi
say() { printf '\n%s== %s%s\n' "$b" "$*" "$n"; }
show() { printf '%s$ %s%s\n' "$d" "$*" "$n"; eval "$@"; }

# --- install and build ---------------------------------------------------------------
deps=(build-essential cmake pkg-config libnng-dev libmsgpack-dev libhiredis-dev libcmocka-dev
      libjansson-dev libmicrohttpd-dev libmbedtls-dev libcurl4-openssl-dev redis-server
      redis-tools curl)
missing=()
for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
say "building (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIHC_BUILD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" 2>&1 | tail -1
bin=$here/build/bin

# --- free ports so the demo never collides with anything already running -------------
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null ||
              shuf -i 20000-60000 -n 1; }
redis_port=$(free_port); pub=$(free_port); rep=$(free_port); ctl=$(free_port); http=$(free_port)
export IHC_REDIS_URL=redis://127.0.0.1:$redis_port/0
export IHC_PUB_URL=tcp://127.0.0.1:$pub IHC_REPORT_URL=tcp://127.0.0.1:$rep
export IHC_CONTROL_URL=tcp://127.0.0.1:$ctl IHC_HTTP_ADDR=127.0.0.1:$http
export INTERRUPT_TIMEOUT=2.0 IHC_MODULE_TIMEOUT=0.5

pids=()
cleanup() {
    if ((keep)); then
        printf '%s\n' "${pids[@]}" >"$run/pids"
        say "left running; to use it from this shell:"
        echo "export IHC_CONTROL_URL=$IHC_CONTROL_URL IHC_PUB_URL=$IHC_PUB_URL"
        echo "export IHC_LOCAL_URL=unix://$run/a.sock   # node-a's local API, for ihc run"
        echo "export PATH=$bin:\$PATH                  # ihc, ihc-agent, ihc-coordinator"
        echo "HTTP API: http://127.0.0.1:$http   Redis: redis-cli -p $redis_port"
        echo "stop with: kill \$(cat $run/pids)"
        return
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS CMD…: polls CMD until it succeeds
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || { echo "timed out waiting for: $*" >&2; return 1; }
        sleep 0.1
    done
}

say "starting redis-server on :$redis_port, ihc-coordinator, and 3 agents"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$run" \
    >"$run/redis.log" 2>&1 & pids+=($!)
wait_for 10 redis-cli -p "$redis_port" ping
"$bin/ihc-coordinator" >"$run/coordinator.log" 2>&1 & pids+=($!)
wait_for 10 curl -sf "http://127.0.0.1:$http/healthz"
IHC_AGENT_ID=node-a "$bin/ihc-agent" --simulate dev-1,dev-2 --local "unix://$run/a.sock" >"$run/node-a.log" 2>&1 & pids+=($!)
IHC_AGENT_ID=node-b "$bin/ihc-agent" --simulate dev-2,dev-3 --local "unix://$run/b.sock" >"$run/node-b.log" 2>&1 & pids+=($!)
IHC_AGENT_ID=node-c "$bin/ihc-agent" --simulate dev-3,dev-4 --local "unix://$run/c.sock" >"$run/node-c.log" 2>&1 & pids+=($!)
count() { curl -sf "http://127.0.0.1:$http$1" | grep -o "$2" | wc -l; }
# Ready when the three agents said hello (their modules are known) and 6 sessions run.
wait_for 15 bash -c "[ \$(curl -sf http://127.0.0.1:$http/v1/agents | grep -o '\"session_management\"' | wc -l) -ge 3 ] &&
                     [ \$(curl -sf http://127.0.0.1:$http/v1/sessions | grep -o '\"session_id\"' | wc -l) -ge 6 ]"

say "the agents and their work"
show "$bin/ihc agents"
show "$bin/ihc sessions"
sleep 1
show "tail -n 3 $run/node-b.log"

say "interrupting dev-2 over HTTP (held by node-a and node-b)"
mark=$(date -u +%Y-%m-%dT%H:%M:%S.%3N)
printf '%s$ %s%s\n' "$d" "curl -s -X POST http://127.0.0.1:$http/v1/interrupt -H 'Content-Type: application/json' -d '{\"hardware_id\":\"dev-2\",\"reason\":\"user said stop\"}'" "$n"
result=$(curl -s -X POST "http://127.0.0.1:$http/v1/interrupt" -H 'Content-Type: application/json' \
         -d '{"hardware_id":"dev-2","reason":"user said stop"}')
echo "$result"
stopped=$(echo "$result" | grep -o '"cleaned_sessions":\[[^]]*\]' | grep -o 'dev-2-[^"]*' || true)
sleep 1.5

say "work that stopped (dev-2) and work that kept running (dev-1, dev-3, dev-4)"
show "grep -h 'stopped session' $run/node-a.log $run/node-b.log | grep 'hw=dev-2'"
after() { cat $run/node-*.log | awk -v m="$mark" '$1 > m' | grep "$@"; }
echo "progress logged since the interrupt ($mark): dev-1, dev-3 and dev-4 kept running"
after progress | sort | tail -6
since=0
for id in $stopped; do since=$((since + $(after -c "progress session=$id" || true))); done
echo "interrupted dev-2 sessions:" $stopped "— generators stopped: $(after -c 'stopped session=dev-2' || true), progress lines of theirs since the interrupt: $since"
echo "the simulation then begins new dev-2 work, in the new epoch (it is not cancelled):"
after 'started session=dev-2'

say "the same through the CLI: interrupt dev-3, then statistics"
show "$bin/ihc interrupt dev-3 --reason 'from the CLI'" || true
show "$bin/ihc stats"

say "what Redis holds (the commands a user would type)"
show "redis-cli -p $redis_port XREVRANGE ihc:interrupts + - COUNT 1"
echo "(the flag says the last interrupt was for dev-2/dev-3; it resets after SESSION_CLEANUP_DELAY)"
show "redis-cli -p $redis_port HGETALL ihc:flags"
show "redis-cli -p $redis_port GET 'ihc:hw:{dev-2}:epoch'"
show "redis-cli -p $redis_port SMEMBERS 'ihc:hw:{dev-1}:sessions'"
show "redis-cli -p $redis_port HGETALL ihc:stats"
show "redis-cli -p $redis_port --scan --pattern 'ihc:agent:*'"

say "done — logs are in $run/"
