#!/usr/bin/env bash
# Smoke test of deploy/docker-compose.ha.yml: build the image, start Redis primary + replica,
# three sentinels, two coordinators and three agents dialing both; check that one coordinator
# leads and the other stands by, that both know the agents, and that `ihc` with both control
# URLs interrupts dev-2; then SIGKILL the leader's container and show interrupts succeeding
# again through the other coordinator (timed); then SIGKILL the Redis primary and show the
# sentinels promoting the replica and interrupts written to Redis again (timed); then take
# everything down.
#
#   sudo bash deploy/ha-smoke.sh
#
# Runs as root; tools, engine and base images as deploy/compose-smoke.sh (deploy/smoke-lib.sh).
# Environment: IHC_COMPOSE, IHC_SMOKE_PULL, IHC_SMOKE_KEEP as there; IHC_SMOKE_DEADLINE
# (seconds to wait for health, default 240), IHC_SMOKE_PROJECT (default ihc-ha-smoke),
# IHC_LEASE_TTL (default 1 here). Ends with "N passed, N failed"; exits non-zero when
# anything failed.

set -u
set -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COMPOSE_FILE="$HERE/docker-compose.ha.yml"
PROJECT=${IHC_SMOKE_PROJECT:-ihc-ha-smoke}
DEADLINE=${IHC_SMOKE_DEADLINE:-240}
WORK=$(mktemp -d /tmp/ihc-ha-smoke.XXXXXX)
STARTED_DOCKERD=""
COMPOSE_UP=""
PASS=0
FAIL=0
T_START=$SECONDS

# shellcheck source=deploy/smoke-lib.sh
. "$HERE/smoke-lib.sh"

compose() { $COMPOSE -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }

trap cleanup EXIT
trap 'exit 130' INT TERM

smoke_engine
smoke_base_images

# ---- bring the stack up -----------------------------------------------------------------

