#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/fuzz_*.c) for SECONDS each, one after the other, in
# a clang build (build-fuzz/, -DIHC_BUILD_FUZZ=ON), and prints runs and crashes per target.
# Each target keeps a working corpus in build-fuzz/corpus/<target> (seeded from
# tests/fuzz/corpus/<target>; add what is worth keeping there by hand) and writes crashing
# inputs to build-fuzz/artifacts/<target>/. Exits 1 when a target crashed.
# Usage: bash tests/fuzz/run.sh [SECONDS] [TARGET...]     (default 60 s, every target)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
secs=${1:-60}
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "tests/fuzz/run.sh: SECONDS must be a number" >&2; exit 2; }
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    for f in tests/fuzz/fuzz_*.c; do t=${f##*/fuzz_}; targets+=("${t%.c}"); done
fi
command -v clang >/dev/null || { echo "tests/fuzz/run.sh: clang is needed (apt-get install clang)" >&2; exit 1; }
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIHC_BUILD_FUZZ=ON \
    -DIHC_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
printf '%-10s %8s %12s %12s %8s\n' target seconds runs runs/s crashes
crashed=0
for t in "${targets[@]}"; do
    # absolute paths: a target may change its directory (fuzz_config does)
    work=$here/build-fuzz/corpus/$t art=$here/build-fuzz/artifacts/$t log=$here/build-fuzz/fuzz-$t.log
    mkdir -p "$work" "$art"
    dict=()
    [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="$here/tests/fuzz/$t.dict")
    st=0
    build-fuzz/bin/fuzz_"$t" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$art/" "${dict[@]}" "$work" "$here/tests/fuzz/corpus/$t" \
        >"$log" 2>&1 || st=$?
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
    n=$(find "$art" -type f | wc -l)
    ((st == 0 && n == 0)) || { crashed=1; tail -30 "$log" | sed 's/^/    /'; }
    printf '%-10s %8s %12s %12s %8s\n' "$t" "$secs" "$runs" "$((runs / (secs > 0 ? secs : 1)))" "$n"
done
exit $crashed
