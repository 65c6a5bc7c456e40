#!/usr/bin/env python3
"""Python asyncio generator stopped: an HTTP request (POST /v1/interrupt) → the coordinator →
N real ihc-agent processes → on each, a Python process holding an ihc.aio session whose
guarded async generator yields every 1 ms → that generator's task cancelled. Measures, per
round, from just before the request is sent to the last of the N generators ending (the
processes share CLOCK_MONOTONIC), and the HTTP answer's own time. Each round every holder
begins a new session of the same hardware_id (churn, like bench_ihc's default). Also
reported: the request → the last stop event read by Python (stop_event_*), the slowest
holder's stop event → its generator ended (python_*: the package's own part), and the HTTP
answer (http_*: after every holder reported its module's result).

    bench_python.py --bin DIR --redis-port P --agents N --iterations K [--samples F]

Prints one JSON line: {"name":"python_aio","agents":N,"n":K,"p50_us",...}. Standard library
and the package in python/ only."""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "http"))

import ihc  # noqa: E402
import ihc.aio  # noqa: E402

HW = "py-bench"


async def holder(url: str, period: float) -> None:
    """One agent's Python process: a session per round; says 'ready', then when its
    generator ended 'stopped <t_end>'; waits for 'next' on stdin between rounds."""
    async def tokens():
        i = 0
        while True:
            await asyncio.sleep(period)
            i += 1
            yield i
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while True:
        async with ihc.aio.session(HW, module="py_bench", url=url) as s:
            print("ready", s.session_id, flush=True)
            n = 0
            async for _ in s.guard(tokens()):
                n += 1
            t_end = time.monotonic()
        print("stopped %.9f %d %.9f" % (t_end, n, s.stop_time), flush=True)
        line = await stdin.readline()
        if line.strip() != b"next":
            return


def pct(v, q):
    s = sorted(v)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--redis-port", type=int, default=6379)
    ap.add_argument("--agents", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--samples")
    ap.add_argument("--holder", help=argparse.SUPPRESS)
    ap.add_argument("--period-ms", type=float, default=1.0)
    a = ap.parse_args()
    if a.holder:
        asyncio.run(holder(a.holder, a.period_ms / 1000.0))
        return 0

    os.environ["IHC_BIN_DIR"] = a.bin
    os.environ["LOG_INTERRUPTS"] = "false"
    os.environ["IHC_LOG_LEVEL"] = "warn"
    import ihc_env
    ihc_env.log = lambda *x: print(*x, file=sys.stderr, flush=True)
    env = ihc_env.Env("bench-py")
    env.redis_port = a.redis_port
    env.start_coordinator()
    client = ihc.Client("http://127.0.0.1:%d" % env.http_port)
    holders = []
    try:
        for i in range(a.agents):
            sock = os.path.join(env.dir, "a%d.sock" % i)
            env.procs.append(ihc_env.Proc("agent", [
                ihc_env.bin_path("ihc-agent"), "--id", "pyb-%d" % i, "--pub", env.pub,
                "--report", env.report, "--local", "unix://" + sock, "--heartbeat", "0.5",
                "--log-level", "warn"], os.path.join(env.dir, "agent-%d.log" % i)))
            if not ihc_env.wait_until(lambda: os.path.exists(sock), 15):
                ihc_env.fail("agent %d did not serve %s" % (i, sock))
            holders.append(subprocess.Popen(
                [sys.executable, __file__, "--holder", "unix://" + sock, "--period-ms",
                 str(a.period_ms)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                preexec_fn=ihc_env._die_with_parent))
        lat, http, event, py = [], [], [], []
        tokens = 0
        for k in range(a.warmup + a.iterations):
            for h in holders:
                line = h.stdout.readline()
                if not line.startswith("ready"):
                    ihc_env.fail("a holder said %r" % line)
            if not ihc_env.wait_until(lambda: len(client.sessions(HW)) >= a.agents, 15, 0.001):
                ihc_env.fail("the coordinator did not learn %d sessions" % a.agents)
            t0 = time.monotonic()
            r = client.interrupt(HW)
            t1 = time.monotonic()
            if not r.success or len(r.cleaned_sessions) != a.agents:
                ihc_env.fail("round %d: %r" % (k, r.raw))
            ends, stops = [], []
            for h in holders:
                w = h.stdout.readline().split()
                if not w or w[0] != "stopped":
                    ihc_env.fail("a holder said %r" % w)
                ends.append(float(w[1]))
                tokens += int(w[2])
                stops.append(float(w[3]))
            if k >= a.warmup:
                lat.append((max(ends) - t0) * 1e6)
                http.append((t1 - t0) * 1e6)
                event.append((max(stops) - t0) * 1e6)
                py.append(max(e - s for e, s in zip(ends, stops)) * 1e6)
            last = k == a.warmup + a.iterations - 1
            for h in holders:
                h.stdin.write("stop\n" if last else "next\n")
                h.stdin.flush()
            if sys.stderr.isatty():
                print("\rpython aio N=%d %d/%d" % (a.agents, k + 1, a.warmup + a.iterations),
                      end="", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        for h in holders:
            h.wait(10)
        if a.samples:
            with open(a.samples, "w") as f:
                f.writelines("%.1f\n" % x for x in lat)
        print(json.dumps({
            "name": "python_aio", "agents": a.agents, "n": len(lat),
            "p50_us": round(pct(lat, 0.5), 1), "p99_us": round(pct(lat, 0.99), 1),
            "max_us": round(max(lat), 1), "mean_us": round(sum(lat) / len(lat), 1),
            "http_p50_us": round(pct(http, 0.5), 1), "http_p99_us": round(pct(http, 0.99), 1),
            "stop_event_p50_us": round(pct(event, 0.5), 1),
            "python_p50_us": round(pct(py, 0.5), 1), "python_p99_us": round(pct(py, 0.99), 1),
            "period_ms": a.period_ms}), flush=True)
    finally:
        for h in holders:
            if h.poll() is None:
                h.kill()
                h.wait()
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
