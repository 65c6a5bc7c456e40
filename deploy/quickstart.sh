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

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; eval "$@"; }

# --- install and build ---------------------------------------------------------------
deps=(build-essential cmake pkg-config libnng-dev libmsgpack-dev libhiredis-dev libcmocka-dev
      libjansson-dev libmicrohttpd-dev libmbedtls-dev redis-server redis-tools curl)
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
        say "left running (pids in $run/pids); stop with: kill \$(cat $run/pids)"
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
IHC_AGENT_ID=node-a "$bin/ihc-agent" --simulate dev-1,dev-2 --local "ipc://$run/a.sock" >"$run/node-a.log" 2>&1 & pids+=($!)
IHC_AGENT_ID=node-b "$bin/ihc-agent" --simulate dev-2,dev-3 --local "ipc://$run/b.sock" >"$run/node-b.log" 2>&1 & pids+=($!)
IHC_AGENT_ID=node-c "$bin/ihc-agent" --simulate dev-3,dev-4 --local "ipc://$run/c.sock" >"$run/node-c.log" 2>&1 & pids+=($!)
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
show "curl -s -X POST http://127.0.0.1:$http/v1/interrupt -H 'Content-Type: application/json' -d '{\"hardware_id\":\"dev-2\",\"reason\":\"user said stop\"}'"
echo
mark=$(date -u +%Y-%m-%dT%H:%M:%S.%3N)
sleep 1.5

say "work that stopped (dev-2) and work that kept running (dev-1, dev-3, dev-4)"
show "grep -h 'stopped session' $run/node-a.log $run/node-b.log | grep 'hw=dev-2'"
echo "progress logged after the interrupt ($mark):"
show "cat $run/node-*.log | grep progress | awk '\$1 > \"$mark\"' | sort | tail -6"
echo "the simulation then starts new dev-2 work, in the new epoch:"
show "grep -h 'started session=dev-2' $run/node-a.log $run/node-b.log"

say "the same through the CLI: interrupt dev-3, then statistics"
show "$bin/ihc interrupt dev-3 --reason 'from the CLI'" || true
show "$bin/ihc stats"

say "what Redis holds (the commands a user would type)"
show "redis-cli -p $redis_port XREVRANGE ihc:interrupts + - COUNT 1"
show "redis-cli -p $redis_port HGETALL ihc:flags"
show "redis-cli -p $redis_port GET 'ihc:hw:{dev-2}:epoch'"
show "redis-cli -p $redis_port SMEMBERS 'ihc:hw:{dev-1}:sessions'"
show "redis-cli -p $redis_port HGETALL ihc:stats"
show "redis-cli -p $redis_port KEYS 'ihc:agent:*'"

say "done — logs are in $run/"
