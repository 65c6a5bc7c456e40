#!/usr/bin/env bash
# A small cluster on one machine for ihc's cluster tests: hosts in network namespaces on a
# private bridge (which lives in its own namespace, so the root namespace is never touched).
#
# Source it from a test script (needs root, iproute2):
#   . tests/cluster/netns.sh
#   ns_setup 4                  # hosts ihc-h0 … ihc-h3 at 10.77.0.1 … 10.77.0.4
#   ns_exec 1 ping -c1 10.77.0.1
#   ns_cut 3 [link|drop]; ns_heal 3; ns_throttle 2 1mbit; ns_unthrottle 2
#   ns_teardown                 # also installed as an EXIT trap by ns_setup
# Run it directly for a self-check of the harness: `bash tests/cluster/netns.sh selftest`.
#
# Layout: namespace ${NS_PREFIX}-sw holds bridge br0; host i is namespace ${NS_PREFIX}-h<i>
# with interface eth0 (address ${NS_SUBNET}.<i+1>/24), whose peer p<i> is a port of br0.
# Only addresses inside these namespaces are ever used.

NS_PREFIX=${NS_PREFIX:-ihc}
NS_SUBNET=${NS_SUBNET:-10.77.0}
NS_PIDS=()

ns_log() { printf '[netns] %s\n' "$*" >&2; }

ns_name() { printf '%s-h%s' "$NS_PREFIX" "$1"; }
ns_switch() { printf '%s-sw' "$NS_PREFIX"; }
ns_addr() { printf '%s.%s' "$NS_SUBNET" "$(($1 + 1))"; }

# ns_require: fails with a clear message when this machine cannot run the harness.
ns_require() {
  if [ "$(id -u)" != 0 ]; then
    ns_log "needs root (ip netns)"
    return 1
  fi
  local tools=""
  command -v ip >/dev/null || tools="$tools iproute2"
  command -v ping >/dev/null || tools="$tools iputils-ping"
  command -v iptables >/dev/null || tools="$tools iptables"
  if [ -n "$tools" ]; then
    ns_log "installing$tools"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $tools >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $tools >/dev/null; } ||
      { ns_log "could not install$tools"; return 1; }
  fi
  local probe
  probe="$NS_PREFIX-probe$$"
  if ! ip netns add "$probe" 2>/dev/null; then
    ns_log "this kernel or sandbox refuses 'ip netns add'"
    return 1
  fi
  ip netns del "$probe"
}

# ns_kill_in NS: ends the processes living in namespace NS (ones this harness started there,
# or that a crashed earlier run left there): TERM, then KILL after a short grace period.
ns_kill_in() {
  local ns=$1 pids deadline
  pids=$(ip netns pids "$ns" 2>/dev/null) || return 0
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null
  deadline=$((SECONDS + 3))
  while [ $SECONDS -lt $deadline ]; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null
  return 0
}

# ns_cleanup_all: removes every namespace of this prefix (this run's or a crashed run's).
ns_cleanup_all() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${NS_PREFIX}-(h[0-9]+|sw)\$"); do
    ns_kill_in "$ns"
    ip netns del "$ns" 2>/dev/null || ns_log "could not delete namespace $ns"
  done
}

# ns_teardown: stops the processes started with ns_spawn and removes the cluster.
ns_teardown() {
  local pid
  for pid in "${NS_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  NS_PIDS=()
  ns_cleanup_all
}

# ns_lock: one run per prefix at a time. Another run with the same prefix (say, another
# checkout's tests/run.sh) would remove this run's namespaces as a crashed run's leftovers and
# start its own hosts at the same addresses: it waits for this lock instead (fd 9, held until
# exit; spawned processes do not inherit it). NS_PREFIX=… runs apart without waiting.
ns_lock() {
  command -v flock >/dev/null || return 0
  local f="${NS_LOCK_DIR:-/run/lock}/${NS_PREFIX}-netns.lock"
  { exec 9>"$f"; } 2>/dev/null || { exec 9>"/tmp/${NS_PREFIX}-netns.lock"; } 2>/dev/null || return 0
  flock -n 9 && return 0
  ns_log "another cluster run with prefix $NS_PREFIX holds $f: waiting for it (at most 600 s)"
  flock -w 600 9 || {
    ns_log "still held after 600 s"
    return 1
  }
}

