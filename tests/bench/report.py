#!/usr/bin/env python3
"""Turns tests/bench/run.sh's results.json (one JSON object per line, in the order measured)
into the README's tables (table.md) and a latency plot (latency.png, gnuplot). Every ratio
compares rows of this one run."""
import json, os, subprocess, sys, platform, datetime

res_path, out = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(res_path) if l.strip().startswith("{")]

def ms(us):
    return f"{us/1000:.3f}" if us < 10000 else f"{us/1000:.1f}"

def first(pred):
    return next((r for r in rows if pred(r)), None)

def ihc(via, n, variant="churn", sim=False):
    return first(lambda r: r["name"] == f"ihc_{via}" and r["agents"] == n
                 and r.get("variant", "churn") == variant and r.get("sim", False) == sim)

floor = {r["agents"]: r for r in rows if r["name"] == "nng_floor"}
hop = first(lambda r: r["name"] == "nng_reqrep")
lines = []
cpu = "unknown"
try:
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip(); break
except OSError:
    pass
lines.append(f"Machine: {os.cpu_count()} cores, {cpu}, Linux {platform.release()}; "
             f"date: {datetime.date.today().isoformat()}.\n")
lines.append("| path | N | p50 ms | p99 ms | p50 ÷ floor p50 | p50 ÷ (floor + hop) | p99 ÷ (floor + hop) "
             "| coordinator CPU µs / interrupt | … per agent | each agent's CPU µs / interrupt |")
lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
paths = [("ihc", "control", "churn", "ihc, control socket"),
         ("ihc", "control", "steady", "ihc, control socket, steady"),
         ("ihc", "http", "churn", "ihc, HTTP"),
         ("ihc", "control_tls", "churn", "ihc, control socket, every socket over TLS"),
         ("python_aio", None, None, "Python asyncio generator stopped (HTTP → ihc.aio guard)"),
         ("floor", None, None, "bare nng PUB→SUB→PUSH→PULL (floor)"),
         ("redis_pubsub", None, None, "Redis PUBLISH → subscribers → list acks"),
         ("redis_poll", None, None, "Redis flag polled every 100 ms (original design)")]
for n in sorted({r["agents"] for r in rows if "p50_us" in r and r["agents"] > 0}):
    fl = floor.get(n)
    for kind, via, variant, label in paths:
        if kind == "ihc":
            r = ihc(via, n, variant)
        elif kind == "floor":
            r = fl
        else:
            r = first(lambda x: x["name"] == kind and x["agents"] == n)
        if not r:
            continue
        vs_floor = f"{r['p50_us']/fl['p50_us']:.2f}×" if fl else ""
        vs_hop = p99_hop = ""
        if fl and hop and kind == "ihc":
            vs_hop = f"{r['p50_us']/(fl['p50_us']+hop['p50_us']):.2f}×"
            p99_hop = f"{r['p99_us']/(fl['p99_us']+hop['p99_us']):.2f}×"
        c = r.get("coord_cpu_us")
        cpu_cols = (f"{c:.0f} | {r['coord_cpu_us_per_agent']:.0f} | {r['agent_cpu_us']:.0f}"
                    if c is not None else " | | ")
        lines.append(f"| {label} | {n} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | {vs_floor} | "
                     f"{vs_hop} | {p99_hop} | {cpu_cols} |")
pys = [r for r in rows if r["name"] == "python_aio"]
if pys:
    lines.append("\nPython asyncio generator stopped: an HTTP interrupt → the coordinator → N "
                 "ihc-agent processes → on each, a Python process (python/ihc) whose "
                 f"`ihc.aio` session guards an async generator yielding every "
                 f"{pys[0].get('period_ms', 1):g} ms; measured from the request to the last "
                 "generator's task cancelled (processes share CLOCK_MONOTONIC). The HTTP answer "
                 "itself comes later, after each process reported its module's result: p50 "
                 + ", ".join(f"{ms(r['http_p50_us'])} ms (N = {r['agents']})" for r in pys) + ".")
if hop:
    lines.append(f"\nRequest hop alone (bare nng REQ → REP echo between two processes): p50 "
                 f"{ms(hop['p50_us'])} ms, p99 {ms(hop['p99_us'])} ms. Every answered interrupt "
                 "pays it on top of the fan-out floor. The floor's CPU columns are its publisher's "
                 "(the coordinator's counterpart) and its subscribers'.")

