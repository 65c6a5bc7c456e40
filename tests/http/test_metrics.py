#!/usr/bin/env python3
"""/metrics of a real coordinator with two simulated agents, after interrupts, parsed by a real
Prometheus text parser (Debian's python3-prometheus-client): histograms in seconds with the
documented buckets and non-empty counts, per-module histograms, counters and gauges, the HTTP
server's own series, and nothing left in milliseconds."""

import math

import ihc_env as E

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    E.log("SKIP: python3-prometheus-client is not installed (apt-get install "
          "python3-prometheus-client)")
    raise SystemExit(E.SKIP)

BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
MODULES = {"text_processing", "audio_generation", "session_management"}
N = 20


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam, name, **labels):
    return [s for s in fam.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def check_histogram(fam, name, min_count, **labels):
    E.check(fam.type == "histogram", "%s is a %s, not a histogram" % (name, fam.type))
    buckets = samples(fam, name + "_bucket", **labels)
    les = [float(s.labels["le"]) for s in buckets]
    E.check(les == BUCKETS + [math.inf], "%s%s buckets are %s" % (name, labels, les))
    counts = [s.value for s in buckets]
    E.check(counts == sorted(counts), "%s buckets not cumulative: %s" % (name, counts))
    count = samples(fam, name + "_count", **labels)[0].value
    total = samples(fam, name + "_sum", **labels)[0].value
    E.check(counts[-1] == count >= min_count, "%s%s count %s (+Inf %s), want >= %d" %
            (name, labels, count, counts[-1], min_count))
    E.check(counts[-2] > 0, "%s%s: every observation is above 5 s" % (name, labels))
    E.check(0 < total / count < 5, "%s%s mean %.6f s is not in seconds" %
            (name, labels, total / count))
    return counts, count, total


def main():
    env = E.Env("metrics")
    env.start_redis()
    env.start_coordinator()
    env.start_agent("a1", "dev-1,dev-2")
    env.start_agent("a2", "dev-2")
    env.wait_agents(["a1", "a2"])
    for _ in range(N):
        st, res = env.interrupt("*")
        E.check(st == 200 and res["success"], "interrupt failed: %s" % res)
    text = env.metrics()
    fams = families(text)

    counts, count, total = check_histogram(fams["ihc_interrupt_duration_seconds"],
                                           "ihc_interrupt_duration_seconds", N)
    E.log("ihc_interrupt_duration_seconds: count %d, mean %.3f ms, buckets %s" %
          (count, total / count * 1e3, counts))
    mod = fams["ihc_module_duration_seconds"]
    names = {s.labels["module"] for s in mod.samples}
    E.check(names == MODULES, "module labels %s, want %s" % (names, MODULES))
    for m in sorted(MODULES):  # every agent reports every module once per interrupt
        c, n, _ = check_histogram(mod, "ihc_module_duration_seconds", 2 * N, module=m)
        E.log("ihc_module_duration_seconds{module=%s}: count %d" % (m, n))

    it = fams["ihc_interrupts"]  # the parser drops _total from a counter's family name
    E.check(it.type == "counter", "ihc_interrupts_total is not a counter")
    ok = samples(it, "ihc_interrupts_total", result="success")[0].value
    E.check(ok >= N, "ihc_interrupts_total{result=success} = %s" % ok)
    info = samples(fams["ihc_build_info"], "ihc_build_info")
    E.check(len(info) == 1 and info[0].labels.get("version") and info[0].value == 1,
            "ihc_build_info: %s" % info)
    gauges = {"ihc_agents": 2, "ihc_active_sessions": None, "ihc_inflight_interrupts": 0,
              "ihc_persist_backlog": None, "ihc_redis_up": 1, "ihc_uptime_seconds": None,
              "ihc_http_connections": None, "ihc_events_held": None}
    for name, want in gauges.items():
        E.check(name in fams and fams[name].type == "gauge", "%s missing or not a gauge" % name)
        if want is not None:
            v = fams[name].samples[0].value
            E.check(v == want, "%s = %s, want %s" % (name, v, want))
    for name in ("ihc_rejected_messages", "ihc_persist_dropped", "ihc_http_refused",
                 "ihc_http_request_deadline_closed", "ihc_events",
                 "ihc_event_streams_overflowed"):
        E.check(name in fams and fams[name].type == "counter", "%s_total missing" % name)
    E.check(samples(fams["ihc_events"], "ihc_events_total")[0].value >= 2 * N,
            "ihc_events_total below two events per interrupt")
    for line in text.splitlines():
        E.check("_ms" not in line.split("{")[0].split(" ")[0],
                "a metric still in milliseconds: %s" % line)
    env.stop_coordinator()
    env.close()
    E.log("ok")


if __name__ == "__main__":
    main()