# ns_setup N: builds N hosts (0 … N-1) on one bridge, cleaning leftovers first, and arranges
# for ns_teardown to run at exit.
ns_setup() {
  local n=$1 i ns sw
  ns_require || return 1
  ns_lock || return 1
  ns_cleanup_all
  trap 'ns_teardown' EXIT
  trap 'exit 130' INT TERM
  sw=$(ns_switch)
  ip netns add "$sw" || return 1
  ip -n "$sw" link set lo up
  ip -n "$sw" link add br0 type bridge || return 1
  # No STP delay: ports forward as soon as they are up.
  ip -n "$sw" link set br0 type bridge forward_delay 0 stp_state 0 2>/dev/null
  ip -n "$sw" link set br0 up
  for ((i = 0; i < n; i++)); do
    ns=$(ns_name "$i")
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
    ip link add "ihcv$$x$i" type veth peer name "ihcp$$x$i" || return 1
    ip link set "ihcv$$x$i" netns "$ns" name eth0 || return 1
    ip link set "ihcp$$x$i" netns "$sw" name "p$i" || return 1
    ip -n "$sw" link set "p$i" master br0 up || return 1
    ip -n "$ns" addr add "$(ns_addr "$i")/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up || return 1
  done
  # Wait until every host reaches host 0 (bridge ports forwarding, neighbours resolved).
  for ((i = 1; i < n; i++)); do
    ns_wait_reach "$i" "$(ns_addr 0)" 10 || {
      ns_log "host $i cannot reach $(ns_addr 0) after setup"
      return 1
    }
  done
  return 0
}

# ns_exec I CMD…: runs CMD in host I and waits for it.
ns_exec() {
  local i=$1
  shift
  ip netns exec "$(ns_name "$i")" "$@" 9>&-
}

# ns_spawn I LOGFILE CMD…: starts CMD in host I in the background, output to LOGFILE; sets
# NS_LAST_PID (ip netns exec execs into CMD, so it is CMD's pid) and remembers it for teardown.
# Use as: ns_spawn 1 log cmd…; pid=$NS_LAST_PID  (not in a $(…) subshell, which would lose it).
ns_spawn() {
  local i=$1 log=$2
  shift 2
  ip netns exec "$(ns_name "$i")" "$@" >>"$log" 2>&1 </dev/null 9>&- &
  NS_LAST_PID=$!
  NS_PIDS+=("$NS_LAST_PID")
}

# ns_reach I ADDR: true when host I gets an ICMP echo answer from ADDR within a second.
ns_reach() {
  ns_exec "$1" ping -n -c 1 -W 1 "$2" >/dev/null 2>&1
}

# ns_wait_reach I ADDR SECONDS: waits until host I reaches ADDR, up to SECONDS.
ns_wait_reach() {
  local i=$1 addr=$2 deadline=$((SECONDS + $3))
  while [ $SECONDS -lt $deadline ]; do
    ns_reach "$i" "$addr" && return 0
    sleep 0.2
  done
  return 1
}

# ns_cut I [link|drop]: cuts host I off the network. "link" takes its switch port down (the
# cable is pulled: nothing gets through, no RST, no ICMP); "drop" adds iptables DROP rules for
# everything but loopback inside the host (the host keeps its link but hears nothing).
ns_cut() {
  local i=$1 mode=${2:-link}
  case $mode in
  link) ip -n "$(ns_switch)" link set "p$i" down ;;
  drop)
    ns_exec "$i" iptables -w -I INPUT ! -i lo -j DROP &&
      ns_exec "$i" iptables -w -I OUTPUT ! -o lo -j DROP
    ;;
  *)
    ns_log "ns_cut: unknown mode '$mode' (link or drop)"
    return 2
    ;;
  esac
}