new_ports() {
  local ports
  ports=$(pick_ports 4) || return 1
  read -r IHC_CONTROL_PORT IHC_HTTP_PORT IHC_CONTROL_PORT_B IHC_HTTP_PORT_B <<<"$ports"
  export IHC_CONTROL_PORT IHC_HTTP_PORT IHC_CONTROL_PORT_B IHC_HTTP_PORT_B
}
new_ports || die "no free host ports"
export IHC_IMAGE=${IHC_IMAGE:-ihc:smoke}
export IHC_LEASE_TTL=${IHC_LEASE_TTL:-1}
export REDIS_PASSWORD=${REDIS_PASSWORD:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
export IHC_REDIS_PASSWORD=${IHC_REDIS_PASSWORD:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
log "host ports: coordinator-a http $IHC_HTTP_PORT control $IHC_CONTROL_PORT, coordinator-b http $IHC_HTTP_PORT_B control $IHC_CONTROL_PORT_B; image $IHC_IMAGE"

compose down -v --remove-orphans >/dev/null 2>&1

compose_up_retry

SERVICES="redis-primary redis-replica sentinel-1 sentinel-2 sentinel-3 coordinator-a coordinator-b agent-1 agent-2 agent-3"
all_healthy() {
  local s
  for s in $SERVICES; do
    [ "$(health "$s")" = healthy ] || return 1
  done
}
t=$SECONDS
if wait_for "$DEADLINE" "all services healthy" all_healthy; then
  pass "redis primary + replica, 3 sentinels, 2 coordinators, 3 agents healthy [$((SECONDS - t)) s]"
else
  for s in $SERVICES; do log "  $s: $(health "$s")"; done
  die "services healthy within ${DEADLINE}s"
fi

# ---- the checks -------------------------------------------------------------------------

port_of() { if [ "$1" = coordinator-a ]; then echo "$IHC_HTTP_PORT"; else echo "$IHC_HTTP_PORT_B"; fi; }
http_get() { curl -fsS --max-time 5 "http://127.0.0.1:$(port_of "$1")$2"; }
role() { http_get "$1" /healthz 2>/dev/null | jq -r '.role // empty' 2>/dev/null; }
LEADER=""
find_leader() {
  local a b
  a=$(role coordinator-a)
  b=$(role coordinator-b)
  if [ "$a" = leader ] && [ "$b" = standby ]; then LEADER=coordinator-a; STANDBY=coordinator-b
  elif [ "$b" = leader ] && [ "$a" = standby ]; then LEADER=coordinator-b; STANDBY=coordinator-a
  else return 1; fi
}
if wait_for 30 "one leader, one standby" find_leader; then
  pass "one coordinator leads ($LEADER), the other stands by ($(http_get "$STANDBY" /healthz | jq -c '{role,leader,term}'))"
else
  fail "one coordinator leads, the other stands by" "a: $(http_get coordinator-a /healthz) b: $(http_get coordinator-b /healthz)"
fi

agents_known() {
  local c a
  for c in coordinator-a coordinator-b; do
    http_get "$c" /v1/agents >"$WORK/agents-$c" || return 1
    for a in agent-1 agent-2 agent-3; do grep -q "\"$a\"" "$WORK/agents-$c" || return 1; done
  done
}
if wait_for 30 "agents on both coordinators" agents_known; then
  pass "both coordinators list agent-1, agent-2, agent-3 (hellos reach both)"
else
  fail "both coordinators list agent-1, agent-2, agent-3" "$(cat "$WORK"/agents-* 2>/dev/null)"
fi

# `ihc` in agent-3's container with both control URLs: whichever leads answers.
CONTROL=tcp://coordinator-a:7452,tcp://coordinator-b:7452
interrupt() {
  compose exec -T agent-3 ihc --control "$CONTROL" --json interrupt dev-2 >"$WORK/interrupt" 2>&1
}
# interrupt_ok [persisted]: succeeded, answered by agent-1 and agent-2 (and written to Redis).
interrupt_ok() {
  interrupt || return 1
  jq -e '.success == true and ((.agents.answered | sort) == ["agent-1","agent-2"])' \
    "$WORK/interrupt" >/dev/null || return 1
  [ "${1:-}" != persisted ] || jq -e '.persisted == true' "$WORK/interrupt" >/dev/null
}
if wait_for 30 "an interrupt of dev-2" interrupt_ok persisted; then
  pass "ihc --control a,b interrupt dev-2: success, answered by agent-1 and agent-2 (id $(jq -r .interrupt_id "$WORK/interrupt"))"
else
  fail "ihc --control a,b interrupt dev-2" "$(cat "$WORK/interrupt")"
fi

# -- the leader dies --
cid() { compose ps -q "$1" 2>/dev/null; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
no_restart_kill() { # SIGKILL a service's container and keep it down (no restart policy)
  local id
  id=$(cid "$1")
  docker update --restart=no "$id" >/dev/null && docker kill -s KILL "$id" >/dev/null
}
old_leader=$LEADER
log "SIGKILL $old_leader's container"
no_restart_kill "$old_leader" || fail "docker kill $old_leader"
t0=$(date +%s.%N)
if wait_for 30 "an interrupt through the new leader" interrupt_ok; then
  dt=$(since "$t0")
  pass "after the leader's SIGKILL, interrupts succeed again through $STANDBY (${dt} s, with the polling of this script)"
else
  fail "interrupts succeed after the leader's SIGKILL" "$(cat "$WORK/interrupt")"
fi
if [ "$(role "$STANDBY")" = leader ]; then
  pass "$STANDBY now leads ($(http_get "$STANDBY" /healthz | jq -c '{role,leader,term}'))"
else
  fail "$STANDBY now leads" "$(http_get "$STANDBY" /healthz)"
fi
# (the logs into a file first: grep -q ending early would fail the pipe under pipefail)
new_term=$(http_get "$STANDBY" /healthz | jq -r '.term // empty')
follows_term() {
  compose logs --no-color agent-1 >"$WORK/agent-1.log" 2>&1
  grep 'leader term now' "$WORK/agent-1.log" | tail -1 | grep -q "leader term now $new_term "
}
if wait_for 10 "agent-1 to log term $new_term" follows_term; then
  pass "agent-1 follows the new leader's term ($(grep 'leader term now' "$WORK/agent-1.log" | tail -1 | sed 's/.*leader term now/term/'))"
else
  fail "agent-1 follows the new leader's term" "$(grep -E 'term|deposed' "$WORK/agent-1.log" | tail -5)"
fi

# -- the Redis primary dies --
sentinel_master() {
  compose exec -T sentinel-1 redis-cli -p 26379 sentinel get-master-addr-by-name ihc 2>/dev/null | head -1 | tr -d '\r'
}
replica_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(cid redis-replica)")
log "SIGKILL redis-primary's container (master now $(sentinel_master), replica $replica_ip)"
no_restart_kill redis-primary || fail "docker kill redis-primary"
t0=$(date +%s.%N)
promoted() { [ "$(sentinel_master)" = "$replica_ip" ]; }
if wait_for 60 "the sentinels to promote the replica" promoted; then
  dt=$(since "$t0")
  pass "the sentinels promoted redis-replica ($replica_ip) (${dt} s)"
else
  fail "the sentinels promote the replica" "$(compose logs --no-color --tail 20 sentinel-1 2>&1)"
fi
if wait_for 60 "an interrupt written to the new master" interrupt_ok persisted; then
  dt=$(since "$t0")
  pass "interrupts succeed and are persisted again after the primary's SIGKILL (${dt} s)"
else
  fail "interrupts persisted after the primary's SIGKILL" "$(cat "$WORK/interrupt")"
fi
rcli() { compose exec -T redis-replica sh -c 'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli "$@"' rcli "$@"; }
if [ "$(rcli ROLE | head -1 | tr -d '\r')" = master ] && [ "$(rcli XLEN ihc:interrupts | tr -d '\r')" -ge 1 ]; then
  pass "redis-replica is the master and holds the interrupt log (XLEN $(rcli XLEN ihc:interrupts | tr -d '\r'))"
else
  fail "redis-replica is the master and holds the interrupt log" "$(rcli ROLE | tr '\n' ' ')"
fi
new_leader_logs=$(compose logs --no-color "$STANDBY" 2>/dev/null | grep 'master found through sentinel' | tail -1)
if grep -q "addr=$replica_ip:" <<<"$new_leader_logs"; then
  pass "$STANDBY found the new master through the sentinels"
else
  fail "$STANDBY found the new master through the sentinels" "$new_leader_logs"
fi
