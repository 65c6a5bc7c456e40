#!/usr/bin/env python3
"""Turns tests/bench/run.sh's results.json (one JSON object per line) into the README's
Markdown table (table.md) and a latency plot (latency.png, gnuplot)."""
import json, os, subprocess, sys, platform, datetime

res_path, out = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(res_path) if l.strip().startswith("{")]
lat = {(r["name"], r["agents"]): r for r in rows if "p50_us" in r}

def ms(us):
    return f"{us/1000:.3f}" if us < 10000 else f"{us/1000:.1f}"

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
hop = next((r for r in rows if r["name"] == "nng_reqrep"), None)
lines.append("| path | N agents | p50 ms | p99 ms | max ms | p50 ÷ nng floor p50 | p50 ÷ (floor + request hop) | p50 ÷ ihc control p50 (>1: ihc faster) |")
lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
names = [("ihc_http", "ihc end to end, HTTP"), ("ihc_control", "ihc end to end, control socket"),
         ("ihc_control_tls", "ihc end to end, control socket, every socket over TLS"),
         ("nng_floor", "bare nng PUB→SUB→PUSH→PULL (floor)"),
         ("redis_pubsub", "Redis PUBLISH → subscribers → list acks"),
         ("redis_poll", "Redis flag polled every 100 ms (original design)")]
for n in sorted({a for (_, a) in lat}):
    floor = lat.get(("nng_floor", n))
    ihc = lat.get(("ihc_control", n))
    for key, label in names:
        r = lat.get((key, n))
        if not r:
            continue
        vs_floor = f"{r['p50_us']/floor['p50_us']:.2f}×" if floor else ""
        faster = f"{r['p50_us']/ihc['p50_us']:.1f}×" if ihc and key.startswith("redis") else ""
        vs_hop = (f"{r['p50_us']/(floor['p50_us']+hop['p50_us']):.2f}×"
                  if floor and hop and key.startswith("ihc") else "")
        lines.append(f"| {label} | {n} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | {ms(r['max_us'])} | {vs_floor} | {vs_hop} | {faster} |")
if hop:
    lines.append(f"\nRequest hop alone (bare nng REQ → REP echo between two processes): p50 {ms(hop['p50_us'])} ms, p99 {ms(hop['p99_us'])} ms. "
                 "Every answered interrupt pays it on top of the fan-out floor.")
for r in rows:
    if r["name"] == "ihc_control_100k_sessions":
        base = lat.get(("ihc_control", r["agents"]))
        rel = f" ({(r['p50_us']/base['p50_us']-1)*100:+.0f}% vs empty)" if base else ""
        lines.append(f"\nWith 100k sessions in Redis ({r['agents']} agents): p50 {ms(r['p50_us'])} ms, p99 {ms(r['p99_us'])} ms{rel}.")
    if r["name"] == "ihc_throughput":
        lines.append(f"\nThroughput: {r['per_second']:.0f} interrupts/s sustained with {r['agents']} agents and {r['clients']} concurrent requesters over {r['seconds']} s ({r['interrupts_incomplete']} incomplete); coordinator RSS {r['coordinator_rss_kb']/1024:.1f} MB.")
    if r["name"] == "nng_floor_throughput":
        lines.append(f"\nThroughput floor: a bare nng PUB → {r['agents']} SUB → PUSH → PULL program with {r['window']} broadcasts in flight carries {r['per_second']:.0f} acks/s ({r['lost']} lost).")
    if r["name"] == "token_check":
        lines.append(f"\nToken check: {r['check_ns']:.2f} ns per check (loop {r['loop_ns']:.2f} ns vs {r['baseline_ns']:.2f} ns without the check; one relaxed atomic load, no syscall).")
    if r["name"] == "agent_idle":
        lines.append(f"\nAgent idle: RSS {r['rss_kb']/1024:.1f} MB, CPU {r['cpu_percent']}%.")
open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# Plot: CDF of latencies for N = 8 per path (log x axis).
samples = os.path.join(out, "samples")
series = []
for key, label in [("ihc_http", "ihc HTTP"), ("ihc_control", "ihc control"), ("floor", "nng floor"),
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