sims = [r for r in rows if r["name"] == "ihc_control" and r.get("sim")]
if sims:
    lines.append("\nCoordinator CPU per interrupt per answering agent, with bench_sim's lightweight "
                 "agents (N agents in one process, each with its own connections):\n")
    lines.append("| N | coordinator CPU µs / interrupt | per answering agent | floor publisher's CPU per agent | p50 ms |")
    lines.append("|---:|---:|---:|---:|---:|")
    for r in sims:
        fl = floor.get(r["agents"])
        flc = f"{fl['coord_cpu_us_per_agent']:.0f}" if fl and "coord_cpu_us_per_agent" in fl else ""
        lines.append(f"| {r['agents']} | {r['coord_cpu_us']:.0f} | {r['coord_cpu_us_per_agent']:.0f} "
                     f"| {flc} | {ms(r['p50_us'])} |")

tp = first(lambda r: r["name"] == "ihc_throughput")
tpf = first(lambda r: r["name"] == "nng_floor_throughput")
if tp:
    share = f" = {100*tp['per_second']/tpf['per_second']:.0f} % of the floor's" if tpf else ""
    lines.append(f"\nThroughput: {tp['per_second']:.0f} interrupts/s with {tp['agents']} agents and "
                 f"{tp['clients']} requesters over {tp['seconds']} s ({tp['interrupts_incomplete']} "
                 f"incomplete){share}; coordinator RSS {tp['coordinator_rss_kb']/1024:.1f} MB.")
if tpf:
    lines.append(f"Throughput floor: a bare nng PUB → {tpf['agents']} SUB → PUSH → PULL program with "
                 f"{tpf['window']} broadcasts in flight carries {tpf['per_second']:.0f} acks/s "
                 f"({tpf['lost']} lost).")
for i, r in enumerate(rows):
    if r["name"] == "ihc_control_100k_sessions":
        base = next((x for x in reversed(rows[:i]) if x["name"] == "ihc_control"
                     and x["agents"] == r["agents"] and not x.get("sim")), None)
        rel = f" ({(r['p50_us']/base['p50_us']-1)*100:+.0f} % against {ms(base['p50_us'])} ms with Redis empty, measured just before)" if base else ""
        lines.append(f"\nWith 100k sessions in Redis ({r['agents']} agents): p50 {ms(r['p50_us'])} ms, "
                     f"p99 {ms(r['p99_us'])} ms{rel}.")
    if r["name"] == "token_check":
        lines.append(f"\nToken check: {r['check_ns']:.2f} ns per check (loop {r['loop_ns']:.2f} ns vs "
                     f"{r['baseline_ns']:.2f} ns without the check; one relaxed atomic load, no syscall).")
    if r["name"].startswith("wire_"):
        lines.append(f"Wire codec, {r['name'][5:]} ({r['bytes']} bytes): encode {r['encode_ns']:.0f} ns, "
                     f"decode {r['decode_ns']:.0f} ns.")
    if r["name"] == "agent_idle":
        lines.append(f"\nAgent idle: RSS {r['rss_kb']/1024:.1f} MB, CPU {r['cpu_percent']}% (an ihc-agent with "
                     "no coordinator to reach: nng redialing every second; connected and idle, an agent "
                     "wakes 20 times a second and used 0.1 % in a 10 s measurement).")
    if r["name"] == "profile_n8":
        procs = ", ".join(f"{k} {v} %" for k, v in r["process_pct"].items())
        code = ", ".join(f"{k} {v} %" for k, v in r["code_pct"].items())
        thr = ", ".join(f"{k} {v} %" for k, v in r.get("thread_pct", {}).items())
        lines.append(f"\nProfile of the N = 8 run ({r['samples']} samples, all processes): by process: "
                     f"{procs}; by code: {code}" + (f"; by thread: {thr}" if thr else "") +
                     " (flame-n8.svg).")

