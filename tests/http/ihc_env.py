"""Test environment for the HTTP tests (tests/http): a real redis-server, ihc-coordinator and
ihc-agent processes on free loopback ports, HTTP helpers, and waiting with deadlines.
Standard library only. Children die with the test (PR_SET_PDEATHSIG) and are stopped at exit;
a coordinator must exit 0 on SIGTERM with no sanitizer report in its log."""

import atexit
import ctypes
import fcntl
import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77  # ctest's SKIP_RETURN_CODE for these tests

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def log(*args):
    print(*args, flush=True)


def fail(msg):
    log("FAIL:", msg)
    raise SystemExit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def wait_until(fn, timeout, step=0.02):
    """Polls fn() until it returns a true value (returned) or timeout seconds pass (None)."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= end:
            return None
        time.sleep(step)


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (min(n, hard) if hard != resource.RLIM_INFINITY else n, hard))


# Ports below the kernel's ephemeral range, reserved across test processes with the same
# flock files as the C harness (tests/support/harness.c), so parallel tests never collide.
_port_locks = []


def free_port():
    lo_eph = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo_eph = int(f.read().split()[0])
    except OSError:
        pass
    lo, hi = (10000 if lo_eph > 12000 else 1025), lo_eph - 1
    d = "/tmp/ihc-test-ports"
    try:
        os.mkdir(d, 0o1777)
        os.chmod(d, 0o1777)
    except FileExistsError:
        pass
    for _ in range(1000):
        port = random.randint(lo, hi)
        fd = os.open(os.path.join(d, str(port)), os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            os.close(fd)
            continue
        finally:
            s.close()
        _port_locks.append(fd)
        return port
    fail("no free port")


def bin_path(name):
    d = os.environ.get("IHC_BIN_DIR")
    if not d:
        d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "bin")
    return os.path.join(d, name)


def artifacts_dir():
    d = os.environ.get("IHC_TEST_ARTIFACTS") or os.path.join(tempfile.gettempdir(),
                                                             "ihc-test-artifacts")
    os.makedirs(d, exist_ok=True)
    return d


def sanitizer_report(path):
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if "Sanitizer" in line or "runtime error:" in line:
                    return line.strip()
    except OSError:
        pass
    return None


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
        sys.stdout.write("---- last lines of %s ----\n%s" % (path, "".join(lines[-n:])))
    except OSError:
        pass


class Proc:
    def __init__(self, name, argv, logpath, env=None):
        self.name, self.log = name, logpath
        e = dict(os.environ)
        e.update(env or {})
        self.out = open(logpath, "ab")
        self.p = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT, env=e,
                                  preexec_fn=_die_with_parent)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                dump_stacks(self.p.pid, "%s did not exit %d s after signal %d" % (self.name, timeout, sig))
                self.p.kill()
                self.p.wait()
        self.out.close()
        return self.p.returncode


def dump_stacks(pid, why):
    """Prints every thread's stack of a hung process (with gdb, when installed), so that a
    process that does not stop says where it is stuck before it is killed."""
    log(why + ": its threads' stacks follow" if shutil.which("gdb") else why)
    if shutil.which("gdb"):
        r = subprocess.run(["gdb", "-batch", "-p", str(pid), "-ex", "thread apply all bt"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        sys.stdout.write(r.stdout)
        sys.stdout.flush()


class Env:
    """One redis-server, one coordinator, agents. Everything stops at exit."""

    def __init__(self, tag):
        self.dir = tempfile.mkdtemp(prefix="ihc-%s-" % tag)
        self.procs = []
        self.coord = None
        self.redis = None
        atexit.register(self.close)

    def start_redis(self):
        port = free_port()
        self.redis_port = port
        self.redis = Proc("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--dir", self.dir],
                          os.path.join(self.dir, "redis.log"))
        self.procs.append(self.redis)
        ok = wait_until(lambda: _redis_ping(port), 10)
        check(ok, "redis-server did not answer on port %d" % port)

    def start_coordinator(self, args=(), env=None):
        self.http_port = free_port()
        self.pub = "tcp://127.0.0.1:%d" % free_port()
        self.report = "tcp://127.0.0.1:%d" % free_port()
        self.control = "tcp://127.0.0.1:%d" % free_port()
        self.coord_log = os.path.join(self.dir, "coordinator.log")
        argv = [bin_path("ihc-coordinator"), "--pub", self.pub, "--report", self.report,
                "--control", self.control, "--http", "127.0.0.1:%d" % self.http_port,
                "--redis", "redis://127.0.0.1:%d/0" % self.redis_port,
                "--heartbeat", "0.5", "--agent-ttl", "3"] + list(args)
        self.coord = Proc("coordinator", argv, self.coord_log, env)
        self.procs.append(self.coord)
        ok = wait_until(lambda: self.try_get("/healthz") == 200, 15, 0.05)
        if not ok:
            tail(self.coord_log)
            fail("the coordinator did not answer on HTTP port %d" % self.http_port)

    def start_agent(self, agent_id, hws):
        sock = os.path.join(self.dir, "%s.sock" % agent_id)
        a = Proc("agent " + agent_id,
                 [bin_path("ihc-agent"), "--id", agent_id, "--pub", self.pub, "--report",
                  self.report, "--local", "unix://" + sock, "--simulate", hws, "--heartbeat",
                  "0.5", "--log-level", "warn"],
                 os.path.join(self.dir, "agent-%s.log" % agent_id))
        self.procs.append(a)
        return a

    def wait_agents(self, ids, timeout=15):
        def ready():
            st, doc = self.get_json("/v1/agents")
            if st != 200:
                return False
            have = {a["agent_id"]: a for a in doc["agents"]}
            return all(i in have and have[i]["connected"] and have[i]["sessions"] > 0
                       for i in ids)
        if not wait_until(ready, timeout, 0.05):
            tail(self.coord_log)
            fail("agents %s did not connect with their sessions" % ids)

    # ---- HTTP ----

    def conn(self, source=None, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout,
                                          source_address=(source, 0) if source else None)

    def request(self, method, path, body=None, headers=None, source=None, timeout=10):
        c = self.conn(source, timeout)
        try:
            h = dict(headers or {})
            data = None
            if body is not None:
                data = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else body
                h.setdefault("Content-Type", "application/json")
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            c.close()

    def get_json(self, path):
        try:
            st, body, _ = self.request("GET", path)
            return st, json.loads(body) if body else None
        except (OSError, ValueError):
            return -1, None

    def try_get(self, path):
        try:
            return self.request("GET", path, timeout=2)[0]
        except OSError:
            return -1

    def interrupt(self, hw, timeout_ms=None, source=None, reason=None):
        body = {"hardware_id": hw}
        if timeout_ms:
            body["timeout_ms"] = timeout_ms
        if reason:
            body["reason"] = reason
        st, data, _ = self.request("POST", "/v1/interrupt", body, source=source, timeout=15)
        return st, json.loads(data)

    def metrics(self, source=None):
        st, body, _ = self.request("GET", "/metrics", source=source)
        check(st == 200, "/metrics answered %d" % st)
        return body.decode()

    # ---- teardown ----

    def stop_coordinator(self):
        """SIGTERM; fails the test unless it exits 0 without a sanitizer report."""
        if not self.coord:
            return
        rc = self.coord.stop()
        rep = sanitizer_report(self.coord_log)
        c, self.coord = self.coord, None
        self.procs.remove(c)
        if rc != 0 or rep:
            tail(self.coord_log, 60)
            fail("coordinator exit status %s%s" % (rc, ", sanitizer: " + rep if rep else ""))

    def close(self):
        """Stops whatever still runs (a test checks the coordinator with stop_coordinator)."""
        for p in reversed(self.procs):
            p.stop(timeout=5)
        self.procs = []
        self.coord = None
        if True:
            if os.environ.get("IHC_KEEP_LOGS"):
                log("logs kept in", self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)


def _redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def save_result(name, doc):
    path = os.path.join(artifacts_dir(), name)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    log("results in", path)
