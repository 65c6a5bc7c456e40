#!/usr/bin/env bash
# The test command: installs what is missing (Debian), builds ihc twice — a normal build
# and an AddressSanitizer + UndefinedBehaviorSanitizer build — and runs the whole suite on
# both (unit tests, integration tests with real redis-server / coordinator / agents), runs
# the unit tests under valgrind, and, as root, the multi-host tests (network namespaces)
# and the docker-compose smoke tests (one coordinator; two with Redis Sentinel).
# Usage: bash tests/run.sh [--quick] [--no-san] [--no-cluster] [--no-compose]
#   --quick       unit and integration tests only (no cluster, no compose)
#   --no-san      skip the AddressSanitizer + UndefinedBehaviorSanitizer build
#   --no-cluster  skip the network-namespace cluster tests
#   --no-compose  skip the docker-compose smoke tests
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
jobs=$(nproc 2>/dev/null || echo 2)
san=1 cluster=1 compose=1
for a in "$@"; do
    case "$a" in
    --quick) cluster=0 compose=0 ;;
    --no-san) san=0 ;;
    --no-cluster) cluster=0 ;;
    --no-compose) compose=0 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tests/run.sh: unknown option '$a'" >&2; exit 2 ;;
    esac
done

log() { printf '\n=== %s ===\n' "$*"; }

# --- dependencies -------------------------------------------------------------------
deps=(build-essential cmake pkg-config libnng-dev libmsgpack-dev libhiredis-dev libcmocka-dev
      libjansson-dev libmicrohttpd-dev libmbedtls-dev libcurl4-openssl-dev redis-server
      redis-tools valgrind
      iproute2 iptables curl openssl python3 python3-prometheus-client python3-pytest python3-venv gdb)
missing=()
for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    sudo_=""
    [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Tests start their own redis-server processes on free ports; a system one is not needed.
# The dashboard test (http.dashboard) drives Debian's headless chromium; it is installed
# apart so that a machine without it still runs everything else (the test then says it was
# skipped, and ctest lists it as "Not Run").
if ! command -v chromium >/dev/null 2>&1; then
    log "installing chromium (for the dashboard test)"
    sudo_=""
    [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    { $sudo_ apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends chromium; } ||
        echo "tests/run.sh: chromium could not be installed: the dashboard test will be skipped"
fi

passed=0 failed=0 phases_failed=0
phase_log=$(mktemp /tmp/ihc-run-XXXXXX)
trap 'rm -f "$phase_log"' EXIT
phase() { # phase NAME CMD…: runs one phase and adds its test counts to the totals
    local name=$1; shift
    log "$name"
    local t0=$SECONDS st=0 p=0 f=0 line
    "$@" 2>&1 | tee "$phase_log" || st=${PIPESTATUS[0]}
    # ctest: "95% tests passed, 1 tests failed out of 20"; the others: "N passed, N failed"
    if line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$phase_log" | tail -1); then
        local total; total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
        f=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$line"); p=$((total - f))
    elif line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$phase_log" | tail -1); then
        p=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line"); f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    fi
    ((st != 0 && f == 0)) && f=1 # a build or set-up failure counts as a failed test
    passed=$((passed + p)); failed=$((failed + f))
    if ((st == 0)); then
        echo "--- $name: PASS, $p tests ($((SECONDS - t0)) s)"
    else
        phases_failed=$((phases_failed + 1))
        echo "--- $name: FAIL, $f of $((p + f)) tests failed ($((SECONDS - t0)) s)"
    fi
}

build_and_test() { # build_and_test DIR [cmake args…]
    local dir=$1; shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null &&
        cmake --build "$dir" -j"$jobs" &&
        (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 300)
}

valgrind_one() { # valgrind_one NAME CMD…: 0 when clean
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --suppressions=tests/valgrind.supp "${@:2}" >"build/valgrind-$1.log" 2>&1
}

valgrind_unit() { # every unit test of the normal build under valgrind: no errors, no leaks
    local p=0 f=0 name cmd
    for name in $(cd build && ctest -L unit -N | sed -nE 's/.*Test +#[0-9]+: ihc\.([a-z_]+)$/\1/p'); do
        if [[ $name == *_corpus ]]; then # a fuzz target's seed corpus
            cmd=(build/bin/fuzz_${name%_corpus}_replay tests/fuzz/corpus/${name%_corpus})
        else
            cmd=(build/bin/test_$name)
        fi
        # A memory error or leak fails at once. A failed assertion without one is a test
        # outrunning its deadlines under valgrind's 20-50x slowdown: it gets one more run.
        if valgrind_one "$name" "${cmd[@]}" ||
            { ! grep -qE '==[0-9]+== +(Invalid|Conditional|Use of uninit|Mismatched|[0-9,]+ .*bytes in [0-9,]+ blocks are (definitely|indirectly) lost)' \
                  "build/valgrind-$name.log" &&
              echo "valgrind $name: failed without a memory error; running it once more" &&
              valgrind_one "$name" "${cmd[@]}"; }; then
            p=$((p + 1)); echo "valgrind $name: ok"
        else
            f=$((f + 1)); echo "valgrind $name: FAILED (build/valgrind-$name.log)"; tail -30 "build/valgrind-$name.log"
        fi
    done
    echo "$p passed, $f failed"
    ((f == 0 && p > 0)) # no unit test found means the build above failed
}

phase "normal build + tests" build_and_test build
phase "valgrind (unit tests)" valgrind_unit
if ((san)); then
    # halt_on_error: the first report fails the test; detect_leaks covers LeakSanitizer.
    export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    export LSAN_OPTIONS=suppressions=$here/tests/lsan.supp:print_suppressions=0
    phase "ASan+UBSan build + tests" build_and_test build-san -DIHC_SANITIZE=address,undefined -DIHC_BUILD_BENCH=OFF
    unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
fi
if ((cluster)) && [ "$(id -u)" -eq 0 ] && [ -x tests/cluster/run.sh ]; then
    phase "cluster tests (network namespaces)" env IHC_BIN_DIR="$here/build/bin" bash tests/cluster/run.sh
fi
if ((compose)) && [ "$(id -u)" -eq 0 ] && [ -x deploy/compose-smoke.sh ]; then
    phase "docker-compose smoke test" bash deploy/compose-smoke.sh
fi
# Standby coordinators and Redis through Sentinel: the leader's container and then the Redis
# primary killed (about 3 minutes; the image is the one compose-smoke.sh just built).
if ((compose)) && [ "$(id -u)" -eq 0 ] && [ -x deploy/ha-smoke.sh ]; then
    phase "docker-compose HA smoke test" bash deploy/ha-smoke.sh
fi

log "summary"
if [ -d build/test-artifacts ]; then
    echo "test artifacts (dashboard screenshot, measurements): $here/build/test-artifacts"
    for f in build/test-artifacts/*.json; do [ -f "$f" ] && echo "  $(basename "$f"): $(tr -d '\n ' <"$f")"; done
fi
echo "$passed passed, $failed failed"
((failed == 0 && phases_failed == 0))
