#!/usr/bin/env python3
"""Voluntary context switches per interrupt (or per round), by process and thread, of a
benchmark command: records sched:sched_switch system-wide with perf while the command runs and
counts, per process and thread name, the switches in which the thread went to sleep (a switch
away from a thread still runnable is a preemption, not the program's doing).

    switches.py --label L --rounds K [--agents N] -- COMMAND...

Prints one JSON line: {"name": "switches", "label", "agents", "rounds", "procs": {process:
{thread: switches per round}}}. On this kind of VM a switch is the dominant cost of a message
(the kernel's paravirtual IRQ enable at a switch took half of all samples of the N = 8
profile), so the counts explain the CPU columns. Needs perf and root."""
import argparse, collections, json, os, re, subprocess, sys, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--label", required=True)
ap.add_argument("--rounds", type=int, required=True)
ap.add_argument("--agents", type=int, default=0)
ap.add_argument("cmd", nargs=argparse.REMAINDER)
a = ap.parse_args()
cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
with tempfile.TemporaryDirectory() as d:
    data = os.path.join(d, "sw.data")
    subprocess.run(["perf", "record", "-q", "-e", "sched:sched_switch", "-a", "-o", data, "--"]
                   + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    text = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,trace"],
                          capture_output=True, text=True).stdout
names, counts = {}, collections.Counter()
keep = {"ihc-coordinator", "bench_agent", "bench_ihc", "bench_floor", "exe", "redis-server"}
for line in text.splitlines():
    m = re.match(r"\s*(.*?)\s+(\d+)/(\d+)\s+(.*)$", line)
    if not m or "prev_state=R" in m.group(4):
        continue
    comm, pid, tid = m.group(1), m.group(2), m.group(3)
    if pid == tid:
        names[pid] = comm
    counts[(pid, re.sub(r"\d+$", "", comm))] += 1
procs = collections.defaultdict(collections.Counter)
for (pid, thread), n in counts.items():
    proc = names.get(pid, "?")
    if proc in keep:
        procs[proc][thread] += n
out = {p: {t: round(n / a.rounds, 2) for t, n in sorted(th.items(), key=lambda x: -x[1])}
       for p, th in procs.items()}
print(json.dumps({"name": "switches", "label": a.label, "agents": a.agents, "rounds": a.rounds,
                  "procs": out}))
