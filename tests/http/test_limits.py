#!/usr/bin/env python3
"""The HTTP API stays up while slow or idle clients hold connections (a real coordinator with
default limits, two simulated agents, loopback only):

1. 700 slow connections from 127.0.0.1 (half a request, then one byte every 2 s; a closed one
   is opened again a second later): an interrupt over HTTP from 127.0.0.2 (curl --interface)
   succeeds within 1 s, and again 40 s later; the slow connections are refused at once past
   the per-address limit or closed by the request deadline, never held longer.
2. 2,000 connections opened and closed as fast as possible while interrupts are made over HTTP
   every 10 ms (from 127.0.0.2): every interrupt is answered; p50/p99 reported."""

import json
import multiprocessing
import selectors
import socket
import subprocess
import threading
import time

import ihc_env as E

SLOW = 700
TRICKLE_S = 2.0
DEADLINE_S = 5.0  # IHC_HTTP_REQUEST_DEADLINE's default
LATER_S = 40.0
CHURN = 2000
CHURN_PROCS = 2  # one per core here: as fast as the machine opens connections
INTERRUPT_EVERY_S = 0.010


class SlowLoad(threading.Thread):
    """SLOW connection slots, each: connect, send half a request, then a byte every
    TRICKLE_S; when the server closes it, record how long it lived and reconnect 1 s later."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.lifetimes = []  # seconds from connected to closed by the server
        self.open_now = 0
        self.connects = 0

    def run(self):
        sel = selectors.DefaultSelector()
        retry = [0.0] * SLOW  # when each slot may connect again
        socks = [None] * SLOW
        born = [0.0] * SLOW
        next_byte = [0.0] * SLOW
        half = b"POST /v1/interrupt HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        while not self.stop.is_set():
            now = time.monotonic()
            for i in range(SLOW):
                if socks[i] is None and now >= retry[i]:
                    s = socket.socket()
                    s.setblocking(False)
                    s.connect_ex(("127.0.0.1", self.port))
                    socks[i], born[i], next_byte[i] = s, now, now
                    sel.register(s, selectors.EVENT_WRITE, (i, "connecting"))
                    self.connects += 1
            for key, ev in sel.select(timeout=0.05):
                i, state = key.data
                s = socks[i]
                now = time.monotonic()
                if state == "connecting":
                    sel.unregister(s)
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                        self._closed(sel, socks, retry, i, None)
                        continue
                    try:
                        s.send(half)
                    except OSError:
                        self._closed(sel, socks, retry, i, now - born[i], registered=False)
                        continue
                    born[i], next_byte[i] = now, now + TRICKLE_S
                    sel.register(s, selectors.EVENT_READ, (i, "open"))
                    continue
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self._closed(sel, socks, retry, i, now - born[i])
            now = time.monotonic()
            n_open = 0
            for i in range(SLOW):
                s = socks[i]
                if s is None:
                    continue
                k = sel.get_key(s)
                if k.data[1] != "open":
                    continue
                n_open += 1
                if now >= next_byte[i]:
                    next_byte[i] = now + TRICKLE_S
                    try:
                        s.send(b"a")
                    except OSError:
                        self._closed(sel, socks, retry, i, now - born[i])
            with self.lock:
                self.open_now = n_open
        for s in socks:
            if s is not None:
                s.close()

    def _closed(self, sel, socks, retry, i, lifetime, registered=True):
        if registered:
            try:
                sel.unregister(socks[i])
            except (KeyError, ValueError):
                pass
        socks[i].close()
        socks[i] = None
        retry[i] = time.monotonic() + 1.0
        if lifetime is not None:
            with self.lock:
                self.lifetimes.append(lifetime)


def curl_interrupt(env, source):
    """An interrupt with curl from another source address; returns (status, seconds)."""
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                        "--interface", source, "-m", "10", "-X", "POST",
                        "-H", "Content-Type: application/json",
                        "-d", '{"hardware_id":"dev-1","reason":"under slow load"}',
                        "http://127.0.0.1:%d/v1/interrupt" % env.http_port],
                       capture_output=True, text=True)
    code, t = (r.stdout.split() + ["0", "99"])[:2]
    return int(code), float(t)


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def slow_clients(env, results):
    load = SlowLoad(env.http_port)
    t0 = time.monotonic()
    load.start()

    def attacking():
        with load.lock:
            refused = sum(1 for x in load.lifetimes if x < 1.0)
            return load.open_now >= 32 and refused >= SLOW - 200
    E.check(E.wait_until(attacking, 20), "the slow load did not take hold (open %d, closed %d)"
            % (load.open_now, len(load.lifetimes)))
    code1, t1 = curl_interrupt(env, "127.0.0.2")
    E.log("interrupt from 127.0.0.2 under %d slow connections: HTTP %d in %.3f s "
          "(slow connections open now: %d)" % (SLOW, code1, t1, load.open_now))
    time.sleep(LATER_S)
    code2, t2 = curl_interrupt(env, "127.0.0.2")
    E.log("again %.0f s later: HTTP %d in %.3f s" % (LATER_S, code2, t2))
    load.stop.set()
    load.join()
    elapsed = time.monotonic() - t0
    # from the other address: 127.0.0.1's slots may still be taken while the server sees
    # the slow sockets close
    m = env.metrics(source="127.0.0.2")
    with load.lock:
        life = list(load.lifetimes)
    refused = [x for x in life if x < 1.0]
    by_deadline = [x for x in life if x >= 1.0]
    longest = max(life) if life else 0
    E.log("slow load over %.0f s: %d connects, %d refused at once, %d closed by the deadline "
          "(lived %.2f-%.2f s), longest %.2f s; server: deadline_closed=%d per_ip_refused=%d" %
          (elapsed, load.connects, len(refused), len(by_deadline),
           min(by_deadline) if by_deadline else 0, max(by_deadline) if by_deadline else 0,
           longest, metric(m, "ihc_http_request_deadline_closed_total"),
           metric(m, 'ihc_http_refused_total{limit="max_conns_per_ip"}')))
    E.check(code1 == 200 and t1 < 1.0, "interrupt under load: HTTP %d in %.3f s" % (code1, t1))
    E.check(code2 == 200 and t2 < 1.0, "interrupt 40 s later: HTTP %d in %.3f s" % (code2, t2))
    E.check(len(by_deadline) >= 64, "only %d slow connections were closed by the deadline" %
            len(by_deadline))
    # trickling a byte every 2 s does not extend the deadline (sweep period and load allowed)
    E.check(all(DEADLINE_S - 1.0 <= x <= DEADLINE_S + 1.5 for x in by_deadline),
            "a slow connection lived %.2f s (deadline %.1f s)" %
            (max(by_deadline), DEADLINE_S))
    E.check(metric(m, "ihc_http_request_deadline_closed_total") >= len(by_deadline),
            "deadline closures not counted in /metrics")
    E.check(metric(m, 'ihc_http_refused_total{limit="max_conns_per_ip"}') > 0,
            "per-address refusals not counted in /metrics")
    with open(env.coord_log, errors="replace") as f:
        lines = sum(1 for l in f if "no whole request within" in l)
    E.check(lines <= elapsed + 2, "%d deadline log lines in %.0f s (at most one a second)" %
            (lines, elapsed))
    results["slow"] = {"connections": SLOW, "interrupt_s": t1, "interrupt_later_s": t2,
                       "refused_at_once": len(refused), "closed_by_deadline": len(by_deadline),
                       "lifetime_max_s": max(by_deadline), "log_lines": lines,
                       "seconds": elapsed}


def opener(port, n, done):
    for j in range(n):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            if j % 2:  # half of them say a few bytes first
                s.send(b"GET /v1/st")
        except OSError:
            pass
        s.close()
        with done.get_lock():
            done.value += 1


def churn(env, results):
    stop = threading.Event()
    lat, statuses, when = [], [], []  # per interrupt: ms, (status, success), finished at

    def interrupts():
        nxt = time.monotonic()
        while not stop.is_set():
            nxt += INTERRUPT_EVERY_S
            t0 = time.perf_counter()
            try:
                c = env.conn(source="127.0.0.2", timeout=10)
                c.request("POST", "/v1/interrupt", body=b'{"hardware_id":"*"}',
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                body = r.read()
                c.close()
                statuses.append((r.status, json.loads(body).get("success")))
            except OSError as e:
                statuses.append((-1, str(e)))
            lat.append((time.perf_counter() - t0) * 1000)
            when.append(time.monotonic())
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
            else:
                nxt = time.monotonic()

    it = threading.Thread(target=interrupts, daemon=True)
    it.start()
    time.sleep(1.0)  # interrupts alone first: the baseline
    t0 = time.monotonic()
    # processes, not threads: the interrupts' latency must not include waits for Python's GIL
    done = multiprocessing.Value("i", 0)
    ps = [multiprocessing.Process(target=opener, args=(env.http_port, CHURN // CHURN_PROCS,
                                                       done)) for _ in range(CHURN_PROCS)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    churn_s = time.monotonic() - t0
    done = [done.value]
    time.sleep(0.3)
    stop.set()
    it.join()
    bad = [s for s in statuses if s[0] != 200]
    t1 = t0 + churn_s
    inside = [x for x, w in zip(lat, when) if t0 <= w <= t1 + x / 1000]
    outside = [x for x, w in zip(lat, when) if w < t0]
    p50, p99 = E.percentile(inside, 0.5), E.percentile(inside, 0.99)
    b50, b99 = E.percentile(outside, 0.5), E.percentile(outside, 0.99)
    E.log("churn: %d connections opened and closed in %.2f s (%.0f/s) by %d processes; "
          "interrupts every 10 ms from 127.0.0.2, %d in all: %d answered 200 (%d success); "
          "during the churn (%d): p50 %.3f ms, p99 %.3f ms, max %.3f ms; before it (%d): "
          "p50 %.3f ms, p99 %.3f ms" %
          (sum(done), churn_s, sum(done) / churn_s, CHURN_PROCS, len(statuses),
           len(statuses) - len(bad), sum(1 for s in statuses if s[1] is True), len(inside), p50,
           p99, max(inside), len(outside), b50, b99))
    E.check(sum(done) == CHURN, "churn made %d connections" % sum(done))
    E.check(not bad, "interrupts not answered: %s" % bad[:5])
    results["churn"] = {"connections": CHURN, "seconds": churn_s, "interrupts": len(statuses),
                        "interrupts_during_churn": len(inside),
                        "answered": len(statuses) - len(bad), "p50_ms": p50, "p99_ms": p99,
                        "max_ms": max(inside), "baseline_p50_ms": b50, "baseline_p99_ms": b99}


def main():
    E.raise_nofile(8192)
    env = E.Env("limits")
    env.start_redis()
    env.start_coordinator()
    env.start_agent("a1", "dev-1,dev-2")
    env.start_agent("a2", "dev-2")
    env.wait_agents(["a1", "a2"])
    results = {}
    slow_clients(env, results)
    env.wait_agents(["a1", "a2"])
    churn(env, results)
    E.save_result("limits.json", results)
    env.stop_coordinator()
    env.close()
    E.log("ok")


if __name__ == "__main__":
    main()