# Voluntary context switches per interrupt (switches.py), by process and thread kind.
sw = [r for r in rows if r["name"] == "switches"]
if sw:
    role = {"ihc-coordinator": "coordinator", "bench_agent": "each agent", "bench_ihc": "requester",
            "bench_floor": "publisher (hop: requester)", "exe": "each subscriber (hop: server)",
            "redis-server": "Redis"}
    lines.append("\nVoluntary context switches per interrupt (per round for the floor and the hop), "
                 "by process: all its threads (of which nng's task threads, nng's poll thread); per "
                 "agent or subscriber for those (tests/bench/switches.py):\n")
    lines.append("| run | N | process | switches | nng task | nng poll |")
    lines.append("|---|---:|---|---:|---:|---:|")
    for r in sw:
        for proc in ("ihc-coordinator", "bench_floor", "bench_agent", "exe", "bench_ihc", "redis-server"):
            th = r["procs"].get(proc)
            if not th:
                continue
            div = max(r["agents"], 1) if proc in ("bench_agent", "exe") else 1
            tot = sum(th.values()) / div
            if tot < 0.5:
                continue
            lines.append(f"| {r['label']} | {r['agents']} | {role[proc]} | {tot:.1f} | "
                         f"{th.get('nng:task', 0) / div:.1f} | {th.get('nng:poll:epoll', 0) / div:.1f} |")

# The targets of issue 10, each with what this run measured.
def status(ok):
    return "met" if ok else "missed"
t = ["\n| target | this run | |", "|---|---|---|"]
c1, f1 = ihc("control", 1), floor.get(1)
if c1 and f1 and hop:
    r50 = c1["p50_us"] / (f1["p50_us"] + hop["p50_us"]); r99 = c1["p99_us"] / (f1["p99_us"] + hop["p99_us"])
    t.append(f"| N = 1: p50 ≤ 1.5 × (floor + hop), p99 ≤ 2 × | {r50:.2f}×, {r99:.2f}× | {status(r50 <= 1.5 and r99 <= 2)} |")
for n, lim in ((8, 2.0), (32, 2.0), (128, 3.0)):
    c, f = ihc("control", n), floor.get(n)
    if c and f:
        r = c["p50_us"] / f["p50_us"]
        t.append(f"| N = {n}: p50 ≤ {lim:g} × floor | {r:.2f}× | {status(r <= lim)} |")
if sims:
    v = [r["coord_cpu_us_per_agent"] for r in sims]
    t.append(f"| coordinator CPU ≤ 10 µs per agent, flat N = 8 → 128 | "
             + ", ".join(f"{x:.0f}" for x in v) + " µs | " + status(max(v) <= 10) + " |")
if tp and tpf:
    share = tp["per_second"] / tpf["per_second"]
    t.append(f"| throughput ≥ 50 % of the floor's, 0 incomplete | {100*share:.0f} %, "
             f"{tp['interrupts_incomplete']} incomplete | {status(share >= 0.5 and tp['interrupts_incomplete'] == 0)} |")
for i, r in enumerate(rows):
    if r["name"] == "ihc_control_100k_sessions":
        base = next((x for x in reversed(rows[:i]) if x["name"] == "ihc_control"
                     and x["agents"] == r["agents"] and not x.get("sim")), None)
        if base:
            d = r["p50_us"] / base["p50_us"] - 1
            t.append(f"| 100k sessions: p50 within 10 % of empty | {100*d:+.0f} % | {status(d <= 0.10)} |")
lines += t
open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# Plot: CDF of latencies for N = 8 per path (log x axis).
samples = os.path.join(out, "samples")
series = []
for key, label in [("ihc_http", "ihc HTTP"), ("python_aio", "Python asyncio (HTTP)"),
                   ("ihc_control", "ihc control"), ("floor", "nng floor"),
                   ("redis_pubsub", "Redis pub/sub"), ("redis_poll", "Redis polling")]:
    f = os.path.join(samples, f"{key}_8.txt")
    if os.path.exists(f):
        vals = sorted(float(x) for x in open(f) if x.strip())
        cdf = os.path.join(samples, f"{key}_8.cdf")
        with open(cdf, "w") as o:
            for i, v in enumerate(vals):
                o.write(f"{v/1000:.4f} {(i+1)/len(vals):.5f}\n")
        series.append((cdf, label))
if series:
    plot = ", ".join(f"'{c}' using 1:2 with lines lw 2 title '{l}'" for c, l in series)
    script = (f"set terminal pngcairo size 900,500; set output '{os.path.join(out, 'latency.png')}';"
              "set logscale x; set xlabel 'time to stop all 8 agents and answer (ms, log)';"
              "set ylabel 'fraction of interrupts'; set key bottom right; set grid;"
              f"set title 'Latency distribution, 8 agents'; plot {plot}")
    subprocess.run(["gnuplot", "-e", script], check=False)
