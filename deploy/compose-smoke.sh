#!/usr/bin/env bash
# Smoke test of deploy/docker-compose.yml as a user would run it: build the image, start Redis
# (with passwords and the least-privilege user ihc), the coordinator and three agents,
# interrupt dev-2 over the published HTTP port, check the answer, the agents' logs and the
# state in Redis; then the TLS variant (deploy/docker-compose.tls.yml: mutual TLS, HTTPS) with
# certificates from deploy/make-certs.sh; then take everything down.
#
#   sudo bash deploy/compose-smoke.sh
#
# Runs as root. Installs what is missing (docker.io, docker-compose, debootstrap, curl, jq)
# with apt-get, starts dockerd when no engine answers (and stops it again at the end), and,
# because no image registry may be reachable, makes the base images locally when they are
# missing: debian:bookworm-slim with debootstrap, redis:7 as a stand-in built from Debian's
# redis-server. IHC_SMOKE_PULL=1 tries `docker pull` first instead.
# Environment: IHC_COMPOSE ("docker compose" or "docker-compose"; default: whichever works,
# v2 first), IHC_SMOKE_DEADLINE (seconds to wait for health, default 180), IHC_SMOKE_PROJECT
# (the compose project, default ihc-smoke), REDIS_PASSWORD / IHC_REDIS_PASSWORD (default:
# random), IHC_SMOKE_TLS=0 (skip the TLS variant),
# IHC_SMOKE_KEEP=1 (leave the stack up for a look; `down -v` it yourself).
# Ends with "N passed, N failed"; exits non-zero when anything failed.

set -u
set -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COMPOSE_FILE="$HERE/docker-compose.yml"
TLS_FILE="$HERE/docker-compose.tls.yml"
PROJECT=${IHC_SMOKE_PROJECT:-ihc-smoke}
DEADLINE=${IHC_SMOKE_DEADLINE:-180}
WORK=$(mktemp -d /tmp/ihc-smoke.XXXXXX)
STARTED_DOCKERD=""
COMPOSE_UP=""
PASS=0
FAIL=0
T_START=$SECONDS

# shellcheck source=deploy/smoke-lib.sh
. "$HERE/smoke-lib.sh"

compose() { $COMPOSE -p "$PROJECT" -f "$COMPOSE_FILE" ${COMPOSE_TLS:+-f "$TLS_FILE"} "$@"; }

trap cleanup EXIT
trap 'exit 130' INT TERM

smoke_engine
smoke_base_images

# ---- bring the stack up -----------------------------------------------------------------

