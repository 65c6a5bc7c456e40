"""Sync sessions (ihc.session) with a real agent and coordinator: the stop sets `stopped`,
on_stop's outcome appears in the interrupt's modules, a SIGKILLed holder's session is gone
from the agent at once, and the agent's 400s reach the caller as ihc.Error."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import ihc
from conftest import ROOT
from ihc_env import wait_until


def module_result(result, name):
    return [m for m in result.modules if m["name"] == name]


def test_stop_sets_stopped_and_reports_on_stop(cluster):
    c = ihc.Client(cluster.url)
    ran = threading.Event()
    with ihc.session("py-sync-1", module="py_text", url=cluster.local_url) as s:
        assert s.session_id and not s.stopped.is_set()
        s.on_stop(lambda: (time.sleep(0.01), ran.set()))
        cluster.wait_coordinator_sessions("py-sync-1", 1)
        r = c.interrupt("py-sync-1", reason="sync test", timeout_ms=3000)
        assert s.stopped.wait(5)
        with pytest.raises(ihc.Interrupted):
            s.check()
        s.check()  # the with block swallows the session's own Interrupted
    assert ran.is_set()
    assert s.stop["interrupt_id"] == r.interrupt_id and s.stop["reason"] == "sync test"
    assert s.session_id in r.cleaned_sessions, r
    mods = module_result(r, "py_text")
    assert mods and mods[0]["status"] == "ok", r.modules
    assert 10 <= mods[0]["time_ms"] < 3000, mods
    assert r.success, r


def test_on_stop_error_is_reported(cluster):
    c = ihc.Client(cluster.url)

    def broken():
        raise RuntimeError("the model would not cancel")
    with ihc.session("py-sync-2", module="tts", url=cluster.local_url) as s:
        s.on_stop(broken)
        cluster.wait_coordinator_sessions("py-sync-2", 1)
        r = c.interrupt("py-sync-2", timeout_ms=3000)
        assert s.stopped.wait(5)
    mods = module_result(r, "tts")
    assert mods and mods[0]["status"] == "failed", r.modules
    assert "the model would not cancel" in (mods[0].get("error") or ""), mods
    assert not r.success and s.session_id in r.cleaned_sessions


def test_session_ends_done(cluster):
    api = ihc.LocalAPI(cluster.local_url)
    with ihc.session("py-sync-3", url=cluster.local_url) as s:
        assert any(x["session_id"] == s.session_id and x["state"] == "active"
                   for x in api.sessions())
    assert s.report == {"state": "done"}
    assert wait_until(lambda: all(x["session_id"] != s.session_id or x["state"] != "active"
                                  for x in api.sessions()), 2)
    # the interrupt after the end finds nothing of it
    r = ihc.Client(cluster.url).interrupt("py-sync-3")
    assert s.session_id not in r.cleaned_sessions


HOLDER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import ihc
s = ihc.session("py-kill-1", module="holder", url=sys.argv[2]).open()
print(s.session_id, flush=True)
time.sleep(600)
"""


def test_sigkilled_holder_session_gone_at_once(cluster):
    api = ihc.LocalAPI(cluster.local_url)
    p = subprocess.Popen([sys.executable, "-c", HOLDER, os.path.join(ROOT, "python"),
                          cluster.local_url], stdout=subprocess.PIPE, text=True)
    try:
        sid = p.stdout.readline().strip()
        assert sid, "the holder did not open its session"

        def active():
            return any(x["session_id"] == sid and x["state"] == "active"
                       for x in api.sessions())
        assert wait_until(active, 5, 0.01)
        t0 = time.monotonic()
        p.send_signal(signal.SIGKILL)
        p.wait(5)
        gone = wait_until(lambda: not active(), 2, 0.005)
        dt = time.monotonic() - t0
        assert gone, "the killed holder's session is still active after 2 s"
        assert dt <= 0.5, "the session ended %.3f s after SIGKILL" % dt
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def test_agent_bad_input_is_error_400(cluster):
    api = ihc.LocalAPI(cluster.local_url)
    with pytest.raises(ihc.Error) as e:
        ihc.session("bad id with spaces", url=cluster.local_url).open()
    assert e.value.status == 400 and "hardware_id" in e.value.message
    with pytest.raises(ihc.Error) as e:
        api.request("POST", "/v1/sessions", raw_body=b'{"hardware_id": "dev-1"')
    assert e.value.status == 400 and e.value.message
    with pytest.raises(ihc.Error) as e:
        api.request("POST", "/v1/sessions", raw_body=b'{"hardware_id": "dev-1", "bogus": 1}')
    assert e.value.status == 400 and "bogus" in e.value.message
    with pytest.raises(ihc.Error) as e:
        api.end("no-such-session")
    assert e.value.status == 404


