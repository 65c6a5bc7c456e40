"""asyncio sessions (ihc.aio.session) with a real agent and coordinator: a generator yielding
every millisecond is stopped by an HTTP interrupt, run() cancels its task, the module's
result reaches the interrupt's result."""

import asyncio
import time

import pytest

import ihc
from ihc_env import wait_until


async def tokens(period=0.001):
    i = 0
    while True:
        await asyncio.sleep(period)
        i += 1
        yield "tok%d" % i


def test_generator_every_ms_stopped_by_http_interrupt(cluster):
    c = ihc.Client(cluster.url)

    async def main():
        async with ihc.aio.session("py-aio-1", module="llm_stream",
                                   url=cluster.local_url) as s:
            n = 0
            loop = asyncio.get_running_loop()

            async def interrupt():
                while n < 20:  # the stream is running
                    await asyncio.sleep(0.005)
                await loop.run_in_executor(None, cluster.wait_coordinator_sessions,
                                           "py-aio-1", 1)
                return await loop.run_in_executor(None, lambda: c.interrupt(
                    "py-aio-1", reason="user stop", timeout_ms=3000))
            req = asyncio.ensure_future(interrupt())
            async for _ in s.guard(tokens()):
                n += 1
            ended = time.monotonic()
            r = await req
        return s, r, n, ended

    s, r, n, ended = asyncio.run(main())
    assert n >= 20
    assert s.stop["interrupt_id"] == r.interrupt_id and s.stop["reason"] == "user stop"
    assert s.session_id in r.cleaned_sessions, r
    assert 0 <= ended - s.stop_time < 0.5
    mods = [m for m in r.modules if m["name"] == "llm_stream"]
    assert mods and mods[0]["status"] == "ok", r.modules
    assert r.success, r


def test_run_cancels_the_task(cluster):
    c = ihc.Client(cluster.url)
    seen = []

    async def work():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        loop = asyncio.get_running_loop()
        async with ihc.aio.session("py-aio-2", module="tts", url=cluster.local_url) as s:
            async def interrupt():
                await loop.run_in_executor(None, cluster.wait_coordinator_sessions,
                                           "py-aio-2", 1)
                return await loop.run_in_executor(None, c.interrupt, "py-aio-2")
            req = asyncio.ensure_future(interrupt())
            with pytest.raises(ihc.Interrupted):
                await s.run(work())
            stop = await s.stopped()
            r = await req
            await s.run(work())  # after the stop: cancelled at once, swallowed by async with
            assert False, "not reached"
        return s, stop, r

    t0 = time.monotonic()
    s, stop, r = asyncio.run(main())
    assert time.monotonic() - t0 < 10
    assert seen == ["cancelled", "cancelled"] or seen == ["cancelled"]
    assert stop["interrupt_id"] == r.interrupt_id
    assert s.session_id in r.cleaned_sessions
    assert [m for m in r.modules if m["name"] == "tts" and m["status"] == "ok"], r.modules


def test_consumer_cancelled_from_outside_is_not_swallowed(cluster):
    async def main():
        async with ihc.aio.session("py-aio-3", url=cluster.local_url) as s:
            t = asyncio.ensure_future(s.run(asyncio.sleep(30)))
            await asyncio.sleep(0.05)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            assert not s.is_stopped
        return s
    s = asyncio.run(main())
    assert s.report == {"state": "done"}
    api = ihc.LocalAPI(cluster.local_url)
    assert wait_until(lambda: all(x["session_id"] != s.session_id or x["state"] != "active"
                                  for x in api.sessions()), 2)


def test_aio_bad_hardware_id(cluster):
    async def main():
        async with ihc.aio.session("bad id", url=cluster.local_url):
            pass
    with pytest.raises(ihc.Error) as e:
        asyncio.run(main())
    assert e.value.status == 400 and "hardware_id" in e.value.message


def test_async_on_stop_reported(cluster):
    c = ihc.Client(cluster.url)
    done = []

    async def flush_audio():
        await asyncio.sleep(0.02)
        done.append(True)

    async def main():
        loop = asyncio.get_running_loop()
        async with ihc.aio.session("py-aio-4", url=cluster.local_url) as s:
            s.on_stop(flush_audio)
            await loop.run_in_executor(None, cluster.wait_coordinator_sessions, "py-aio-4", 1)
            r = await loop.run_in_executor(None, c.interrupt, "py-aio-4")
            await s.stopped()
        return s, r
    s, r = asyncio.run(main())
    assert done == [True]
    m = [m for m in r.modules if m["name"] == "flush_audio"]
    assert m and m[0]["status"] == "ok" and m[0]["time_ms"] >= 20, r.modules


def test_guard_ends_after_the_item_in_hand(cluster):
    """A stop while the consumer is busy with an item (not waiting on the generator) lets it
    finish that item; the iteration ends before the next one, without CancelledError."""
    c = ihc.Client(cluster.url)

    async def main():
        loop = asyncio.get_running_loop()
        async with ihc.aio.session("py-aio-5", module="py_busy", url=cluster.local_url) as s:
            await loop.run_in_executor(None, cluster.wait_coordinator_sessions, "py-aio-5", 1)
            handled = []
            req = None
            async for tok in s.guard(tokens()):
                if req is None:
                    req = loop.run_in_executor(None, c.interrupt, "py-aio-5")
                    await s.stopped()  # busy with this item when the stop arrives
                    await asyncio.sleep(0.02)
                handled.append(tok)
            r = await req
        return s, r, handled
    s, r, handled = asyncio.run(main())
    assert handled == ["tok1"]
    m = [m for m in r.modules if m["name"] == "py_busy"]
    assert m and m[0]["status"] == "ok" and m[0]["time_ms"] >= 20, r.modules
