#!/usr/bin/env bash
# Reproduces the Performance table of the README: ihc end to end (HTTP and control socket)
# against the nng floor, Redis pub/sub and Redis-flag polling, for N = 1, 8, 32 (+128 for
# scale), the bare request hop, throughput with 8 agents (and the floor's), latency with 100k sessions in Redis, the token check
# and agent idle cost. Writes tests/bench/results/{results.json,table.md,latency.png}.
# Usage: bash tests/bench/run.sh [--quick]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
quick=0; [ "${1:-}" = "--quick" ] && quick=1
iters=2000; iters32=1000; poll_iters=100; scale=128
((quick)) && { iters=300; iters32=200; poll_iters=20; scale=64; }

for p in gnuplot-nox redis-server redis-tools python3; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
done
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DIHC_BUILD_TESTS=ON -DIHC_BUILD_BENCH=ON >/dev/null
cmake --build build-bench -j"$(nproc)" --target bench_floor bench_redis bench_ihc bench_agent \
    bench_token ihc-coordinator ihc-agent-bin >/dev/null
bin=$here/build-bench/bin
out=$here/tests/bench/results
mkdir -p "$out/samples"
work=$(mktemp -d /tmp/ihc-bench-XXXXXX)
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null; rm -rf "$work"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done

results=$out/results.json
: >"$results"
run() { echo "+ $*" >&2; "$@" | tee -a "$results"; }
flush() { redis-cli -p "$port" FLUSHALL >/dev/null; }

# The request hop every answered interrupt pays on top of the fan-out floor.
run "$bin/bench_floor" --reqrep --iterations $iters
for n in 1 8 32; do
    it=$iters; ((n == 32)) && it=$iters32
    run "$bin/bench_floor" --agents $n --iterations $it --samples "$out/samples/floor_$n.txt"
    flush; run "$bin/bench_ihc" --bin "$bin" --redis-port "$port" --agents $n --iterations $it --via control --logdir "$work" --samples "$out/samples/ihc_control_$n.txt"
    flush; run "$bin/bench_ihc" --bin "$bin" --redis-port "$port" --agents $n --iterations $it --via http --logdir "$work" --samples "$out/samples/ihc_http_$n.txt"
    flush; run "$bin/bench_redis" --port "$port" --mode pubsub --agents $n --iterations $it --samples "$out/samples/redis_pubsub_$n.txt"
    flush; run "$bin/bench_redis" --port "$port" --mode poll --interval 100 --agents $n --iterations $poll_iters --samples "$out/samples/redis_poll_$n.txt"
done
# N = 8 over TLS (every socket tls+tcp://, mutual TLS), beside the plain-TCP row above.
bash "$here/deploy/make-certs.sh" "$work/certs" >/dev/null
flush; run "$bin/bench_ihc" --bin "$bin" --redis-port "$port" --agents 8 --iterations $iters --via control --tls "$work/certs" --logdir "$work" --samples "$out/samples/ihc_control_tls_8.txt"
flush; run "$bin/bench_floor" --agents $scale --iterations 200
flush; run "$bin/bench_ihc" --bin "$bin" --redis-port "$port" --agents $scale --iterations 200 --via control --logdir "$work"
flush; run "$bin/bench_ihc" --bin "$bin" --redis-port "$port" --agents 8 --throughput 10 --clients 8 --logdir "$work"
run "$bin/bench_floor" --agents 8 --throughput 10 --window 8
flush; run "$bin/bench_ihc" --bin "$bin" --redis-port "$port" --agents 8 --iterations $iters --via control --logdir "$work"
flush; run "$bin/bench_ihc" --bin "$bin" --redis-port "$port" --agents 8 --iterations $iters --via control --preload-sessions 100000 --logdir "$work"
run "$bin/bench_token"
idle() { # agent idle CPU and memory: an ihc-agent with no work and no coordinator
    IHC_LOCAL_URL="ipc://$work/idle.sock" "$bin/ihc-agent" --pub tcp://127.0.0.1:1 --report tcp://127.0.0.1:1 >"$work/idle.log" 2>&1 &
    local pid=$! hz; hz=$(getconf CLK_TCK)
    sleep 2
    local t0; t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    sleep 10
    local t1; t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    local rss; rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
    kill $pid; wait $pid 2>/dev/null || true
    printf '{"name":"agent_idle","rss_kb":%s,"cpu_percent":%s}\n' "$rss" \
        "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN{printf "%.3f", (b-a)/hz/10*100}')"
}
idle | tee -a "$results"

python3 "$here/tests/bench/report.py" "$results" "$out"
