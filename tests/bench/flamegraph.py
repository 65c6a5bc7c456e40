#!/usr/bin/env python3
"""A flame graph from `perf script` output, as one SVG, with nothing to download.

    perf script -F +pid --show-task-events -i perf.data | python3 flamegraph.py --title T --out graph.svg [--folded F]
                                                     [--summary]

Each sample's stack (outermost frame first) is folded under its process name, so a run
recorded across several processes (coordinator, agents) shows each as a tower of its own.
Widths are sample counts; frames nng or libc left without a symbol are named by their
library ("[libnng.so.1.5.2]"). --folded also writes the folded stacks (one line per stack:
frames separated by ';', then the count), the format other flame graph tools read; kernel
frames end in "_[k]". --summary prints one JSON line: the share of samples per process, where the
sampled instruction was (kernel, nng, libc, ihc's own code, other), and by thread (nng's
threads; the kernel, nng's code, or the program's code and libc on the program's threads)."""
import argparse, collections, html, re, sys, zlib

def where(lib):
    """The class of the code a frame is in, from its library's path."""
    if "kernel" in lib or lib.startswith("[k"):
        return "kernel"
    if "libnng" in lib:
        return "nng"
    if "libc.so" in lib or "ld-linux" in lib:
        return "libc"
    if "ihc" in lib or "bench_" in lib:
        return "ihc"
    return "other"

def parse(lines, leaf=None):
    """Yields (root, [frames outermost first]) per sample of `perf script -F +pid
    --show-task-events` text: root is the process (its main thread's name) and the thread's
    name ("nng:task", ...) is the first frame when it differs. Counts the class of each
    sample's innermost frame into leaf (a Counter) when given."""
    procs = {}
    head, frames, first_lib = None, [], None

    def done():
        if head is None:
            return None
        comm, pid = head
        proc = procs.get(pid, comm)
        thread = re.sub(r"[:\d]+$", "", comm) or comm
        if leaf is not None and first_lib is not None:
            leaf[where(first_lib)] += 1
        return proc, ([thread] if thread != proc else []) + list(reversed(frames))

    for line in lines:
        line = line.rstrip("\n")
        m = re.search(r"PERF_RECORD_COMM(?: exec)?: (.*):(\d+)/(\d+)$", line)
        if m:
            if m.group(2) == m.group(3):
                procs[m.group(2)] = m.group(1)
            continue
        if not line.strip():
            r = done()
            if r:
                yield r
            head, frames, first_lib = None, [], None
            continue
        if not line[0].isspace():  # header: "comm  pid/tid  time: period event:"
            m = re.match(r"(.*?)\s+(\d+)/(\d+)\s", line)
            head = (m.group(1), m.group(2)) if m else (line.split()[0], "?")
            frames, first_lib = [], None
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        sym = parts[1]
        m = re.match(r"(.*?) \((.*)\)$", sym)
        name, lib = (m.group(1), m.group(2)) if m else (sym, "")
        if first_lib is None:
            first_lib = lib
        name = re.sub(r"\+0x[0-9a-f]+$", "", name)
        if name in ("[unknown]", "") or name.startswith("0x"):
            name = "[" + lib.rsplit("/", 1)[-1] + "]" if lib else "[unknown]"
        elif where(lib) == "kernel":
            name += "_[k]"
        if frames and frames[-1] == name and name.startswith("["):
            continue  # runs of unnamed frames of one library as one
        frames.append(name)
    r = done()
    if r:
        yield r

def fold(samples):
    counts = collections.Counter()
    for comm, frames in samples:
        counts[";".join([comm] + frames)] += 1
    return counts

def color(name):
    h = zlib.crc32(name.encode()) & 0xFFFF
    if name.startswith("["):  # libraries without symbols, kernel
        return f"rgb({200 + h % 40},{120 + h % 60},{60 + h % 40})"
    if name.startswith("ihc") or name.startswith("on_") or "_" in name and not name.startswith("__"):
        return f"rgb({230 + h % 25},{90 + h % 90},{40 + h % 40})"
    return f"rgb({220 + h % 35},{160 + h % 70},{50 + h % 50})"