def test_local_url_errors(tmp_path, monkeypatch):
    with pytest.raises(ihc.Error, match="no agent serves"):
        ihc.session("dev-1", url="unix://%s/none.sock" % tmp_path).open()
    monkeypatch.setenv("IHC_LOCAL_URL", "off")
    with pytest.raises(ihc.Error, match="disabled"):
        ihc.session("dev-1")
    monkeypatch.setenv("IHC_LOCAL_URL", "")
    with pytest.raises(ihc.Error, match="disabled"):
        ihc.LocalAPI()
    for bad in ("unix://relative", "http://x", "unix:///", "/tmp/x.sock"):
        with pytest.raises(ihc.Error, match="expected unix:///"):
            ihc.session("dev-1", url=bad)
    monkeypatch.setenv("IHC_LOCAL_URL", "unix:///run/ihc/agent.sock")
    assert ihc.LocalAPI().path == "/run/ihc/agent.sock"
    assert ihc.LocalAPI("ipc:///tmp/old.sock").path == "/tmp/old.sock"
    monkeypatch.delenv("IHC_LOCAL_URL")
    assert ihc.LocalAPI().path == "/tmp/ihc-agent.sock"


def test_agent_gone_counts_as_stop(cluster):
    """When the agent's stream ends without a stop (the agent was killed), both kinds of
    session count as stopped: their work can no longer be interrupted."""
    import asyncio
    url = cluster.start_agent("py-a2")
    proc = cluster.agents.pop("py-a2")[0]

    async def main():
        async with ihc.aio.session("py-gone-1", url=url) as a:
            with ihc.session("py-gone-2", url=url) as s:
                proc.p.send_signal(signal.SIGKILL)
                proc.p.wait(5)
                assert s.stopped.wait(5)
                assert s.stop == {}
            assert s.report_error is not None and s.report_error.status is None
            stop = await asyncio.wait_for(a.stopped(), 5)
            assert stop == {}
        return a
    a = asyncio.run(main())
    assert a.is_stopped and a.report_error is not None
    cluster.env.procs.remove(proc)
    proc.stop()


def test_on_stop_names_without_a_module(cluster):
    c = ihc.Client(cluster.url)
    calls = []

    def cancel_model():
        calls.append("cancel_model")
    with ihc.session("py-sync-4", url=cluster.local_url) as s:
        s.on_stop(cancel_model)
        s.on_stop(lambda: calls.append("lambda"))
        s.on_stop(lambda: calls.append("named"), module="py.tts:v2")
        with pytest.raises(ihc.Error, match="module"):
            s.on_stop(print, module="bad name")
        cluster.wait_coordinator_sessions("py-sync-4", 1)
        r = c.interrupt("py-sync-4", timeout_ms=3000)
        assert s.stopped.wait(5)
    assert calls == ["cancel_model", "lambda", "named"]
    names = {m["name"]: m["status"] for m in r.modules}
    assert names.get("cancel_model") == "ok" and names.get("on_stop") == "ok", r.modules
    assert names.get("py.tts:v2") == "ok", r.modules
    assert s.report_error is None


def test_expired_session_counts_as_stop(cluster):
    """A session the agent ends itself (SESSION_TIMEOUT): both kinds count as stopped — by
    the agent's stop event, or its `end` event ({"session_id", "state": "expired"}) — and
    close without raising."""
    import asyncio
    url = cluster.start_agent("py-a3", ["--session-timeout", "1"])

    async def main():
        async with ihc.aio.session("py-exp-1", url=url) as a:
            with ihc.session("py-exp-2", url=url) as s:
                assert s.stopped.wait(10), "not expired after 10 s"
            stop = await asyncio.wait_for(a.stopped(), 10)
        return a, s, stop
    a, s, stop = asyncio.run(main())
    for sess, st in ((s, s.stop), (a, stop)):
        assert ("reason" in st and "interrupt_id" in st) or \
            st == {"session_id": sess.session_id, "state": "expired"}, st
        assert sess.report_error is None or sess.report_error.status is None, sess.report_error
    api = ihc.LocalAPI(url)
    assert not [x for x in api.sessions() if x["state"] == "active"]


def test_session_ended_by_another_client(cluster):
    """Another client DELETEs the session: its `end` event stops both kinds of session, with
    the end's data, and they close without a DELETE of their own."""
    import asyncio
    api = ihc.LocalAPI(cluster.local_url)

    async def main():
        async with ihc.aio.session("py-end-1", url=cluster.local_url) as a:
            with ihc.session("py-end-2", url=cluster.local_url) as s:
                api.end(s.session_id, "done")
                assert s.stopped.wait(5)
            api.end(a.session_id, "failed")
            stop = await asyncio.wait_for(a.stopped(), 5)
        return a, s, stop
    a, s, stop = asyncio.run(main())
    assert s.stop == {"session_id": s.session_id, "state": "done"}, s.stop
    assert stop == {"session_id": a.session_id, "state": "failed"}, stop
    assert s.report is None and a.report is None
    assert s.report_error is None and a.report_error is None
