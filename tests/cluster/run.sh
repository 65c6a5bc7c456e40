#!/usr/bin/env bash
# Cluster tests: the built ihc-coordinator and ihc-agent on four hosts in network namespaces
# (tests/cluster/netns.sh). Host 0 runs redis-server and the coordinator (10.77.0.1); hosts
# 1-3 each run `ihc-agent --simulate dev-<i>,shared`. Tests: an interrupt of the shared
# hardware_id stops it everywhere; a host cut off during an interrupt is reported missing and
# catches up when it returns; a coordinator crash and restart; an agent restart; an interrupt
# over a throttled link.
#
#   sudo IHC_BIN_DIR=build/bin bash tests/cluster/run.sh [TEST…]
#
# TEST names: harness shared cutoff cutoff_reset coordinator_restart agent_restart throttled
# shutdown (default: all; shutdown, when chosen, should come last).
# Needs root, iproute2, redis-server, curl and jq (installed with apt-get when missing).
# Logs are kept in $IHC_CLUSTER_LOGS (default: a temporary directory, removed on success).
# Ends with "N passed, N failed"; exits non-zero when anything failed.

set -u
set -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${IHC_BIN_DIR:-$ROOT/build/bin}
case $BIN in
/*) ;;
*) if [ -d "$BIN" ]; then BIN=$(cd "$BIN" && pwd); else BIN=$ROOT/$BIN; fi ;;
esac

# shellcheck source=netns.sh
. "$HERE/netns.sh"

NAGENTS=3
COORD_ADDR=$(ns_addr 0)
LOGS=${IHC_CLUSTER_LOGS:-$(mktemp -d /tmp/ihc-cluster.XXXXXX)}
mkdir -p "$LOGS"
PASS=0
FAIL=0
T_START=$SECONDS
COORD_PID=""
declare -A AGENT_PID=()
# Short heartbeats and TTL keep the tests fast; the defaults are 1 s and 5 s.
HEARTBEAT=0.3
AGENT_TTL=2.0

log() { printf '[cluster %3ds] %s\n' "$((SECONDS - T_START))" "$*"; }
pass() {
  printf 'PASS %s\n' "$1"
  PASS=$((PASS + 1))
}
fail() {
  printf 'FAIL %s\n' "$1"
  shift
  local l
  for l in "$@"; do printf '     %s\n' "$l"; done
  FAIL=$((FAIL + 1))
}

finish() {
  local rc=$?
  ns_teardown
  if [ "$FAIL" -gt 0 ] || [ $rc -ne 0 ]; then
    local f
    for f in "$LOGS"/*.log; do
      [ -s "$f" ] || continue
      printf -- '---- last 25 lines of %s\n' "$f"
      tail -25 "$f"
    done
    log "logs kept in $LOGS"
  elif [ -z "${IHC_CLUSTER_LOGS:-}" ]; then
    rm -rf "$LOGS"
  fi
  log "total time $((SECONDS - T_START)) s"
  printf '%d passed, %d failed\n' "$PASS" "$FAIL"
  if [ "$FAIL" -gt 0 ] && [ $rc -eq 0 ]; then rc=1; fi
  exit $rc
}

# wait_for SECONDS CMD…: runs CMD until it succeeds or SECONDS pass (fractions allowed).
wait_for() {
  local end
  end=$(($(date +%s%N) + ${1%.*} * 1000000000))
  shift
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    [ "$(date +%s%N)" -lt "$end" ] || return 1
    sleep 0.1
  done
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---- prerequisites ----------------------------------------------------------------------

[ "$(id -u)" = 0 ] || {
  echo "cluster tests need root (network namespaces)" >&2
  printf '0 passed, 1 failed\n'
  exit 1
}
need=()
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
fi
for p in ihc-coordinator ihc-agent; do
  if [ ! -x "$BIN/$p" ]; then
    echo "no $BIN/$p: build first (cmake --build build) or set IHC_BIN_DIR" >&2
    printf '0 passed, 1 failed\n'
    exit 1
  fi
done
# The tests' own servers may be reached without a proxy.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

# ---- the cluster ------------------------------------------------------------------------

# api METHOD PATH [BODY]: HTTP request to the coordinator from host 0; prints the body,
# fails on transport errors (any HTTP status is an answer).
api() {
  local args=(-sS --max-time 15 -X "$1" "http://127.0.0.1:7480$2")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' -d "$3")
  ns_exec 0 curl "${args[@]}"
}

start_redis() {
  ns_spawn 0 "$LOGS/redis.log" redis-server --port 6379 --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$LOGS"
  wait_for 10 ns_exec 0 redis-cli -p 6379 ping
}

start_coordinator() {
  mkdir -p "$LOGS/state"
  ns_spawn 0 "$LOGS/coordinator.log" env IHC_REDIS_URL=redis://127.0.0.1:6379/0 \
    IHC_STATE_DIR="$LOGS/state" IHC_HEARTBEAT_INTERVAL=$HEARTBEAT IHC_AGENT_TTL=$AGENT_TTL \
    IHC_LOG_LEVEL=debug "$BIN/ihc-coordinator"
  COORD_PID=$NS_LAST_PID
  wait_for 15 api GET /healthz
}

start_agent() {
  local i=$1
  ns_spawn "$i" "$LOGS/agent-$i.log" env IHC_AGENT_ID="node-$i" \
    IHC_PUB_URL="tcp://$COORD_ADDR:7450" IHC_REPORT_URL="tcp://$COORD_ADDR:7451" \
    IHC_LOCAL_URL="unix://$LOGS/agent-$i.sock" IHC_HEARTBEAT_INTERVAL=$HEARTBEAT \
    IHC_LOG_LEVEL=debug "$BIN/ihc-agent" --simulate "dev-$i,shared"
  AGENT_PID[$i]=$NS_LAST_PID
}

# agent_connected ID [PID]: the coordinator lists agent ID as connected (with that pid).
agent_connected() {
  api GET /v1/agents | jq -e --arg id "$1" --arg pid "${2:-}" \
    '.agents | any(.agent_id == $id and .connected == true and ($pid == "" or (.pid|tostring) == $pid))'
}
all_agents_connected() {
  local i
  for ((i = 1; i <= NAGENTS; i++)); do agent_connected "node-$i" || return 1; done
}

# sessions HW AGENT: the ids of AGENT's active sessions of HW that the coordinator knows.
sessions() {
  api GET "/v1/sessions?hardware_id=$1" |
    jq -r --arg a "$2" '.sessions[] | select(.agent_id == $a and .state == "active") | .session_id'
}
has_session() { [ -n "$(sessions "$1" "$2")" ]; }
# every_node_has HW: each agent has an active session of HW known to the coordinator.
every_node_has() {
  local i
  for ((i = 1; i <= NAGENTS; i++)); do has_session "$1" "node-$i" || return 1; done
}
# logged_stop I SID: agent I logged that session SID stopped (the simulated generators).
logged_stop() { grep -E "stopped session=$2( |\$)" "$LOGS/agent-$1.log" | grep -q .; }

jget() { jq -r "$1" <<<"$2"; }
jgetc() { jq -c "$1" <<<"$2"; }
jsorted() { jq -c "$1 | sort" <<<"$2"; }

# ---- tests ------------------------------------------------------------------------------

test_harness() {
  # Hosts were built by ns_setup; agents reach the coordinator's HTTP port across the bridge.
  if ns_exec 2 curl -sS --max-time 5 "http://$COORD_ADDR:7480/healthz" >/dev/null; then
    pass "harness: host 2 reaches the coordinator at $COORD_ADDR:7480"
  else
    fail "harness: host 2 reaches the coordinator at $COORD_ADDR:7480"
  fi
}

test_shared() {
  local name="shared: interrupt of a hardware_id held on 3 hosts stops it on every host"
  if ! wait_for 15 every_node_has shared; then
    fail "$name" "not every node has a 'shared' session: $(api GET '/v1/sessions?hardware_id=shared')"
    return
  fi
  local -A before=()
  local i dev1
  for ((i = 1; i <= NAGENTS; i++)); do before[$i]=$(sessions shared "node-$i"); done
  dev1=$(sessions dev-1 node-1)
  local res
  res=$(api POST /v1/interrupt '{"hardware_id":"shared","reason":"cluster test"}')
  local problems=()
  [ "$(jget .success "$res")" = true ] || problems+=("success is not true")
  [ "$(jsorted .agents.answered "$res")" = '["node-1","node-2","node-3"]' ] ||
    problems+=("answered: $(jgetc .agents.answered "$res")")
  [ "$(jgetc .agents.missing "$res")" = '[]' ] || problems+=("missing is not empty")
  local sid
  for ((i = 1; i <= NAGENTS; i++)); do
    for sid in ${before[$i]}; do
      jq -e --arg s "$sid" '.cleaned_sessions | index($s)' <<<"$res" >/dev/null ||
        problems+=("session $sid of node-$i not in cleaned_sessions")
      wait_for 5 logged_stop "$i" "$sid" || problems+=("agent $i did not log the stop of $sid")
    done
  done
  # Exactly that hardware_id: dev-1's session on node-1 runs on.
  [ -n "$dev1" ] && [ "$(sessions dev-1 node-1)" = "$dev1" ] ||
    problems+=("dev-1 session changed: was '$dev1', now '$(sessions dev-1 node-1)'")
  if [ ${#problems[@]} -eq 0 ]; then
    pass "$name ($(jget .total_time_ms "$res") ms)"
  else
    fail "$name" "${problems[@]}" "result: $res"
  fi
  LAST_ID=$(jget '.interrupt_id // 0' "$res")
}

test_cutoff() {
  local name="cutoff: a host cut off during an interrupt is reported missing"
  local name2="cutoff: the cut-off host catches up when its link returns"
  if ! wait_for 15 every_node_has shared || ! wait_for 10 all_agents_connected; then
    fail "$name" "setup: sessions $(api GET '/v1/sessions?hardware_id=shared')"
    return
  fi
  local stale t0 res elapsed epoch
  stale=$(sessions shared node-3)
  ns_cut 3 link
  t0=$(now_ms)
  res=$(api POST /v1/interrupt '{"hardware_id":"shared","reason":"cut test","timeout_ms":2000}')
  elapsed=$(($(now_ms) - t0))
  local problems=()
  [ "$(jget .success "$res")" = false ] || problems+=("success is not false")
  [ "$(jgetc .agents.missing "$res")" = '["node-3"]' ] ||
    problems+=("missing: $(jgetc .agents.missing "$res")")
  [ "$(jsorted .agents.answered "$res")" = '["node-1","node-2"]' ] ||
    problems+=("answered: $(jgetc .agents.answered "$res")")
  [ "$elapsed" -lt 4000 ] || problems+=("answer took $elapsed ms with timeout_ms 2000")
  if [ ${#problems[@]} -eq 0 ]; then
    pass "$name ($elapsed ms)"
  else
    fail "$name" "${problems[@]}" "result: $res"
  fi
  LAST_ID=$(jget '.interrupt_id // 0' "$res")
  epoch=$(jget '.epoch // 0' "$res")

  # While cut off, node-3's session of 'shared' still runs (nothing reached it).
  ns_heal 3
  stale_gone() {
    local sid
    for sid in $stale; do
      logged_stop 3 "$sid" || return 1
      sessions shared node-3 | grep -qx "$sid" && return 1
    done
    return 0
  }
  problems=()
  [ -n "$stale" ] || problems+=("node-3 had no 'shared' session before the cut")
  wait_for 20 agent_connected node-3 || problems+=("node-3 not connected again within 20 s")
  wait_for 20 stale_gone || problems+=("stale session(s) '$stale' of node-3 not cancelled within 20 s")
  # Any 'shared' session node-3 has now began after the interrupt.
  local bad
  bad=$(api GET '/v1/sessions?hardware_id=shared' |
    jq -r --argjson e "$epoch" '.sessions[] | select(.agent_id == "node-3" and .state == "active" and .epoch < $e) | .session_id')
  [ -z "$bad" ] || problems+=("node-3 still has sessions from before epoch $epoch: $bad")
  if [ ${#problems[@]} -eq 0 ]; then
    pass "$name2 (stale: $stale)"
  else
    fail "$name2" "${problems[@]}" "sessions: $(api GET '/v1/sessions?hardware_id=shared')"
  fi
  unset -f stale_gone
}

# Like cutoff, but the TCP connections die while the host is away (as when a NAT or firewall
# forgets them, or the coordinator's side is reset): the broadcast queued for the host is lost,
# so on return the agent can only learn of the interrupt from the epochs it is sent when it
# reconnects.
test_cutoff_reset() {
  local name="cutoff_reset: a host whose connections died while cut off cancels what it missed"
  if ! wait_for 15 every_node_has shared || ! wait_for 10 all_agents_connected; then
    fail "$name" "setup: sessions $(api GET '/v1/sessions?hardware_id=shared')"
    return
  fi
  local stale res epoch problems=()
  stale=$(sessions shared node-3)
  [ -n "$stale" ] || problems+=("node-3 had no 'shared' session before the cut")
  ns_cut 3 drop || problems+=("iptables DROP inside host 3 refused")
  res=$(api POST /v1/interrupt '{"hardware_id":"shared","reason":"cut+reset test","timeout_ms":1500}')
  [ "$(jgetc .agents.missing "$res")" = '["node-3"]' ] ||
    problems+=("missing: $(jgetc .agents.missing "$res")")
  epoch=$(jget '.epoch // 0' "$res")
  LAST_ID=$(jget '.interrupt_id // 0' "$res")
  # Destroy both ends of every connection between host 3 and the coordinator.
  ns_exec 3 ss -K dst "$COORD_ADDR" >/dev/null 2>&1
  ns_exec 0 ss -K dst "$(ns_addr 3)" >/dev/null 2>&1
  if ns_exec 3 ss -Htn dst "$COORD_ADDR" | grep -q ESTAB; then
    problems+=("could not reset host 3's connections (ss -K)")
  fi
  # Still away: the stale session must still be running on node-3.
  local sid
  for sid in $stale; do
    logged_stop 3 "$sid" && problems+=("node-3 stopped $sid while cut off (how?)")
  done
  ns_heal 3
  stale_gone() {
    local s
    for s in $stale; do
      logged_stop 3 "$s" || return 1
      sessions shared node-3 | grep -qx "$s" && return 1
    done
    return 0
  }
  wait_for 20 agent_connected node-3 || problems+=("node-3 not connected again within 20 s")
  wait_for 20 stale_gone || problems+=("stale session(s) '$stale' of node-3 not cancelled within 20 s")
  # The broadcast was lost with the connection: the agent learnt it from the epochs.
  grep -E "caught up.* hw=shared epoch=$epoch( |\$)" "$LOGS/agent-3.log" | grep -q . ||
    problems+=("node-3 did not log catching up with shared epoch $epoch")
  local bad
  bad=$(api GET '/v1/sessions?hardware_id=shared' |
    jq -r --argjson e "$epoch" '.sessions[] | select(.agent_id == "node-3" and .state == "active" and .epoch < $e) | .session_id')
  [ -z "$bad" ] || problems+=("node-3 still has sessions from before epoch $epoch: $bad")
  if [ ${#problems[@]} -eq 0 ]; then
    pass "$name (stale: $stale)"
  else
    fail "$name" "${problems[@]}" "result: $res" "sessions: $(api GET '/v1/sessions?hardware_id=shared')"
  fi
  unset -f stale_gone
}

test_coordinator_restart() {
  local name="coordinator_restart: agents reconnect to a restarted coordinator; ids continue"
  local problems=() res prev=${LAST_ID:-0}
  if [ "$prev" = 0 ]; then
    res=$(api POST /v1/interrupt '{"hardware_id":"dev-3","reason":"before restart"}')
    prev=$(jget '.interrupt_id // 0' "$res")
  fi
  kill -KILL "$COORD_PID"
  wait "$COORD_PID" 2>/dev/null
  start_coordinator || problems+=("coordinator did not serve /healthz again within 15 s")
  wait_for 20 all_agents_connected || problems+=("agents not all connected within 20 s: $(api GET /v1/agents | jq -c '[.agents[] | {agent_id, connected}]')")
  wait_for 10 has_session dev-1 node-1 || problems+=("node-1's dev-1 session unknown after restart")
  res=$(api POST /v1/interrupt '{"hardware_id":"dev-1","reason":"after restart"}')
  [ "$(jget .success "$res")" = true ] || problems+=("interrupt after restart failed")
  [ "$(jgetc .agents.answered "$res")" = '["node-1"]' ] ||
    problems+=("answered: $(jgetc .agents.answered "$res")")
  local id
  id=$(jget '.interrupt_id // 0' "$res")
  [ "$id" -gt "$prev" ] 2>/dev/null || problems+=("interrupt id $id does not continue after $prev")
  if [ ${#problems[@]} -eq 0 ]; then
    pass "$name (id $prev -> $id)"
  else
    fail "$name" "${problems[@]}" "result: $res"
  fi
  LAST_ID=$id
}

test_agent_restart() {
  local name="agent_restart: an agent killed and started again re-registers"
  local problems=() old=${AGENT_PID[2]} res
  kill -KILL "$old"
  wait "$old" 2>/dev/null
  start_agent 2
  wait_for 15 agent_connected node-2 "${AGENT_PID[2]}" ||
    problems+=("node-2 (pid ${AGENT_PID[2]}) not registered within 15 s: $(api GET /v1/agents | jq -c '[.agents[] | {agent_id, pid, connected}]')")
  wait_for 10 has_session dev-2 node-2 || problems+=("node-2's new dev-2 session unknown")
  res=$(api POST /v1/interrupt '{"hardware_id":"dev-2","reason":"after agent restart"}')
  [ "$(jget .success "$res")" = true ] || problems+=("interrupt of dev-2 failed")
  [ "$(jgetc .agents.answered "$res")" = '["node-2"]' ] ||
    problems+=("answered: $(jgetc .agents.answered "$res")")
  if [ ${#problems[@]} -eq 0 ]; then
    pass "$name (pid $old -> ${AGENT_PID[2]})"
  else
    fail "$name" "${problems[@]}" "result: $res"
  fi
}

test_throttled() {
  local name="throttled: an interrupt reaches a host on a 256 kbit/s link"
  local problems=() res
  wait_for 15 every_node_has shared || problems+=("not every node has a 'shared' session")
  ns_throttle 1 256kbit || problems+=("tc tbf refused")
  ns_throttle 0 256kbit || problems+=("tc tbf refused")
  res=$(api POST /v1/interrupt '{"hardware_id":"shared","reason":"throttled"}')
  [ "$(jget .success "$res")" = true ] || problems+=("success is not true")
  [ "$(jsorted .agents.answered "$res")" = '["node-1","node-2","node-3"]' ] ||
    problems+=("answered: $(jgetc .agents.answered "$res")")
  ns_unthrottle 0
  ns_unthrottle 1
  if [ ${#problems[@]} -eq 0 ]; then
    pass "$name ($(jget .total_time_ms "$res") ms)"
  else
    fail "$name" "${problems[@]}" "result: $res"
  fi
}

# exited PID: the process ended (gone, or a zombie waiting for `wait`).
exited() { [ ! -e "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

test_shutdown() {
  local name="shutdown: coordinator and agents exit 0 on SIGTERM, no sanitizer report"
  local problems=() i pid rc who
  local -A pids=()
  for ((i = 1; i <= NAGENTS; i++)); do pids[${AGENT_PID[$i]}]="agent node-$i"; done
  pids[$COORD_PID]=coordinator
  for pid in "${!pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${!pids[@]}"; do
    who=${pids[$pid]}
    if ! wait_for 10 exited "$pid"; then
      problems+=("$who (pid $pid) still running 10 s after SIGTERM")
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    rc=$?
    [ $rc -eq 0 ] || problems+=("$who exited with status $rc")
  done
  local f
  for f in "$LOGS"/coordinator.log "$LOGS"/agent-*.log; do
    grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer' "$f" &&
      problems+=("sanitizer report in $f")
  done
  if [ ${#problems[@]} -eq 0 ]; then
    pass "$name"
  else
    fail "$name" "${problems[@]}"
  fi
}

# ---- main -------------------------------------------------------------------------------

ALL=(harness shared cutoff cutoff_reset coordinator_restart agent_restart throttled shutdown)
if [ $# -gt 0 ]; then TESTS=("$@"); else TESTS=("${ALL[@]}"); fi
for t in "${TESTS[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || {
    echo "unknown test '$t' (known: ${ALL[*]})" >&2
    exit 2
  }
done

log "binaries: $BIN; logs: $LOGS"
if ! ns_setup $((NAGENTS + 1)); then
  trap finish EXIT
  fail "netns: build a cluster of $((NAGENTS + 1)) hosts"
  exit 1
fi
trap finish EXIT
start_redis || { fail "redis-server on host 0"; exit 1; }
start_coordinator || { fail "ihc-coordinator on host 0 serves /healthz"; exit 1; }
for ((i = 1; i <= NAGENTS; i++)); do start_agent "$i"; done
if wait_for 20 all_agents_connected; then
  pass "cluster: coordinator on host 0, $NAGENTS agents on hosts 1-$NAGENTS registered"
else
  fail "cluster: $NAGENTS agents registered within 20 s" "$(api GET /v1/agents)"
  exit 1
fi

LAST_ID=0
for t in "${TESTS[@]}"; do
  "test_$t"
done