def svg(counts, title, width=1600, row=16):
    root = {"n": 0, "kids": collections.OrderedDict()}
    for stack, n in sorted(counts.items()):
        node = root
        node["n"] += n
        for f in stack.split(";"):
            node = node["kids"].setdefault(f, {"n": 0, "kids": collections.OrderedDict()})
            node["n"] += n
    total = root["n"] or 1
    depth = [0]
    rects = []

    def walk(node, name, x, level):
        w = node["n"] / total * (width - 20)
        if w >= 0.3:
            rects.append((x, level, w, name, node["n"]))
        depth[0] = max(depth[0], level)
        cx = x
        for k, kid in sorted(node["kids"].items(), key=lambda kv: -kv[1]["n"]):
            walk(kid, k, cx, level + 1)
            cx += kid["n"] / total * (width - 20)

    cx = 10.0
    for k, kid in sorted(root["kids"].items(), key=lambda kv: -kv[1]["n"]):
        walk(kid, k, cx, 0)
        cx += kid["n"] / total * (width - 20)
    height = (depth[0] + 1) * row + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           f'<rect width="100%" height="100%" fill="#fafafa"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15">'
           f'{html.escape(title)}</text>',
           f'<text x="10" y="{height - 8}" font-size="11">{total} samples; width = share of '
           f'CPU samples; hover a frame for its name and share</text>']
    for x, level, w, name, n in rects:
        y = height - 30 - (level + 1) * row
        pct = 100.0 * n / total
        label = name if len(name) * 6.6 < w else (name[: int(w / 6.6) - 2] + ".." if w > 26 else "")
        out.append(f'<g><title>{html.escape(name)} ({n} samples, {pct:.2f}%)</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{max(w - 0.5, 0.3):.1f}" height="{row - 1}" '
                   f'fill="{color(name)}" rx="1"/>'
                   + (f'<text x="{x + 2:.1f}" y="{y + row - 4}">{html.escape(label)}</text>'
                      if label else "") + "</g>")
    out.append("</svg>")
    return "\n".join(out)

def thread_class(stack):
    """Where a folded sample's time went, by thread first: in one of nng's own threads
    ("nng:task", "nng:poll", ...), else by its innermost frame on the program's threads: the
    kernel, nng's code (called inline, e.g. a send that writes the socket), or the program's
    own code with libc — the part the program's design can still change."""
    frames = stack.split(";")
    if len(frames) > 1 and frames[1].startswith("nng"):
        return "nng threads"
    leaf = frames[-1]
    if leaf.endswith("_[k]"):
        return "kernel on the program's threads"
    if "libnng" in leaf or leaf.startswith(("nni_", "nng_", "nng:")):
        return "nng code on the program's threads"
    return "program code and libc"

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--title", default="flame graph")
    ap.add_argument("--out", required=True)
    ap.add_argument("--folded")
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args()
    leaf = collections.Counter()
    counts = fold(parse(sys.stdin, leaf))
    if a.summary:
        import json
        total = sum(counts.values()) or 1
        procs = collections.Counter()
        for stack, n in counts.items():
            procs[stack.split(";", 1)[0]] += n
        threads = collections.Counter()
        for stack, n in counts.items():
            threads[thread_class(stack)] += n
        print(json.dumps({"name": "profile_n8", "samples": total,
                          "process_pct": {k: round(100 * v / total, 1) for k, v in procs.most_common()},
                          "code_pct": {k: round(100 * v / total, 1) for k, v in leaf.most_common()},
                          "thread_pct": {k: round(100 * v / total, 1) for k, v in threads.most_common()}}))
    if a.folded:
        with open(a.folded, "w") as f:
            for stack, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                f.write(f"{stack} {n}\n")
    with open(a.out, "w") as f:
        f.write(svg(counts, a.title))

if __name__ == "__main__":
    main()
