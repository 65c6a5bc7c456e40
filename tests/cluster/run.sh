#!/usr/bin/env bash
# Cluster tests: the built ihc-coordinator and ihc-agent on five hosts in network namespaces
# (tests/cluster/netns.sh). Host 0 runs redis-server and the coordinator (10.77.0.1); hosts
# 1-3 each run `ihc-agent --simulate dev-<i>,shared`; host 4 (10.77.0.5) is the second
# coordinator's, used by the high-availability tests. Tests: an interrupt of the shared
# hardware_id stops it everywhere; a host cut off during an interrupt is reported missing and
# catches up when it returns; a coordinator crash and restart; an agent restart; an interrupt
# over a throttled link. Then, with two coordinators (coord-0 on host 0, coord-4 on host 4,
# IHC_LEASE_TTL=1, the same Redis) and the agents dialing both: the leader SIGKILLed during a
# stream of 20 interrupts/s from two `ihc` clients with both control URLs (counts, the gap
# until interrupts succeed again, no request hung, ids and epochs never go back); the leader
# cut off from Redis only by iptables (it stops within its lease, the standby takes over with
# a higher term, its late writes are refused by the fence, it stands by when the link returns);
# Redis through Sentinel (a replica on host 4, a sentinel on host 1, both coordinators on a
# redis-sentinel:// URL): the primary SIGKILLed, the replica promoted, interrupts written to it.
#
#   sudo IHC_BIN_DIR=build/bin bash tests/cluster/run.sh [TEST…]
#
# TEST names: harness shared cutoff cutoff_reset coordinator_restart agent_restart throttled
# failover partition sentinel shutdown (default: all). The first HA test (failover,
# partition, sentinel) turns the cluster into the two-coordinator shape for good, so those
# come after the others; sentinel kills the Redis primary, so it comes after the other HA
# tests, and shutdown, when chosen, comes last. NS_PREFIX / NS_SUBNET (netns.sh) let a second
# run go on at the same time (runs with the same prefix wait for each other).
# Needs root, iproute2, iptables, redis-server, curl and jq (installed with apt-get when missing).
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
# The high-availability tests add a second coordinator on a host of its own (host 4).
COORD2_HOST=$((NAGENTS + 1))
COORD2_ADDR=$(ns_addr "$COORD2_HOST")
COORD2_PID=""
HA=0
LEASE_TTL=1
PUB_URLS="tcp://$COORD_ADDR:7450"
REPORT_URLS="tcp://$COORD_ADDR:7451"
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
# verdict NAME DETAIL [CONTEXT…]: PASS "NAME (DETAIL)" when the caller's problems array is
# empty, else FAIL NAME with each problem, then the context lines. (A check whose context
# costs a request on the coordinator builds it only when failing, with pass/fail itself.)
verdict() {
  local name=$1 detail=$2
  shift 2
  if [ ${#problems[@]} -eq 0 ]; then
    pass "$name${detail:+ ($detail)}"
  else
    fail "$name" "${problems[@]}" "$@"
  fi
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
for p in ihc-coordinator ihc-agent ihc; do
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
  ns_exec "${API_HOST:-0}" curl "${args[@]}"
}
# api_on HOST METHOD PATH [BODY]: the same against the coordinator of HOST.
api_on() {
  local h=$1
  shift
  API_HOST=$h api "$@"
}
# rcli ARGS…: redis-cli against the cluster's Redis (from host 0, over loopback).
rcli() { ns_exec 0 redis-cli -p 6379 "$@"; }

start_redis() {
  ns_spawn 0 "$LOGS/redis.log" redis-server --port 6379 --bind "127.0.0.1 $COORD_ADDR" \
    --protected-mode no --save "" --appendonly no --dir "$LOGS"
  REDIS_PID=$NS_LAST_PID
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
    IHC_PUB_URL="$PUB_URLS" IHC_REPORT_URL="$REPORT_URLS" \
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
  verdict "$name" "$(jget .total_time_ms "$res") ms" "result: $res"
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
  verdict "$name" "$elapsed ms" "result: $res"
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
  # It stands by until the lease of the killed one (IHC_LEASE_TTL, 2 s by default) lapses.
  wait_for 10 role_is 0 leader || problems+=("restarted coordinator does not lead: $(api GET /healthz)")
  wait_for 20 all_agents_connected || problems+=("agents not all connected within 20 s: $(api GET /v1/agents | jq -c '[.agents[] | {agent_id, connected}]')")
  wait_for 10 has_session dev-1 node-1 || problems+=("node-1's dev-1 session unknown after restart")
  res=$(api POST /v1/interrupt '{"hardware_id":"dev-1","reason":"after restart"}')
  [ "$(jget .success "$res")" = true ] || problems+=("interrupt after restart failed")
  [ "$(jgetc .agents.answered "$res")" = '["node-1"]' ] ||
    problems+=("answered: $(jgetc .agents.answered "$res")")
  local id
  id=$(jget '.interrupt_id // 0' "$res")
  [ "$id" -gt "$prev" ] 2>/dev/null || problems+=("interrupt id $id does not continue after $prev")
  verdict "$name" "id $prev -> $id" "result: $res"
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
  verdict "$name" "pid $old -> ${AGENT_PID[2]}" "result: $res"
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
  verdict "$name" "$(jget .total_time_ms "$res") ms" "result: $res"
}

# ---- high availability: two coordinators on one Redis ------------------------------------

# coord_log HOST: the log file of the coordinator on HOST.
coord_log() { if [ "$1" = 0 ]; then echo "$LOGS/coordinator.log"; else echo "$LOGS/coordinator-$1.log"; fi; }
# coord_pid HOST: its pid.
coord_pid() { if [ "$1" = 0 ]; then echo "$COORD_PID"; else echo "$COORD2_PID"; fi; }
# other_coord HOST: the host of the other coordinator.
other_coord() { if [ "$1" = 0 ]; then echo "$COORD2_HOST"; else echo 0; fi; }

# start_ha_coordinator HOST: a coordinator of the pair on HOST (id coord-HOST), Redis on host 0
# reached over the bridge's address (so iptables can cut one host from it), lease of 1 s.
start_ha_coordinator() {
  local h=$1
  mkdir -p "$LOGS/state-$h"
  ns_spawn "$h" "$(coord_log "$h")" env IHC_REDIS_URL="${HA_REDIS_URL:-redis://$COORD_ADDR:6379/0}" \
    IHC_COORDINATOR_ID="coord-$h" IHC_LEASE_TTL=$LEASE_TTL IHC_STATE_DIR="$LOGS/state-$h" \
    IHC_HEARTBEAT_INTERVAL=$HEARTBEAT IHC_AGENT_TTL=$AGENT_TTL IHC_LOG_LEVEL=debug \
    "$BIN/ihc-coordinator"
  if [ "$h" = 0 ]; then COORD_PID=$NS_LAST_PID; else COORD2_PID=$NS_LAST_PID; fi
  wait_for 15 api_on "$h" GET /healthz
}

# role_is HOST ROLE [TERM_ABOVE]: HOST's /healthz says ROLE (with a term above TERM_ABOVE).
role_is() {
  api_on "$1" GET /healthz | jq -e --arg r "$2" --argjson t "${3:-0}" '.role == $r and .term > $t' >/dev/null
}
# standby_of HOST LEADER_HOST: HOST stands by and names LEADER_HOST's coordinator as leader.
standby_of() {
  api_on "$1" GET /healthz | jq -e --arg l "coord-$2" '.role == "standby" and .leader == $l' >/dev/null
}
# leader_host: the host whose coordinator leads (prints nothing when none does).
leader_host() {
  local h
  for h in 0 "$COORD2_HOST"; do
    role_is "$h" leader && { echo "$h"; return 0; }
  done
  return 1
}
all_agents_connected_on() { API_HOST=$1 all_agents_connected >/dev/null; }

# stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pid() {
  kill -TERM "$1" 2>/dev/null
  wait_for 10 exited "$1" || kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  return 0
}

# ha_setup: once, turns the cluster into the HA shape: the coordinator of host 0 restarted
# as coord-0 (it leads), coord-4 on host 4 standing by, both with IHC_LEASE_TTL=1 on host 0's
# Redis, and the agents restarted dialing both (comma lists). The other tests talk to host 0,
# so the HA tests come after them.
ha_setup() {
  [ "$HA" = 1 ] && return 0
  if [ "$HA" = failed ]; then
    HA_ERR="the HA setup failed before: ${HA_ERR:-?}"
    return 1
  fi
  HA=failed # set up once: a later test does not start coordinators twice
  local i
  stop_pid "$COORD_PID"
  start_ha_coordinator 0 || { HA_ERR="coord-0 did not serve /healthz"; return 1; }
  wait_for 10 role_is 0 leader || { HA_ERR="coord-0 did not lead: $(api_on 0 GET /healthz)"; return 1; }
  start_ha_coordinator "$COORD2_HOST" || { HA_ERR="coord-$COORD2_HOST did not serve /healthz"; return 1; }
  wait_for 10 standby_of "$COORD2_HOST" 0 ||
    { HA_ERR="coord-$COORD2_HOST is not a standby of coord-0: $(api_on "$COORD2_HOST" GET /healthz)"; return 1; }
  PUB_URLS="tcp://$COORD_ADDR:7450,tcp://$COORD2_ADDR:7450"
  REPORT_URLS="tcp://$COORD_ADDR:7451,tcp://$COORD2_ADDR:7451"
  for ((i = 1; i <= NAGENTS; i++)); do kill -TERM "${AGENT_PID[$i]}" 2>/dev/null; done
  for ((i = 1; i <= NAGENTS; i++)); do stop_pid "${AGENT_PID[$i]}"; done
  for ((i = 1; i <= NAGENTS; i++)); do start_agent "$i"; done
  wait_for 20 all_agents_connected_on 0 && wait_for 10 all_agents_connected_on "$COORD2_HOST" ||
    { HA_ERR="agents not connected to both coordinators within 20 s"; return 1; }
  HA=1
  log "HA: coord-0 (host 0) leads, coord-$COORD2_HOST (host $COORD2_HOST) stands by, $NAGENTS agents dial both"
}

# client_loop URLS HW OUT STOP PERIOD_MS TIMEOUT_MS: starts an interrupt of HW every PERIOD_MS
# through `ihc` with the control URL list URLS, until the file STOP exists; one line per
# request in OUT: "start_ms end_ms exit_status json" (runs in a host, via bash -c; IHC names
# the CLI). Requests run in the background, so a slow answer does not slow the stream, but at
# most 4 at once (a loaded 2-core machine must not drown in CLI processes).
client_loop() {
  local urls=$1 hw=$2 out=$3 stop=$4 period=$5 tmo=$6 t next d inflight=0
  t=${EPOCHREALTIME/./}
  next=$((t / 1000))
  while [ ! -e "$stop" ]; do
    while [ $inflight -ge 4 ]; do
      wait -n
      inflight=$((inflight - 1))
    done
    inflight=$((inflight + 1))
    (
      t=${EPOCHREALTIME/./}
      start=$((t / 1000))
      doc=$(timeout 20 "$IHC" --control "$urls" interrupt "$hw" --reason ha-test --timeout "$tmo" --json 2>/dev/null)
      rc=$?
      t=${EPOCHREALTIME/./}
      printf '%s %s %s %s\n' "$start" "$((t / 1000))" "$rc" "${doc//$'\n'/}" >>"$out"
    ) &
    next=$((next + period))
    t=${EPOCHREALTIME/./}
    d=$((next - t / 1000))
    if [ $d -gt 0 ]; then
      printf -v d '0.%03d' "$d"
      sleep "$d"
    fi
  done
  wait
}

have_successes_after() { [ "$(cat "${@:3}" 2>/dev/null | awk -v t="$2" '$1 >= t && $3 == 0' | wc -l)" -ge "$1" ]; }

# stream_ids: the interrupt ids of ihc:interrupts in stream (write) order.
stream_ids() { rcli --raw XRANGE ihc:interrupts - + | awk 'p == "id" { print } { p = $0 }'; }
# increasing: stdin's numbers strictly increase (prints the offenders otherwise).
increasing() { awk 'NR > 1 && $1 <= p { print p " then " $1; bad = 1 } { p = $1 } END { exit bad }'; }
# unique: stdin's numbers never repeat (prints the repeated ones otherwise).
unique() { sort -n | uniq -d | awk '{ print; bad = 1 } END { exit bad }'; }
# none_below_after N: in stdin's order (the stream's write order), once an id of at least N
# (the new term's first) was written, no id below N follows (an old term's, written late).
none_below_after() { awk -v n="$1" '$1 >= n { on = 1 } on && $1 < n { print; bad = 1 } END { exit bad }'; }
# first_id HOST TERM: the first interrupt id the coordinator of HOST gives in TERM (its log).
first_id() {
  grep -oE "leading term=$2 next_id=[0-9]+" "$(coord_log "$1")" | tail -1 | sed 's/.*=//'
}

test_failover() {
  local name="failover: leader SIGKILLed during 20 interrupts/s from two clients"
  ha_setup || { fail "$name" "HA setup: ${HA_ERR:-?}"; return; }
  local L S problems=() hw
  L=$(leader_host) || { fail "$name" "no leader"; return; }
  S=$(other_coord "$L")
  local term0 period=100 tmo=1000
  term0=$(rcli GET ihc:term)
  local urls="tcp://$COORD_ADDR:7452,tcp://$COORD2_ADDR:7452"
  local rurls="tcp://$COORD2_ADDR:7452,tcp://$COORD_ADDR:7452"
  local out1="$LOGS/client-1.out" out2="$LOGS/client-2.out" stop="$LOGS/clients.stop"
  rm -f "$out1" "$out2" "$stop"
  local fn
  fn="$(declare -f client_loop); IHC='$BIN/ihc'"
  ns_spawn 1 "$LOGS/client-1.log" bash -c "$fn; client_loop '$urls' shared '$out1' '$stop' $period $tmo"
  local c1=$NS_LAST_PID
  ns_spawn 2 "$LOGS/client-2.log" bash -c "$fn; client_loop '$rurls' dev-2 '$out2' '$stop' $period $tmo"
  local c2=$NS_LAST_PID
  local t_begin
  t_begin=$(now_ms)
  wait_for 15 have_successes_after 10 "$t_begin" "$out1" "$out2" ||
    problems+=("the clients did not get 10 successes within 15 s before the kill")
  local -A ep0=()
  for hw in shared dev-2; do ep0[$hw]=$(rcli GET "ihc:hw:{$hw}:epoch"); done
  local kill_ms
  kill_ms=$(now_ms)
  kill -KILL "$(coord_pid "$L")"
  wait "$(coord_pid "$L")" 2>/dev/null
  wait_for 10 have_successes_after 4 "$kill_ms" "$out1" "$out2" ||
    problems+=("interrupts did not succeed again within 10 s of the kill")
  sleep 0.5 # a few more after the take-over
  touch "$stop"
  wait_for 10 exited "$c1" && wait_for 10 exited "$c2" || problems+=("clients did not stop")
  wait "$c1" "$c2" 2>/dev/null

  # The counts, the gap, the longest request.
  local all
  all=$(cat "$out1" "$out2")
  local sent answered succeeded refused other gap gap_ans maxdur maxref
  sent=$(wc -l <<<"$all")
  answered=$(awk '$3 == 0 || $3 == 1' <<<"$all" | wc -l)
  succeeded=$(awk '$3 == 0' <<<"$all" | wc -l)
  refused=$(awk '$3 == 3' <<<"$all" | wc -l)
  other=$(awk '$3 != 0 && $3 != 1 && $3 != 3' <<<"$all" | wc -l)
  # The gap: from the kill to the first successful request, sent (the leader served from then
  # on at the latest: a request sent earlier met the standby's 503 or nobody) and answered
  # (`ihc` start-up and the answer's way back included; slower in a sanitizer build).
  gap=$(awk -v k="$kill_ms" '$1 >= k && $3 == 0 { if (m == "" || $1 < m) m = $1 } END { print (m == "" ? -1 : m - k) }' <<<"$all")
  gap_ans=$(awk -v k="$kill_ms" '$1 >= k && $3 == 0 { if (m == "" || $2 < m) m = $2 } END { print (m == "" ? -1 : m - k) }' <<<"$all")
  maxdur=$(awk '{ d = $2 - $1; if (d > m) m = d } END { print m + 0 }' <<<"$all")
  maxref=$(awk '$3 == 3 { d = $2 - $1; if (d > m) m = d } END { print m + 0 }' <<<"$all")
  local during
  during=$(awk -v k="$kill_ms" -v g="$gap_ans" '$2 >= k && $1 <= k + g' <<<"$all" | wc -l)
  [ "$other" -eq 0 ] || problems+=("$other requests ended otherwise: $(awk '$3 != 0 && $3 != 1 && $3 != 3 { print $3 }' <<<"$all" | sort | uniq -c | tr '\n' ' ')")
  # The target is 2 s (reported in the log line above); the check allows 3 s: the clients
  # send only when one of their 4 slots is free, and a slot is held up to ~1.1 s by a refused
  # request, so on a loaded machine the first send after the take-over can come late (seen
  # once in CI: sent at 2184 ms, while the standby had led well before).
  [ "$gap" -ge 0 ] && [ "$gap" -le 3000 ] || problems+=("the first successful interrupt was sent ${gap} ms after the kill (target 2000 ms, allowed 3000 ms)")
  [ "$gap_ans" -le 4000 ] || problems+=("the first success was answered ${gap_ans} ms after the kill")
  # No request hung: each ended within its interrupt timeout + the CLI's connect wait (1 s)
  # + 1.5 s for a loaded machine (a hung one would wait for the CLI's own limit, 8 s).
  [ "$maxdur" -le $((tmo + 2500)) ] || problems+=("a request took $maxdur ms (timeout $tmo ms + 2.5 s allowed)")

  # Ids: the successful results' ids are unique, and those after the kill above all before.
  local ids dups before_max after_min
  ids=$(awk '$3 == 0 || $3 == 1 { print $1, substr($0, index($0, $4)) }' <<<"$all" |
    while read -r st doc; do printf '%s %s\n' "$st" "$(jq -r '.interrupt_id' <<<"$doc")"; done)
  dups=$(awk '{ print $2 }' <<<"$ids" | sort -n | uniq -d | tr '\n' ' ')
  [ -z "$dups" ] || problems+=("interrupt ids answered twice: $dups")
  before_max=$(awk -v k="$kill_ms" '$1 < k { if ($2 > m) m = $2 } END { print m + 0 }' <<<"$ids")
  after_min=$(awk -v k="$kill_ms" '$1 >= k { if (m == "" || $2 < m) m = $2 } END { print m + 0 }' <<<"$ids")
  local term1 first
  wait_for 5 role_is "$S" leader "$term0" || problems+=("coord-$S does not lead with a term above $term0")
  term1=$(rcli GET ihc:term)
  first=$(first_id "$S" "$term1")
  # The new leader's ids begin above every id the old one gave: each answer started after
  # the kill has one of them, each started before is below.
  [ -n "$first" ] || problems+=("coord-$S did not log 'leading term=$term1 next_id=…'")
  first=${first:-$after_min}
  [ "$after_min" -ge "$first" ] && [ "$before_max" -lt "$first" ] ||
    problems+=("ids: up to $before_max before the kill, from $after_min after; the new term's first is $first")
  local bad sids
  sids=$(stream_ids)
  bad=$(unique <<<"$sids") || problems+=("ids repeated in ihc:interrupts: $bad")
  bad=$(none_below_after "$first" <<<"$sids") ||
    problems+=("ids of the old term written to ihc:interrupts after the new one began: $bad")
  # Epochs: per hardware_id, in id order, the results' epochs increase; Redis' only went up.
  for hw in shared dev-2; do
    bad=$(awk '$3 == 0 || $3 == 1 { print substr($0, index($0, $4)) }' <<<"$all" |
      jq -r --arg h "$hw" 'select(.hardware_id == $h) | "\(.interrupt_id) \(.epoch)"' | sort -n |
      awk '{ print $2 }' | increasing) || problems+=("epochs of $hw go back: $bad")
  done
  for hw in shared dev-2; do
    [ "$(rcli GET "ihc:hw:{$hw}:epoch")" -ge "${ep0[$hw]:-0}" ] 2>/dev/null ||
      problems+=("epoch of $hw went back in Redis: ${ep0[$hw]} -> $(rcli GET "ihc:hw:{$hw}:epoch")")
  done
  # The killed coordinator comes back as a standby of the new leader.
  start_ha_coordinator "$L" || problems+=("coord-$L did not restart")
  wait_for 10 standby_of "$L" "$S" || problems+=("restarted coord-$L is not a standby of coord-$S: $(api_on "$L" GET /healthz)")
  wait_for 10 all_agents_connected_on "$L" || problems+=("agents did not say hello to the restarted coord-$L")
  local summary
  summary="killed coord-$L, coord-$S led (term $term0 -> $term1); $sent requests: $answered answered ($succeeded succeeded), $refused refused (slowest refusal ${maxref} ms); $during sent or pending in the gap; gap ${gap} ms (sent) / ${gap_ans} ms (answered); longest request ${maxdur} ms; ids up to $before_max before, from $after_min after"
  log "failover: $summary"
  verdict "$name" "$summary" "$summary"
}

# redis_cut HOST / redis_heal HOST: HOST can no longer talk to Redis (host 0, port 6379), in
# either direction; everything else (agents, the other coordinator) still reaches it. The
# coordinators reach Redis at $COORD_ADDR, so the same rules work on host 0 itself (loopback).
redis_rules() {
  local h=$1 op=$2
  ns_exec "$h" iptables -w "$op" OUTPUT -p tcp -d "$COORD_ADDR" --dport 6379 -j DROP &&
    ns_exec "$h" iptables -w "$op" INPUT -p tcp -s "$COORD_ADDR" --sport 6379 -j DROP
}
redis_cut() { redis_rules "$1" -I; }
redis_heal() {
  while redis_rules "$1" -D 2>/dev/null; do :; done
  return 0
}
fenced_count() {
  rcli INFO errorstats | awk -F'[=,]' '/^errorstat_FENCED:/ { print $2 + 0; f = 1 } END { if (!f) print 0 }'
}

test_partition() {
  local name="partition: a leader cut off from Redis stops within its lease; its late writes are refused"
  ha_setup || { fail "$name" "HA setup: ${HA_ERR:-?}"; return; }
  local L S problems=()
  L=$(leader_host) || { fail "$name" "no leader"; return; }
  S=$(other_coord "$L")
  wait_for 10 standby_of "$S" "$L" || { fail "$name" "coord-$S is not a standby of coord-$L"; return; }
  local term0 fenced0 cut_ms
  term0=$(rcli GET ihc:term)
  fenced0=$(fenced_count)
  redis_cut "$L" || { fail "$name" "iptables refused in host $L"; return; }
  cut_ms=$(now_ms)
  # The old leader answers while its lease lasts (the agents still hear it), then refuses:
  # stop_ms is when the first refused request was sent.
  local late_ids=() res code stop_ms=-1 t
  while [ $(($(now_ms) - cut_ms)) -lt 5000 ]; do
    t=$(now_ms)
    res=$(ns_exec "$L" curl -sS --max-time 3 -w '\n%{http_code}' -X POST -H 'Content-Type: application/json' \
      -d '{"hardware_id":"dev-3","reason":"partition","timeout_ms":500}' http://127.0.0.1:7480/v1/interrupt)
    code=${res##*$'\n'}
    if [ "$code" = 503 ]; then
      stop_ms=$((t - cut_ms))
      jq -e '.code == "IHC_ENOTLEADER"' <<<"${res%$'\n'*}" >/dev/null ||
        problems+=("503 without IHC_ENOTLEADER: ${res%$'\n'*}")
      break
    fi
    [ "$code" = 200 ] && late_ids+=("$(jq -r '.interrupt_id' <<<"${res%$'\n'*}")")
    sleep 0.05
  done
  [ "$stop_ms" -ge 0 ] && [ "$stop_ms" -le $((LEASE_TTL * 1000 + 500)) ] ||
    problems+=("coord-$L refused interrupts ${stop_ms} ms after the cut (lease ${LEASE_TTL} s)")
  # (Its lease may end before a first request: the last renew was sent up to a third of the
  # lease before the cut, later on a loaded machine. Then only the queued writes are fenced.)
  # Agents still connected to it: only Redis was cut.
  all_agents_connected_on "$L" || problems+=("agents not connected to coord-$L during the cut")
  local take_ms=-1
  wait_for 5 role_is "$S" leader "$term0" && take_ms=$(($(now_ms) - cut_ms)) ||
    problems+=("coord-$S did not lead within 5 s: $(api_on "$S" GET /healthz)")
  wait_for 5 role_is "$L" standby || problems+=("coord-$L still says leader: $(api_on "$L" GET /healthz)")
  local term1 res2 id2
  term1=$(rcli GET ihc:term)
  [ "$term1" -gt "$term0" ] 2>/dev/null || problems+=("term did not increase: $term0 -> $term1")
  res2=$(api_on "$S" POST /v1/interrupt '{"hardware_id":"dev-3","reason":"after partition"}')
  [ "$(jget .success "$res2")" = true ] || problems+=("interrupt on the new leader failed: $res2")
  id2=$(jget '.interrupt_id // 0' "$res2")
  # The link returns: the old leader learns the new term and stands by; what it had not
  # written (and any command of it still in flight in TCP) is refused, never applied.
  redis_heal "$L"
  wait_for 10 standby_of "$L" "$S" || problems+=("coord-$L is not a standby of coord-$S after the heal: $(api_on "$L" GET /healthz)")
  # TCP may still deliver a write the old leader sent during the cut (retransmitted after the
  # heal): give it up to 4 s to arrive; the fence must refuse it.
  fenced_more() { [ "$(fenced_count)" -gt "$fenced0" ]; }
  wait_for 4 fenced_more
  local fenced1
  fenced1=$(fenced_count)
  local sids id bad first
  sids=$(stream_ids)
  for id in "${late_ids[@]}"; do
    grep -qx "$id" <<<"$sids" && problems+=("interrupt $id answered by coord-$L after the cut was written to ihc:interrupts")
  done
  grep -qx "$id2" <<<"$sids" || problems+=("the new leader's interrupt $id2 is not in ihc:interrupts")
  bad=$(unique <<<"$sids") || problems+=("ids repeated in ihc:interrupts: $bad")
  first=$(first_id "$S" "$term1")
  [ -n "$first" ] || problems+=("coord-$S did not log 'leading term=$term1 next_id=…'")
  bad=$(none_below_after "${first:-$id2}" <<<"$sids") ||
    problems+=("ids of the old term written to ihc:interrupts after the new one began: $bad")
  [ "$(rcli GET ihc:term)" = "$term1" ] || problems+=("term moved after the heal: $term1 -> $(rcli GET ihc:term)")
  [ "$(rcli GET ihc:leader)" = "coord-$S" ] || problems+=("ihc:leader is $(rcli GET ihc:leader), not coord-$S")
  grep -qE "stepped down id=coord-$L term=$term0 " "$(coord_log "$L")" ||
    problems+=("coord-$L did not log stepping down from term $term0")
  local summary
  summary="cut coord-$L (term $term0): it answered ${#late_ids[@]} interrupts (ids ${late_ids[*]:-none}) then refused after ${stop_ms} ms; coord-$S led after ${take_ms} ms (term $term1); FENCED replies from Redis after the heal: $((fenced1 - fenced0)); $(grep -oE 'not leading any more term=[0-9]+ .*' "$(coord_log "$L")" | tail -1)"
  log "partition: $summary"
  verdict "$name" "$summary" "$summary"
  unset -f fenced_more
  redis_heal "$L"
}

# interrupt_leader HW: POSTs an interrupt of HW to whichever coordinator answers it (the other
# refuses with 503); prints "http_code body" of the last try.
interrupt_leader() {
  local h res
  for h in 0 "$COORD2_HOST"; do
    res=$(ns_exec "$h" curl -sS --max-time 3 -w '\n%{http_code}' -X POST -H 'Content-Type: application/json' \
      -d "{\"hardware_id\":\"$1\",\"reason\":\"sentinel\",\"timeout_ms\":1000}" http://127.0.0.1:7480/v1/interrupt 2>/dev/null)
    [ "${res##*$'\n'}" = 200 ] && break
  done
  printf '%s %s\n' "${res##*$'\n'}" "${res%$'\n'*}"
}
# one_leads_one_stands_by: a coordinator leads and the other stands by under it.
one_leads_one_stands_by() {
  local l
  l=$(leader_host) && standby_of "$(other_coord "$l")" "$l"
}
# sentinel_cli ARGS…: redis-cli against the sentinel on host 1.
sentinel_cli() { ns_exec 1 redis-cli -h "$(ns_addr 1)" -p 26379 "$@"; }
sentinel_knows_replica() {
  [ "$(sentinel_cli SENTINEL master ihcmaster | grep -A1 -x num-slaves | tail -1)" = 1 ]
}
sentinel_names() { sentinel_cli SENTINEL get-master-addr-by-name ihcmaster | head -1 | grep -qx "$1"; }
replica_cli() { ns_exec "$COORD2_HOST" redis-cli -h "$COORD2_ADDR" -p 6379 "$@"; }

test_sentinel() {
  local name="sentinel: Redis primary SIGKILLed, Sentinel promotes the replica, interrupts succeed again"
  ha_setup || { fail "$name" "HA setup: ${HA_ERR:-?}"; return; }
  local problems=() h L S
  # A replica on host 4, one sentinel on host 1 (quorum 1, quick to act).
  mkdir -p "$LOGS/replica" "$LOGS/sentinel"
  ns_spawn "$COORD2_HOST" "$LOGS/redis-replica.log" redis-server --port 6379 --bind "$COORD2_ADDR" \
    --protected-mode no --save "" --appendonly no --dir "$LOGS/replica" --replicaof "$COORD_ADDR" 6379
  wait_for 15 eval 'replica_cli INFO replication | grep -q "master_link_status:up"' ||
    { fail "$name" "the replica on host $COORD2_HOST did not sync"; return; }
  cat >"$LOGS/sentinel/sentinel.conf" <<CONF
port 26379
bind $(ns_addr 1)
protected-mode no
dir $LOGS/sentinel
sentinel monitor ihcmaster $COORD_ADDR 6379 1
sentinel down-after-milliseconds ihcmaster 500
sentinel failover-timeout ihcmaster 2000
sentinel parallel-syncs ihcmaster 1
CONF
  ns_spawn 1 "$LOGS/sentinel.log" redis-server "$LOGS/sentinel/sentinel.conf" --sentinel
  wait_for 15 sentinel_knows_replica || { fail "$name" "the sentinel did not find the replica"; return; }
  # Both coordinators restarted on a redis-sentinel:// URL (the standby first; the leader's
  # SIGTERM gives the lease up, so the other takes over at once).
  HA_REDIS_URL="redis-sentinel://$(ns_addr 1):26379,$(ns_addr 2):26379/ihcmaster/0"
  L=$(leader_host) || { fail "$name" "no leader"; return; }
  S=$(other_coord "$L")
  # (Which one leads afterwards is a race: the restarted one may take the lease its SIGTERM
  # gave up before the other's next poll.)
  for h in "$S" "$L"; do
    stop_pid "$(coord_pid "$h")"
    start_ha_coordinator "$h" || problems+=("coord-$h did not restart")
    wait_for 10 one_leads_one_stands_by || problems+=("after restarting coord-$h: not one leader and one standby")
    grep -q 'master found through sentinel' "$(coord_log "$h")" ||
      problems+=("coord-$h did not log finding the master through the sentinel")
  done
  wait_for 10 all_agents_connected_on 0 || problems+=("agents not connected to coord-0")
  local r id0
  r=$(interrupt_leader dev-1)
  [ "${r%% *}" = 200 ] || problems+=("interrupt before the kill: $r")
  id0=$(jq -r '.interrupt_id // 0' <<<"${r#* }" 2>/dev/null)
  local term0 kill_ms promoted_ms=-1 ok_ms=-1 id1=0
  term0=$(rcli GET ihc:term)
  kill_ms=$(now_ms)
  kill -KILL "$REDIS_PID"
  wait "$REDIS_PID" 2>/dev/null
  # Once the sentinel names the replica: an interrupt that succeeds and is in the promoted
  # replica's ihc:interrupts (an answer's "persisted" alone may predate the kill's notice).
  local id=""
  written() { replica_cli --raw XRANGE ihc:interrupts - + | grep -qx "$id"; }
  while [ $(($(now_ms) - kill_ms)) -lt 20000 ]; do
    [ "$promoted_ms" -lt 0 ] && sentinel_names "$COORD2_ADDR" && promoted_ms=$(($(now_ms) - kill_ms))
    if [ "$promoted_ms" -ge 0 ]; then
      r=$(interrupt_leader dev-1)
      if [ "${r%% *}" = 200 ] && [ "$(jq -r '.success' <<<"${r#* }")" = true ]; then
        id=$(jq -r '.interrupt_id' <<<"${r#* }")
        if wait_for 3 written; then
          ok_ms=$(($(now_ms) - kill_ms))
          id1=$id
          break
        fi
      fi
    fi
    sleep 0.2
  done
  unset -f written
  [ "$promoted_ms" -ge 0 ] || problems+=("the sentinel did not promote the replica within 20 s")
  [ "$ok_ms" -ge 0 ] || problems+=("no interrupt succeeded and was written to the promoted replica within 20 s of the kill: $r")
  [ "$id1" -gt "$id0" ] 2>/dev/null || problems+=("id $id1 after the failover is not above $id0")
  local term1
  term1=$(replica_cli GET ihc:term)
  [ "$term1" -gt "${term0:-0}" ] 2>/dev/null || problems+=("term on the new master $term1, not above $term0")
  local summary
  summary="primary killed: sentinel named the replica after ${promoted_ms} ms, an interrupt was answered and written to it after ${ok_ms} ms (id $id0 -> $id1, term $term0 -> $term1)"
  log "sentinel: $summary"
  verdict "$name" "$summary" "$summary"
}

# exited PID: the process ended (gone, or a zombie waiting for `wait`).
exited() { [ ! -e "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

test_shutdown() {
  local name="shutdown: coordinator and agents exit 0 on SIGTERM, no sanitizer report"
  local problems=() i pid rc who
  local -A pids=()
  for ((i = 1; i <= NAGENTS; i++)); do pids[${AGENT_PID[$i]}]="agent node-$i"; done
  pids[$COORD_PID]=coordinator
  [ -n "$COORD2_PID" ] && pids[$COORD2_PID]="coordinator of host $COORD2_HOST"
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
  for f in "$LOGS"/coordinator*.log "$LOGS"/agent-*.log; do
    grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer' "$f" &&
      problems+=("sanitizer report in $f")
  done
  verdict "$name" ""
}

# ---- main -------------------------------------------------------------------------------

ALL=(harness shared cutoff cutoff_reset coordinator_restart agent_restart throttled failover partition sentinel shutdown)
if [ $# -gt 0 ]; then TESTS=("$@"); else TESTS=("${ALL[@]}"); fi
for t in "${TESTS[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || {
    echo "unknown test '$t' (known: ${ALL[*]})" >&2
    exit 2
  }
done

log "binaries: $BIN; logs: $LOGS"
if ! ns_setup $((NAGENTS + 2)); then
  trap finish EXIT
  fail "netns: build a cluster of $((NAGENTS + 2)) hosts"
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
