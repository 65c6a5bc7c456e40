#!/usr/bin/env bash
# Every row of the README's Performance section from ONE run, so that its ratios compare
# measurements taken side by side on the same machine:
#   - the bare request hop (REQ → REP echo) and, for N = 1, 8, 32 and 128, the nng floor
#     (PUB → N SUB → PUSH acks → PULL, with its publisher's CPU per round and subscriber);
#   - ihc end to end for N = 1, 8, 32 (control socket and HTTP; N = 8 also with every socket
#     over TLS) and 128 (control socket), with
#     real agent processes, each beginning a new session after every interrupt (churn), and
#     the steady variant beside it (sessions held up front, nothing begun during the run);
#     each row with the coordinator's and each agent's CPU per interrupt;
#   - the coordinator's CPU per interrupt per answering agent for N = 8, 32, 128 with
#     bench_sim's lightweight agents (one process, so 2 cores are not drowned by 128 agents);
#   - Redis pub/sub and the original design (a Redis flag polled every 100 ms);
#   - Python asyncio generators (python/ihc, one holder process per agent) stopped by an HTTP
#     interrupt, N = 1 and 8 (bench_python.py);
#   - throughput with 8 agents and 8 requesters, and the floor's with 8 in flight;
#   - 100k sessions in Redis against the empty run just before it;
#   - the token check, the wire codec, an idle agent;
#   - a flame graph (perf, all processes) of ihc end to end at N = 8.
# Writes tests/bench/results/{results.json,table.md,latency.png,flame-n8.svg}.
# Usage: bash tests/bench/run.sh [--quick]      (about 12 minutes; --quick: about 3)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
quick=0; [ "${1:-}" = "--quick" ] && quick=1
iters=2000; iters32=1000; steady=1000; steady32=300; poll_iters=100; scale=128; scale_iters=200
py_iters=500
((quick)) && { iters=300; iters32=200; steady=200; steady32=100; poll_iters=20; scale_iters=50; py_iters=100; }

for p in gnuplot-nox redis-server redis-tools python3 linux-perf; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
done
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DIHC_BUILD_TESTS=ON -DIHC_BUILD_BENCH=ON >/dev/null
cmake --build build-bench -j"$(nproc)" --target bench_floor bench_redis bench_ihc bench_agent \
    bench_sim bench_token bench_wire ihc-coordinator ihc-agent-bin >/dev/null
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
ihc() { flush; run "$bin/bench_ihc" --bin "$bin" --redis-port "$port" --logdir "$work" "$@"; }

# The request hop every answered interrupt pays on top of the fan-out floor.
run "$bin/bench_floor" --reqrep --iterations $iters
for n in 1 8 32; do
    it=$iters; st=$steady; ((n == 32)) && { it=$iters32; st=$steady32; }
    run "$bin/bench_floor" --agents $n --iterations $it --samples "$out/samples/floor_$n.txt"
    ihc --agents $n --iterations $it --via control --samples "$out/samples/ihc_control_$n.txt"
    ihc --agents $n --iterations $it --via http --samples "$out/samples/ihc_http_$n.txt"
    ihc --agents $n --iterations $st --via control --steady
    flush; run "$bin/bench_redis" --port "$port" --mode pubsub --agents $n --iterations $it --samples "$out/samples/redis_pubsub_$n.txt"
    flush; run "$bin/bench_redis" --port "$port" --mode poll --interval 100 --agents $n --iterations $poll_iters --samples "$out/samples/redis_poll_$n.txt"
done
# Python asyncio generators stopped over HTTP: request → every holder's generator cancelled.
for n in 1 8; do
    flush; run python3 "$here/tests/bench/bench_python.py" --bin "$bin" --redis-port "$port" \
        --agents $n --iterations $py_iters --samples "$out/samples/python_aio_$n.txt"
done
# N = 8 over TLS (every socket tls+tcp://, mutual TLS), beside the plain-TCP rows above.
bash "$here/deploy/make-certs.sh" "$work/certs" >/dev/null
ihc --agents 8 --iterations $iters --via control --tls "$work/certs" --samples "$out/samples/ihc_control_tls_8.txt"
run "$bin/bench_floor" --agents $scale --iterations $scale_iters
ihc --agents $scale --iterations $scale_iters --via control
# The coordinator's cost per answering agent, with lightweight agents.
for n in 8 32 $scale; do
    it=$iters32; ((n == scale)) && it=$scale_iters
    ihc --agents $n --iterations $it --via control --sim
done
ihc --agents 8 --throughput 10 --clients 8
run "$bin/bench_floor" --agents 8 --throughput 10 --window 8
# 100k sessions in Redis against the same run with Redis empty, just before it.
ihc --agents 8 --iterations $iters --via control
ihc --agents 8 --iterations $iters --via control --preload-sessions 100000
run "$bin/bench_token"
run "$bin/bench_wire"
idle() { # agent idle CPU and memory: an ihc-agent with no work and no coordinator
    IHC_LOCAL_URL="unix://$work/idle.sock" "$bin/ihc-agent" --pub tcp://127.0.0.1:1 --report tcp://127.0.0.1:1 >"$work/idle.log" 2>&1 &
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

# Where the time goes at N = 8: every process of the run (coordinator, agents, requester),
# sampled with their call stacks (DWARF: the Release build keeps no frame pointers).
if perf record -q -F 50 -g -o "$work/probe.data" -- true >/dev/null 2>&1; then
    flush
    perf record -q -F 400 --call-graph dwarf,8192 -o "$work/perf.data" -- \
        "$bin/bench_ihc" --bin "$bin" --redis-port "$port" --logdir "$work" --agents 8 \
        --iterations $iters --via control >/dev/null 2>"$work/perf.log" || true
    perf script -F +pid --show-task-events -i "$work/perf.data" 2>/dev/null |
        python3 "$here/tests/bench/flamegraph.py" --title "ihc end to end, 8 agents ($(date +%F))" \
            --out "$out/flame-n8.svg" --folded "$out/flame-n8.folded"
    perf script -F +pid --show-task-events -i "$work/perf.data" 2>/dev/null |
        python3 "$here/tests/bench/flamegraph.py" --out /dev/null --summary | tee -a "$results"
    # what the CPU columns follow on this VM: context switches per interrupt, ihc against the floor
    for n in 1 8; do
        flush
        run python3 "$here/tests/bench/switches.py" --label "ihc, steady" --agents $n --rounds $steady -- \
            "$bin/bench_ihc" --bin "$bin" --redis-port "$port" --logdir "$work" --agents $n \
            --iterations $steady --via control --steady
        run python3 "$here/tests/bench/switches.py" --label floor --agents $n --rounds $steady -- \
            "$bin/bench_floor" --agents $n --iterations $steady
    done
    run python3 "$here/tests/bench/switches.py" --label "request hop" --rounds $steady -- \
        "$bin/bench_floor" --reqrep --iterations $steady
else
    echo "perf cannot record here: no flame graph" >&2
fi

python3 "$here/tests/bench/report.py" "$results" "$out"
