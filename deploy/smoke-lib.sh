#!/usr/bin/env bash
# Shared by the docker-compose smoke tests (compose-smoke.sh, ha-smoke.sh): reporting, waiting,
# apt installs, a Docker engine and Compose, the base images made locally when no registry is
# reachable, free host ports and service health. Sourced, not run. The caller sets T_START,
# WORK, PASS, FAIL, PROJECT, COMPOSE_FILE, STARTED_DOCKERD and COMPOSE_UP before sourcing,
# and defines compose() (its own files) before the cleanup trap runs.

log() { printf '[smoke %3ds] %s\n' "$((SECONDS - T_START))" "$*"; }
pass() {
  printf 'PASS %s\n' "$1"
  PASS=$((PASS + 1))
}
fail() {
  printf 'FAIL %s\n' "$1"
  [ $# -gt 1 ] && printf '     %s\n' "${@:2}"
  FAIL=$((FAIL + 1))
}
summary() {
  log "total time $((SECONDS - T_START)) s"
  printf '%d passed, %d failed\n' "$PASS" "$FAIL"
}
die() {
  fail "$1" "${@:2}"
  exit 1
}


cleanup() {
  local rc=$?
  if [ -n "$COMPOSE_UP" ]; then
    if [ "$FAIL" -gt 0 ] || [ $rc -ne 0 ]; then
      log "logs of the stack (last 40 lines per service):"
      compose logs --no-color --tail 40 2>&1 | sed 's/^/    /'
    fi
    if [ "${IHC_SMOKE_KEEP:-0}" = 1 ]; then
      log "IHC_SMOKE_KEEP=1: stack left up; remove it with: $COMPOSE -p $PROJECT -f $COMPOSE_FILE down -v"
    else
      log "taking the stack down (down -v)"
      compose down -v --remove-orphans >"$WORK/down.log" 2>&1 ||
        { log "down failed:"; sed 's/^/    /' "$WORK/down.log"; }
    fi
  fi
  if [ -n "$STARTED_DOCKERD" ]; then
    log "stopping the dockerd this script started (pid $STARTED_DOCKERD)"
    kill -TERM "$STARTED_DOCKERD" 2>/dev/null
    local d=$((SECONDS + 30))
    while kill -0 "$STARTED_DOCKERD" 2>/dev/null && [ $SECONDS -lt $d ]; do sleep 0.2; done
  fi
  rm -rf "$WORK"
  summary
  if [ "$FAIL" -gt 0 ] && [ $rc -eq 0 ]; then rc=1; fi
  exit $rc
}

# wait_for SECONDS WHAT CMD…: runs CMD until it succeeds or SECONDS pass.
wait_for() {
  local secs=$1 what=$2 end
  shift 2
  end=$((SECONDS + secs))
  while [ $SECONDS -lt "$end" ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "gave up waiting ${secs}s for: $what"
  return 1
}

apt_install() {
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$WORK/apt.log" 2>&1 ||
    { apt-get update -q >>"$WORK/apt.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$WORK/apt.log" 2>&1; } ||
    { sed 's/^/    /' "$WORK/apt.log" | tail -20; return 1; }
}

# smoke_engine: root, the tools, a Docker engine (dockerd started when none answers: the
# cleanup stops it) and $COMPOSE.
smoke_engine() {
  [ "$(id -u)" = 0 ] || die "must run as root (starts dockerd, installs packages)"

  need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker >/dev/null || need+=(docker.io)
  command -v curl >/dev/null || need+=(curl)
  command -v jq >/dev/null || need+=(jq)
  command -v ss >/dev/null || need+=(iproute2)
  command -v openssl >/dev/null || need+=(openssl)
  if [ ${#need[@]} -gt 0 ]; then
    # shellcheck disable=SC2046 # one word per package
    apt_install $(printf '%s\n' "${need[@]}" | sort -u) || die "install of ${need[*]}"
  fi

  if ! timeout 20 docker info >/dev/null 2>&1; then
    log "no Docker engine answers: starting dockerd (log $WORK/dockerd.log)"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    wait_for 60 "docker info" docker info ||
      die "dockerd did not come up within 60 s" "$(tail -5 "$WORK/dockerd.log")"
  fi

  if [ -n "${IHC_COMPOSE:-}" ]; then
    COMPOSE=$IHC_COMPOSE
  elif docker compose version >/dev/null 2>&1; then
    COMPOSE="docker compose"
  elif command -v docker-compose >/dev/null; then
    COMPOSE=docker-compose
  else
    apt_install docker-compose || die "install of docker-compose"
    COMPOSE=docker-compose
  fi
  log "compose: $COMPOSE ($($COMPOSE version 2>/dev/null | head -1))"

}

# smoke_base_images: debian:bookworm-slim and redis:7, made locally when missing.
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

try_pull() {
  [ "${IHC_SMOKE_PULL:-0}" = 1 ] || return 1
  log "pulling $1"
  timeout 120 docker pull "$1" >"$WORK/pull.log" 2>&1
}

# The Debian mirror apt uses (deb822 .sources or a sources.list line), for debootstrap.
debian_mirror() {
  local m
  m=$(grep -hs -A3 '^Types:.*deb' /etc/apt/sources.list.d/*.sources |
    awk '/^URIs:/ {u=$2} /^Suites:/ && u && $0 ~ /bookworm( |$)/ {print u; exit}')
  [ -n "$m" ] || m=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

make_debian_base() {
  command -v debootstrap >/dev/null || apt_install debootstrap || return 1
  local mirror dir=$WORK/rootfs
  mirror=$(debian_mirror)
  log "making debian:bookworm-slim with debootstrap from $mirror (a few minutes)"
  debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" | sed 's/^/    /'; return 1; }
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | docker import -c 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  local rc=$?
  rm -rf "$dir"
  return $rc
}

# A stand-in for the official redis:7 image: same command line (`redis-server --appendonly
# yes`, `redis-cli ping`), data in /data, protected mode off as in the official image.
make_redis_standin() {
  log "building a stand-in redis:7 from Debian's redis-server"
  mkdir -p "$WORK/redis"
  cat >"$WORK/redis/entrypoint.sh" <<'EOS'
#!/bin/sh
# Like the official image's entrypoint: flags alone mean redis-server flags.
if [ "${1#-}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no --dir /data "$@"
fi
exec "$@"
EOS
  cat >"$WORK/redis/Dockerfile" <<'EOS'
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
VOLUME /data
USER redis
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOS
  docker build -q -t redis:7 "$WORK/redis" >"$WORK/redis-build.log" 2>&1 ||
    { tail -20 "$WORK/redis-build.log" | sed 's/^/    /'; return 1; }
}

smoke_base_images() {
  local t=$SECONDS
  if ! have_image debian:bookworm-slim && ! try_pull debian:bookworm-slim; then
    make_debian_base || die "making debian:bookworm-slim"
  fi
  if ! have_image redis:7 && ! try_pull redis:7; then
    make_redis_standin || die "making the redis:7 stand-in"
  fi
  pass "base images present (debian:bookworm-slim, redis:7) [$((SECONDS - t)) s]"
}


# Free host ports, so the test never collides with an ihc (or anything) already running.
# Ports below the ephemeral range (so no client connection holds one by chance) that no
# socket uses.
port_free() { ! ss -Htan "sport = :$1" | grep -q .; }
# pick_ports N: prints N distinct free ports.
pick_ports() {
  local n=$1 p got=" " lo
  lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)
  [ "${lo:-0}" -gt 12000 ] || lo=32768
  for _ in $(seq 500); do
    p=$((10000 + RANDOM % (lo - 10000)))
    if port_free "$p" && [[ "$got" != *" $p "* ]]; then
      got="$got$p "
      n=$((n - 1))
      [ "$n" -gt 0 ] || break
    fi
  done
  [ "$n" -eq 0 ] && echo "${got# }"
}

# health SERVICE: its container's health (or state without a health check).
health() {
  local id
  id=$(compose ps -q "$1" 2>/dev/null)
  [ -n "$id" ] || return 1
  docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id"
}

# Builds the image and starts the stack (compose and new_ports come from the calling script);
# a host port taken between the pick and the bind: pick others (new_ports) and try again, up to
# three times. Dies when the stack does not come up.
compose_up_retry() {
  local t=$SECONDS attempt up_ok=""
  log "building the image and starting the stack"
  COMPOSE_UP=1
  for attempt in 1 2 3; do
    if compose up -d --build >"$WORK/up.log" 2>&1; then
      up_ok=1
      break
    fi
    grep -q 'address already in use' "$WORK/up.log" || break
    compose down -v --remove-orphans >/dev/null 2>&1
    new_ports || break
    log "a host port was taken meanwhile (attempt $attempt); now http $IHC_HTTP_PORT"
  done
  if [ -n "$up_ok" ]; then
    pass "compose up -d --build [$((SECONDS - t)) s]"
  else
    tail -40 "$WORK/up.log" | sed 's/^/    /'
    die "compose up -d --build"
  fi
}