new_ports() {
  local ports
  ports=$(pick_ports 4) || return 1
  read -r IHC_PUB_PORT IHC_REPORT_PORT IHC_CONTROL_PORT IHC_HTTP_PORT <<<"$ports"
  export IHC_PUB_PORT IHC_REPORT_PORT IHC_CONTROL_PORT IHC_HTTP_PORT
}
new_ports || die "no free host ports"
export IHC_IMAGE=${IHC_IMAGE:-ihc:smoke}
# Redis' passwords, as a user sets them (hex: safe in IHC_REDIS_URL as they are)
export REDIS_PASSWORD=${REDIS_PASSWORD:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
export IHC_REDIS_PASSWORD=${IHC_REDIS_PASSWORD:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
# Keep flags set long enough to read them (a setting of the compose file, as a user sets it).
export SESSION_CLEANUP_DELAY=${SESSION_CLEANUP_DELAY:-60}
log "host ports: pub $IHC_PUB_PORT report $IHC_REPORT_PORT control $IHC_CONTROL_PORT http $IHC_HTTP_PORT; image $IHC_IMAGE"

# A crashed earlier run may have left the project behind.
compose down -v --remove-orphans >/dev/null 2>&1

compose_up_retry

all_healthy() {
  local s
  for s in redis coordinator agent-1 agent-2 agent-3; do
    [ "$(health "$s")" = healthy ] || return 1
  done
}
t=$SECONDS
if wait_for "$DEADLINE" "all services healthy" all_healthy; then
  pass "redis, coordinator and 3 agents healthy [$((SECONDS - t)) s]"
else
  for s in redis coordinator agent-1 agent-2 agent-3; do log "  $s: $(health "$s")"; done
  die "services healthy within ${DEADLINE}s"
fi

# ---- the checks -------------------------------------------------------------------------

API="http://127.0.0.1:$IHC_HTTP_PORT"
http_get() { curl -fsS --max-time 5 "$API$1"; }

if http_get /healthz >"$WORK/healthz" && [ "$(jq -r 'has("redis")' "$WORK/healthz" 2>/dev/null)" != "" ]; then
  pass "GET /healthz on published port $IHC_HTTP_PORT"
else
  fail "GET /healthz on published port $IHC_HTTP_PORT" "$(cat "$WORK/healthz" 2>/dev/null)"
fi

agents_registered() {
  http_get /v1/agents >"$WORK/agents" || return 1
  local a
  for a in agent-1 agent-2 agent-3; do
    grep -q "\"$a\"" "$WORK/agents" || return 1
  done
}
has_session() {
  http_get "/v1/sessions?hardware_id=$1" |
    jq -e --arg a "$2" 'any(.sessions[]; .agent_id == $a and .state == "active")'
}
dev2_sessions() {
  http_get "/v1/sessions?hardware_id=dev-2" >"$WORK/sessions" || return 1
  grep -q '"agent-1"' "$WORK/sessions" && grep -q '"agent-2"' "$WORK/sessions"
}
if wait_for 30 "agents in /v1/agents" agents_registered; then
  pass "GET /v1/agents lists agent-1, agent-2, agent-3"
else
  fail "GET /v1/agents lists agent-1, agent-2, agent-3" "$(cat "$WORK/agents" 2>/dev/null)"
fi
if wait_for 30 "dev-2 sessions" dev2_sessions; then
  pass "dev-2 has sessions on agent-1 and agent-2"
else
  fail "dev-2 has sessions on agent-1 and agent-2" "$(cat "$WORK/sessions" 2>/dev/null)"
fi

code=$(curl -sS --max-time 15 -o "$WORK/interrupt" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"hardware_id":"dev-2","reason":"compose smoke test"}' "$API/v1/interrupt")
res=$(cat "$WORK/interrupt" 2>/dev/null)
if [ "$code" = 200 ] && [ "$(jq -r .success <<<"$res")" = true ] &&
  [ "$(jq -c '.agents.answered | sort' <<<"$res")" = '["agent-1","agent-2"]' ] &&
  [ "$(jq -c '.agents.missing' <<<"$res")" = '[]' ]; then
  pass "POST /v1/interrupt dev-2: success, answered by agent-1 and agent-2 ($(jq -r .total_time_ms <<<"$res") ms)"
else
  fail "POST /v1/interrupt dev-2: success, answered by agent-1 and agent-2" "HTTP $code: $res"
fi
interrupt_id=$(jq -r '.interrupt_id // empty' <<<"$res" 2>/dev/null)

# The agents' own account: the interrupt reached both holders of dev-2, not agent-3.
agent_saw() { compose logs --no-color "$1" 2>/dev/null | grep -i 'interrupt' | grep -q 'dev-2'; }
if wait_for 10 "agent logs" agent_saw agent-1 && agent_saw agent-2; then
  pass "agent-1 and agent-2 logged the dev-2 interrupt"
else
  fail "agent-1 and agent-2 logged the dev-2 interrupt" "$(compose logs --no-color --tail 10 agent-1 agent-2 2>&1)"
fi
if ! agent_saw agent-3; then
  pass "agent-3 (no dev-2 session) was not interrupted"
else
  fail "agent-3 (no dev-2 session) was not interrupted"
fi
if http_get "/v1/sessions?hardware_id=dev-3" | grep -q '"agent-3"'; then
  pass "dev-3 sessions still run"
else
  fail "dev-3 sessions still run"
fi

# Redis state through the compose service (persistence is off the request path: poll), as its
# default user (the administrator: user ihc may not run XREVRANGE).
rcli() { compose exec -T redis sh -c 'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli "$@"' rcli "$@"; }
logged() {
  rcli XREVRANGE ihc:interrupts + - COUNT 20 >"$WORK/xrange" 2>&1 || return 1
  grep -qx 'dev-2' "$WORK/xrange"
}
if wait_for 20 "ihc:interrupts entry" logged && [ "$(rcli XLEN ihc:interrupts | tr -d '\r')" -ge 1 ]; then
  pass "redis: ihc:interrupts has the dev-2 interrupt (XLEN $(rcli XLEN ihc:interrupts | tr -d '\r'))"
else
  fail "redis: ihc:interrupts has the dev-2 interrupt" "$(cat "$WORK/xrange")"
fi
# Flags stay set for SESSION_CLEANUP_DELAY (made long above), so they can be read here.
flags_are() {
  rcli HGETALL ihc:flags >"$WORK/flags" 2>&1 || return 1
  tr -d '\r' <"$WORK/flags" | paste - - >"$WORK/flags.tsv"
  grep -qx "interrupt_hardware_id	$1" "$WORK/flags.tsv" &&
    grep -qx "global_interrupt_flag	$2" "$WORK/flags.tsv"
}
if wait_for 20 "ihc:flags" flags_are dev-2 1; then
  pass "redis: HGETALL ihc:flags says dev-2 ($(tr '\t\n' '= ' <"$WORK/flags.tsv"))"
else
  fail "redis: HGETALL ihc:flags says dev-2" "$(cat "$WORK/flags")"
fi
epoch() { [ "$(rcli GET 'ihc:hw:{dev-2}:epoch' | tr -d '\r')" -ge 1 ] 2>/dev/null; }
if wait_for 20 "dev-2 epoch" epoch; then
  pass "redis: ihc:hw:{dev-2}:epoch bumped"
else
  fail "redis: ihc:hw:{dev-2}:epoch bumped" "$(rcli GET 'ihc:hw:{dev-2}:epoch')"
fi

code=$(curl -sS --max-time 5 -o "$WORK/reset" -w '%{http_code}' -X POST "$API/v1/flags/reset")
if [ "$code" = 200 ] && wait_for 20 "flags reset" flags_are "" 0; then
  pass "POST /v1/flags/reset clears ihc:flags in redis"
else
  fail "POST /v1/flags/reset clears ihc:flags in redis" "HTTP $code: $(cat "$WORK/reset")" "$(cat "$WORK/flags")"
fi

# The CLI in the image, over the control socket.
if compose exec -T coordinator ihc interrupt dev-3 --reason "smoke cli" --json >"$WORK/cli" 2>&1 &&
  [ "$(jq -r .success "$WORK/cli" 2>/dev/null)" = true ]; then
  id2=$(jq -r .interrupt_id "$WORK/cli")
  if [ -n "$interrupt_id" ] && [ "$id2" -gt "$interrupt_id" ] 2>/dev/null; then
    pass "ihc interrupt dev-3 (CLI in the image): success, id $id2 after $interrupt_id"
  else
    fail "ihc interrupt dev-3: id increases" "first $interrupt_id, then $id2"
  fi
else
  fail "ihc interrupt dev-3 (CLI in the image)" "$(cat "$WORK/cli")"
fi

# A restarted coordinator container: the agents find it again by its service name.
all_connected() {
  http_get /v1/agents >"$WORK/agents" || return 1
  jq -e '[.agents[] | select(.connected == true) | .agent_id] | sort == ["agent-1","agent-2","agent-3"]' \
    "$WORK/agents"
}
t=$SECONDS
if compose restart -t 20 coordinator >/dev/null 2>&1 &&
  wait_for 60 "coordinator healthy again" all_healthy && wait_for 30 "agents back" all_connected &&
  wait_for 30 "agent-1's dev-1 session" has_session dev-1 agent-1; then
  res=$(curl -sS --max-time 15 -H 'Content-Type: application/json' -d '{"hardware_id":"dev-1"}' "$API/v1/interrupt")
  id3=$(jq -r '.interrupt_id // 0' <<<"$res")
  if [ "$(jq -r .success <<<"$res")" = true ] && [ "$(jq -c .agents.answered <<<"$res")" = '["agent-1"]' ] &&
    [ "$id3" -gt "${id2:-0}" ] 2>/dev/null; then
    pass "coordinator restarted: agents reconnect, dev-1 answered by agent-1, id $id3 after ${id2:-?} [$((SECONDS - t)) s]"
  else
    fail "coordinator restarted: interrupt of dev-1 answered by agent-1" "$res"
  fi
else
  fail "coordinator restarted: healthy with 3 connected agents within the deadline" "$(cat "$WORK/agents" 2>/dev/null)"
fi

# Docker stops containers with SIGTERM: the daemons must exit cleanly and fast.
t=$SECONDS
if compose stop -t 20 agent-3 >/dev/null 2>&1 && [ $((SECONDS - t)) -lt 10 ]; then
  code=$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -q agent-3)")
  if [ "$code" = 0 ]; then
    pass "agent-3 stops on SIGTERM with exit 0 [$((SECONDS - t)) s]"
  else
    fail "agent-3 stops on SIGTERM with exit 0" "exit code $code"
  fi
else
  fail "agent-3 stops on SIGTERM within 10 s" "took $((SECONDS - t)) s"
fi

# The coordinator ran as user ihc all along: Redis denied it nothing.
if [ -z "$(rcli ACL LOG | tr -d '\r')" ] && ! rcli --user ihc --pass wrong --no-auth-warning PING 2>&1 | grep -q PONG; then
  pass "redis: user ihc was denied nothing (ACL LOG empty); a wrong password is refused"
else
  fail "redis: user ihc was denied nothing (ACL LOG empty)" "$(rcli ACL LOG | head -20)"
fi

# ---- the TLS variant ------------------------------------------------------------------------

if [ "${IHC_SMOKE_TLS:-1}" != 0 ]; then
  t=$SECONDS
  export IHC_TLS_DIR=$WORK/certs
  certs_ok=""
  bash "$HERE/make-certs.sh" --owner 7450 "$IHC_TLS_DIR" >"$WORK/certs.log" 2>&1 && certs_ok=1
  COMPOSE_TLS=1
  if [ -n "$certs_ok" ] && compose up -d >"$WORK/up-tls.log" 2>&1 &&
    wait_for "$DEADLINE" "all services healthy over TLS" all_healthy; then
    pass "TLS variant up: coordinator and 3 agents healthy with certificates [$((SECONDS - t)) s]"
  else
    tail -20 "$WORK/certs.log" "$WORK/up-tls.log" 2>/dev/null | sed 's/^/    /'
    for s in redis coordinator agent-1 agent-2 agent-3; do log "  $s: $(health "$s")"; done
    fail "TLS variant up and healthy"
  fi
  API="https://localhost:$IHC_HTTP_PORT"
  TLS_CURL=(--cacert "$IHC_TLS_DIR/ca.pem" --cert "$IHC_TLS_DIR/client.pem" --key "$IHC_TLS_DIR/client.key")
  http_get() { curl -fsS --max-time 5 "${TLS_CURL[@]}" "$API$1"; }
  if wait_for 30 "3 agents connected over TLS" all_connected &&
    wait_for 30 "dev-2 sessions" dev2_sessions; then
    pass "agents connected over tls+tcp:// with their certificates (GET /v1/agents over HTTPS)"
  else
    fail "agents connected over tls+tcp://" "$(cat "$WORK/agents" 2>/dev/null)" \
      "$(compose logs --no-color --tail 5 agent-1 2>&1)"
  fi
  res=$(curl -sS --max-time 15 "${TLS_CURL[@]}" -H 'Content-Type: application/json' \
    -d '{"hardware_id":"dev-2","reason":"compose smoke test over TLS"}' "$API/v1/interrupt")
  if [ "$(jq -r .success <<<"$res" 2>/dev/null)" = true ] &&
    [ "$(jq -c '.agents.answered | sort' <<<"$res")" = '["agent-1","agent-2"]' ]; then
    pass "HTTPS POST /v1/interrupt dev-2: success, answered by agent-1 and agent-2 ($(jq -r .total_time_ms <<<"$res") ms)"
  else
    fail "HTTPS POST /v1/interrupt dev-2 over TLS" "$res"
  fi
  code=$(curl -sS --max-time 5 -o "$WORK/nocert" -w '%{http_code}' --cacert "$IHC_TLS_DIR/ca.pem" "$API/v1/agents" 2>/dev/null)
  if [ "$code" = 403 ] && ! curl -sS --max-time 5 -o /dev/null "http://127.0.0.1:$IHC_HTTP_PORT/healthz" 2>/dev/null; then
    pass "HTTPS without a client certificate: 403; plain http:// gets no answer"
  else
    fail "HTTPS without a client certificate refused" "HTTP $code: $(cat "$WORK/nocert" 2>/dev/null)"
  fi
  if compose exec -T coordinator ihc interrupt dev-3 --json >"$WORK/cli-tls" 2>&1 &&
    [ "$(jq -r .success "$WORK/cli-tls" 2>/dev/null)" = true ]; then
    pass "ihc interrupt dev-3 over tls+tcp:// (CLI in the image, the coordinator's certificate)"
  else
    fail "ihc interrupt dev-3 over tls+tcp://" "$(cat "$WORK/cli-tls")"
  fi
  # a plain tcp:// client is refused, and the coordinator says it refused a handshake
  control_refusal_logged() {
    compose logs --no-color coordinator 2>&1 | grep -q 'TLS handshakes refused url=tls+tcp://0.0.0.0:7452'
  }
  st=0
  compose exec -T coordinator env -u IHC_TLS_CA -u IHC_TLS_CERT -u IHC_TLS_KEY -u IHC_PUB_URL \
    -u IHC_CONTROL_URL ihc --control tcp://127.0.0.1:7452 stats >"$WORK/plain" 2>&1 || st=$?
  if [ "$st" = 3 ] && grep -q 'coordinator unreachable' "$WORK/plain" &&
    wait_for 20 "refusal logged" control_refusal_logged; then
    pass "a plain tcp:// client is refused and the coordinator logs the refused handshake"
  else
    fail "a plain tcp:// client is refused" "exit $st: $(cat "$WORK/plain")" \
      "$(compose logs --no-color --tail 10 coordinator 2>&1)"
  fi
  log "TLS variant: $((SECONDS - t)) s"
fi