# ns_heal I: undoes ns_cut (both modes).
ns_heal() {
  local i=$1
  ip -n "$(ns_switch)" link set "p$i" up
  while ns_exec "$i" iptables -w -D INPUT ! -i lo -j DROP 2>/dev/null; do :; done
  while ns_exec "$i" iptables -w -D OUTPUT ! -o lo -j DROP 2>/dev/null; do :; done
  return 0
}

# ns_throttle I RATE: limits what host I sends to RATE (tc tbf, e.g. 1mbit).
ns_throttle() {
  local i=$1 rate=$2
  ns_exec "$i" tc qdisc replace dev eth0 root tbf rate "$rate" burst 16kb latency 200ms
}

# ns_unthrottle I: removes the limit.
ns_unthrottle() {
  ns_exec "$1" tc qdisc del dev eth0 root 2>/dev/null
  return 0
}

# ---- self-check of the harness ----------------------------------------------------------

ns_selftest() {
  local pass=0 fail=0 i
  ok() {
    printf 'PASS %s\n' "$1"
    pass=$((pass + 1))
  }
  ko() {
    printf 'FAIL %s\n' "$1"
    fail=$((fail + 1))
  }
  if ! ns_setup 3; then
    ko "setup of 3 hosts"
    printf '%d passed, %d failed\n' "$pass" "$((fail))"
    return 1
  fi
  ok "setup of 3 hosts"
  if ns_reach 1 "$(ns_addr 2)" && ns_reach 2 "$(ns_addr 0)" && ns_reach 0 "$(ns_addr 1)"; then
    ok "hosts reach each other"
  else
    ko "hosts reach each other"
  fi
  if [ "$(ns_exec 1 ip -4 -o addr show dev eth0 | awk '{print $4}')" = "$(ns_addr 1)/24" ]; then
    ok "host 1 has address $(ns_addr 1)"
  else
    ko "host 1 has address $(ns_addr 1)"
  fi

  local mode
  for mode in link drop; do
    if ! ns_cut 1 "$mode"; then
      ko "cut ($mode) works on this kernel"
      continue
    fi
    if ! ns_reach 1 "$(ns_addr 0)" && ! ns_reach 0 "$(ns_addr 1)" && ns_reach 2 "$(ns_addr 0)"; then
      ok "cut ($mode) isolates host 1 only"
    else
      ko "cut ($mode) isolates host 1 only"
    fi
    ns_heal 1
    if ns_wait_reach 1 "$(ns_addr 0)" 5 && ns_wait_reach 0 "$(ns_addr 1)" 5; then
      ok "heal ($mode) restores host 1"
    else
      ko "heal ($mode) restores host 1"
    fi
  done

  if ns_throttle 2 1mbit && ns_exec 2 tc qdisc show dev eth0 | grep -q tbf; then
    ok "throttle (tc tbf) on host 2"
  else
    ko "throttle (tc tbf) on host 2"
  fi
  ns_unthrottle 2
  if ns_exec 2 tc qdisc show dev eth0 | grep -q tbf; then
    ko "unthrottle host 2"
  else
    ok "unthrottle host 2"
  fi

  ns_teardown
  trap - EXIT
  if ip netns list | grep -qE "^${NS_PREFIX}-(h[0-9]+|sw)( |\$)"; then
    ko "teardown leaves no namespace"
  else
    ok "teardown leaves no namespace"
  fi
  if ip -o link show | grep -q "ihc[vp]$$x"; then
    ko "teardown leaves no veth in the root namespace"
  else
    ok "teardown leaves no veth in the root namespace"
  fi
  printf '%d passed, %d failed\n' "$pass" "$fail"
  [ "$fail" -eq 0 ]
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case ${1:-} in
  selftest) ns_selftest ;;
  cleanup) ns_cleanup_all ;;
  *)
    echo "usage: $0 selftest|cleanup" >&2
    exit 2
    ;;
  esac
fi
