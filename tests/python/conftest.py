"""pytest fixtures for the Python package's tests (tests/python): real redis-server,
ihc-coordinator and ihc-agent processes on free ports, started with tests/http/ihc_env.py,
and the package from python/ (PYTHONPATH). Binaries from IHC_BIN_DIR (ctest sets it) or
build/bin."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "http"))

import ihc  # noqa: E402
import ihc_env  # noqa: E402
from ihc_env import Proc, wait_until  # noqa: E402


class Cluster:
    """One redis-server, one coordinator and agents with their local API on a Unix socket."""

    def __init__(self, tag, coord_env=None):
        self.env = ihc_env.Env(tag)
        self.env.start_redis()
        self.env.start_coordinator(env=coord_env)
        self.url = "http://127.0.0.1:%d" % self.env.http_port
        self.agents = {}

    def start_agent(self, agent_id, extra=()):
        """An ihc-agent serving unix://<dir>/<id>.sock; returns that URL once it answers
        and the coordinator lists it as connected."""
        sock = os.path.join(self.env.dir, "%s.sock" % agent_id)
        url = "unix://" + sock
        p = Proc("agent " + agent_id,
                 [ihc_env.bin_path("ihc-agent"), "--id", agent_id, "--pub", self.env.pub,
                  "--report", self.env.report, "--local", url, "--heartbeat", "0.5",
                  "--log-level", "warn"] + list(extra),
                 os.path.join(self.env.dir, "agent-%s.log" % agent_id))
        self.env.procs.append(p)
        api = ihc.LocalAPI(url, timeout=2)

        def up():
            try:
                return api.health()
            except ihc.Error:
                return None
        if not wait_until(up, 15, 0.05):
            ihc_env.tail(p.log)
            pytest.fail("agent %s did not serve %s" % (agent_id, url))
        c = ihc.Client(self.url)
        if not wait_until(lambda: any(a["agent_id"] == agent_id and a["connected"]
                                      for a in c.agents()), 15, 0.05):
            ihc_env.tail(p.log)
            pytest.fail("agent %s did not connect to the coordinator" % agent_id)
        self.agents[agent_id] = (p, url)
        return url

    def wait_coordinator_sessions(self, hw, n, timeout=10):
        """Waits until the coordinator knows n sessions of hw (interrupts reach the agents it
        knows hold one)."""
        c = ihc.Client(self.url)
        if not wait_until(lambda: len(c.sessions(hw)) >= n, timeout, 0.01):
            self.dump_logs()
            pytest.fail("the coordinator did not learn %d sessions of %s in %g s (it has %s; "
                        "agents: %s)" % (n, hw, timeout, c.sessions(hw), c.agents()))

    def stop_coordinator(self):
        """SIGTERM; it must exit 0 without a sanitizer report (ihc_env checks). One that is
        still running after 8 s has its threads' stacks printed (gdb) before it is killed."""
        p = self.env.coord.p
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(8)
        except subprocess.TimeoutExpired:
            print("coordinator still running 8 s after SIGTERM; its threads:")
            if shutil.which("gdb"):
                bt = subprocess.run(["gdb", "-p", str(p.pid), "-batch", "-ex",
                                     "thread apply all bt"], capture_output=True, text=True,
                                    timeout=120)
                print(bt.stdout[-30000:])
        self.env.stop_coordinator()

    def dump_logs(self):
        ihc_env.tail(self.env.coord_log, 40)
        for p, _ in self.agents.values():
            ihc_env.tail(p.log, 20)

    def close(self):
        """Stops the agents, then the coordinator — each on SIGTERM must exit 0 without a
        sanitizer report —, then everything else. (Agents first, as clients go before their
        server: a coordinator stopped under connected agents can hang in nng_close, nng 1.5.2.)"""
        bad = []
        for agent_id, (p, _) in self.agents.items():
            rc = p.stop()
            self.env.procs.remove(p)
            rep = ihc_env.sanitizer_report(p.log)
            if rc != 0 or rep:
                ihc_env.tail(p.log, 60)
                bad.append("agent %s exit status %s%s" % (agent_id, rc,
                                                          ", sanitizer: " + rep if rep else ""))
        self.agents = {}
        try:
            if self.env.coord is not None:
                self.stop_coordinator()
        except SystemExit:
            bad.append("the coordinator did not stop cleanly (see above)")
        self.env.close()
        if bad:
            pytest.fail("; ".join(bad))


@pytest.fixture(scope="module")
def coordinator():
    """A coordinator (and its redis-server), no agent."""
    c = Cluster("pyc")
    yield c
    c.close()


@pytest.fixture(scope="module")
def cluster():
    """A coordinator and one agent (local API at cluster.local_url)."""
    c = Cluster("py")
    c.local_url = c.start_agent("py-a1")
    yield c
    c.close()


@pytest.fixture
def client(coordinator):
    return ihc.Client(coordinator.url)
