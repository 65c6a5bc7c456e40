"""Sessions for asyncio: ``async with ihc.aio.session("dev-1") as s:``. The event stream is
read by a task on the running loop (asyncio.open_unix_connection); when the agent says stop,
the work the session guards is cancelled — ``s.guard(agen)`` ends an async generator's
iteration, ``s.run(coro)`` cancels a task — and how long it took is reported to the agent as
the module's result. If the process dies, the kernel closes the stream and the agent ends
the session at once."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import urllib.parse
from typing import Any, AsyncIterable, AsyncIterator, Awaitable, Callable, TypeVar

from . import local
from ._http import decode, error_of
from .errors import Error, Interrupted
from .session import OPEN_TIMEOUT, ModuleOutcome, module_name, outcomes_docs

T = TypeVar("T")

__all__ = ["Session", "session"]


# ---- a small HTTP/1.1 client on asyncio streams (what the local API needs, no more) ----

async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("the agent closed the connection")
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {line[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


async def _body_pieces(reader: asyncio.StreamReader,
                       headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The body of an answer as it arrives (chunked, Content-Length, or until EOF)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()  # the final CRLF (no trailers expected)
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if n:
            yield await reader.readexactly(n)
    else:
        while True:
            b = await reader.read(65536)
            if not b:
                return
            yield b


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
                   path: str, body: Any, url: str) -> Any:
    data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    writer.write(head.encode() + b"\r\n" + data)
    await writer.drain()
    status, headers = await _read_head(reader)
    payload = b"".join([p async for p in _body_pieces(reader, headers)])
    if not 200 <= status < 300:
        raise error_of(status, payload, "", url + path)
    return decode(payload, status, url + path)


def _close_writer(w: asyncio.StreamWriter | None) -> None:
    if w is not None and not w.is_closing():
        w.close()


class _Guard:
    """One guarded async iteration: the task consuming it, and whether that task is now
    waiting for the generator's next item (then the stop cancels it there)."""

    __slots__ = ("task", "waiting", "cancelled", "done")

    def __init__(self, task: asyncio.Task | None) -> None:
        self.task = task
        self.waiting = False
        self.cancelled = False
        self.done = asyncio.Event()


class Session:
    """One asyncio session of ``hardware_id`` on the local agent (see :func:`session`).

    Attributes: ``session_id``, ``epoch``, ``hardware_id``, ``module``; ``stop`` (the stop
    event's data — ``interrupt_id``, ``reason``, ``deadline_ms`` — None before; as for
    :class:`ihc.Session` when the session ended without one); ``stop_time`` (``time.monotonic()``
    when the stop arrived); ``report`` (what was sent to the agent at the end) and
    ``report_error`` (the :class:`ihc.Error` when the agent was gone; ``close`` does not raise
    then).
    """

    def __init__(self, hardware_id: str, module: str | None = None, data: Any = None, *,
                 url: str | None = None, timeout: float = OPEN_TIMEOUT) -> None:
        local.session_body(hardware_id, module, data, None)  # bad arguments fail here
        self.hardware_id = hardware_id
        self.module = module
        self.data = data
        self.session_id = ""
        self.epoch = 0
        self.stop: dict[str, Any] | None = None
        self.stop_time = 0.0
        self.report: dict[str, Any] | None = None
        self.report_error: Error | None = None
        self._path = local.socket_path(url)
        self._url = "unix://" + self._path
        self._timeout = timeout
        self._stopped: asyncio.Event | None = None
        self._work: set[asyncio.Task] = set()
        self._cancelled: set[asyncio.Task] = set()
        self._guards: set[_Guard] = set()
        self._callbacks: list[tuple[Callable[[], Any], str]] = []
        self._outcomes: dict[str, ModuleOutcome] = {}
        self._reader: asyncio.Task | None = None
        self._stream_w: asyncio.StreamWriter | None = None
        self._reported = False
        self._ended = False  # the agent ended the session: nothing to DELETE
        self._closing = False

    def __repr__(self) -> str:
        return (f"ihc.aio.Session({self.session_id or '(not open)'}, hardware_id="
                f"{self.hardware_id!r}, stopped={self.is_stopped})")

    # ---- open and close ----

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_unix_connection(self._path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise Error(f"{e.__class__.__name__}: no agent serves {self._path} (is ihc-agent "
                        f"running with IHC_LOCAL_URL={self._url}?)", None, self._url) from e

    async def open(self) -> "Session":
        """Registers the session and starts holding its event stream."""
        if self._reader is not None:
            raise Error("the session is already open")
        try:
            await asyncio.wait_for(self._open(), self._timeout)
        except BaseException as e:
            # not open: let go of what was set up (the agent then ends the session)
            if self._reader is not None:
                self._reader.cancel()
                self._reader = None
            _close_writer(self._stream_w)
            if isinstance(e, asyncio.TimeoutError):
                raise Error(f"the agent did not answer in {self._timeout:g} s", None,
                            self._url) from None
            if isinstance(e, (OSError, ValueError, asyncio.IncompleteReadError)):
                raise Error(f"{e.__class__.__name__}: {e}", None, self._url) from e
            raise
        return self

    async def _open(self) -> None:
        self._stopped = asyncio.Event()
        reg_r, reg_w = await self._connect()
        try:
            # The registering connection holds the session until the stream does.
            doc = await _request(reg_r, reg_w, "POST", "/v1/sessions",
                                 local.session_body(self.hardware_id, self.module, self.data,
                                                    None), self._url)
            self.session_id, self.epoch = doc["session_id"], int(doc.get("epoch", 0))
            r, self._stream_w = await self._connect()
            path = local.events_path(self.session_id)
            self._stream_w.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
                                 "Accept: text/event-stream\r\n\r\n".encode())
            await self._stream_w.drain()
            status, headers = await _read_head(r)
            if status != 200:
                payload = b"".join([p async for p in _body_pieces(r, headers)])
                raise error_of(status, payload, "", self._url + path)
            lines = self._lines(r, headers)
            held = asyncio.get_running_loop().create_future()
            self._reader = asyncio.create_task(self._read(lines, held),
                                               name=f"ihc-session-{self.session_id}")
            await held  # the first event: the stream holds the session now
        finally:
            _close_writer(reg_w)

    async def close(self, state: str | None = None) -> None:
        """Ends the session: reports it (unless the stop already did, after its work ended)
        with ``state`` (default ``done``, or ``interrupted`` once stopped) and lets go of
        the stream."""
        if self._reader is None or self._closing:
            return
        try:
            if self.is_stopped and not self._reader.done():
                # the reader reports once the work has ended; give it the deadline
                try:
                    await asyncio.wait_for(asyncio.shield(self._reader), self._deadline_s())
                except Exception:  # timed out, or the reader failed: report from here
                    pass
            self._closing = True
            try:
                await self._report(state or ("interrupted" if self.is_stopped else "done"))
            except Error as e:
                if e.status is not None:
                    raise
                # The agent is gone, and the session with it: nothing left to end.
                self.report_error = e
        finally:
            self._closing = True
            self._reader.cancel()
            _close_writer(self._stream_w)

    async def __aenter__(self) -> "Session":
        return await self.open()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        ours = isinstance(exc, Interrupted) and exc.session_id == self.session_id
        state = None
        if exc is not None and not ours:
            state = "interrupted" if self.is_stopped else "failed"
        await self.close(state)
        return ours

    # ---- the work's side ----

    @property
    def is_stopped(self) -> bool:
        """True once the stop arrived."""
        return self._stopped is not None and self._stopped.is_set()

    async def stopped(self) -> dict[str, Any]:
        """Waits for the stop; returns its data (``interrupt_id``, ``reason``,
        ``deadline_ms``)."""
        if self._stopped is None:
            raise Error("the session is not open")
        await self._stopped.wait()
        return self.stop or {}

    def check(self) -> None:
        """Raises :class:`ihc.Interrupted` once stopped (``async with`` swallows it)."""
        if self.is_stopped:
            raise Interrupted(self.session_id, self.stop)

    def on_stop(self, fn: Callable[[], Any], module: str | None = None) -> None:
        """Calls ``fn()`` (awaited if it returns an awaitable) when the stop arrives, after the
        guarded work was cancelled; its outcome is reported as ``module``'s result (default:
        the session's module). See :meth:`ihc.Session.on_stop`."""
        self._callbacks.append((fn, module_name(fn, module, self.module)))

    async def run(self, coro: Awaitable[T]) -> T:
        """Runs ``coro`` as a task and returns its result; when the stop arrives the task is
        cancelled and ``run`` raises :class:`ihc.Interrupted` (``async with`` swallows it).
        Cancelling the caller cancels the task too, as ``await`` does."""
        task = asyncio.ensure_future(coro)
        self._work.add(task)
        if self.is_stopped:
            self._cancel(task)
        try:
            return await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task in self._cancelled and (me is None or not me.cancelling()):
                raise Interrupted(self.session_id, self.stop) from None
            raise
        finally:
            self._work.discard(task)

    async def guard(self, agen: AsyncIterable[T]) -> AsyncIterator[T]:
        """Iterates ``agen`` until the stop: ``async for tok in s.guard(stream()):``. At the
        stop the generator is cancelled where it waits (or, if the consumer is busy with an
        item, the iteration ends before the next one), it is closed, and the loop ends
        normally."""
        it = aiter(agen)
        g = _Guard(asyncio.current_task())
        self._guards.add(g)
        try:
            while not self.is_stopped:
                g.waiting = True
                try:
                    item = await anext(it)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if g.cancelled and g.task is not None and g.task.uncancel() == 0:
                        return
                    raise
                finally:
                    g.waiting = False
                if g.cancelled:
                    # the generator swallowed our cancel and produced an item: end anyway
                    if g.task is not None:
                        g.task.uncancel()
                    return
                yield item
        finally:
            self._guards.discard(g)
            close = getattr(it, "aclose", None)
            try:
                if close is not None:
                    await close()
            finally:
                g.done.set()

    # ---- the stream ----

    async def _lines(self, r: asyncio.StreamReader,
                     headers: dict[str, str]) -> AsyncIterator[str]:
        buf = b""
        async for piece in _body_pieces(r, headers):
            buf += piece
            while True:
                i = buf.find(b"\n")
                if i < 0:
                    break
                line, buf = buf[:i], buf[i + 1:]
                yield line.rstrip(b"\r").decode("utf-8", "replace")

    async def _read(self, lines: AsyncIterator[str], held: asyncio.Future) -> None:
        p = local.SSEParser()
        stop: dict[str, Any] | None = None
        try:
            async for line in lines:
                ev = p.line(line)
                if ev is None:
                    continue
                if not held.done():
                    held.set_result(None)
                if ev[0] == "stop":
                    stop = ev[1] if isinstance(ev[1], dict) else {"reason": str(ev[1])}
                    break
                if ev[0] == "end":  # ended without a stop (expired): the stream ends too
                    stop = ev[1] if isinstance(ev[1], dict) else {}
                    self._ended = True
                    break
        except (OSError, ValueError, asyncio.IncompleteReadError) as e:
            if not held.done():
                held.set_exception(e)
                return
        if not held.done():
            held.set_exception(ConnectionError("the agent ended the event stream at once"))
            return
        if self._closing:
            return
        await self._stop_work(stop if stop is not None else {})

    def _deadline_s(self) -> float:
        dl = (self.stop or {}).get("deadline_ms")
        return dl / 1000.0 if isinstance(dl, (int, float)) and dl > 0 else self._timeout

    def _cancel(self, task: asyncio.Task) -> None:
        self._cancelled.add(task)
        task.cancel()

    async def _stop_work(self, stop: dict[str, Any]) -> None:
        """The stop: cancel the guarded work, wait for it to end (up to the deadline), run the
        callbacks, report."""
        self.stop_time = time.monotonic()
        self.stop = stop
        assert self._stopped is not None
        self._stopped.set()
        for g in list(self._guards):
            if g.waiting and g.task is not None and not g.task.done():
                g.cancelled = True
                g.task.cancel()
        for t in list(self._work):
            self._cancel(t)
        waits = [asyncio.ensure_future(g.done.wait()) for g in self._guards] + list(self._work)
        ok = True
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self._deadline_s())
            ok = not pending
            for w in pending:
                if w not in self._work:
                    w.cancel()
        if self.module:
            o = self._outcomes.setdefault(self.module, ModuleOutcome(self.module))
            o.time_ms = (time.monotonic() - self.stop_time) * 1000.0
            if not ok:
                o.errors.append("guarded work still running at the deadline")
        for fn, name in self._callbacks:
            o = self._outcomes.setdefault(name, ModuleOutcome(name))
            t0 = time.monotonic()
            try:
                r = fn()
                if inspect.isawaitable(r):
                    await r
            except Exception as e:  # reported to the agent, not lost
                o.errors.append(f"{type(e).__name__}: {e}")
            o.time_ms += (time.monotonic() - t0) * 1000.0
        if not self._closing:
            try:
                await self._report("interrupted")
            except Error as e:
                self.report_error = e  # the agent went away; nothing to report to

    async def _report(self, state: str) -> None:
        if self._reported:
            return
        self._reported = True
        if self._ended:
            return
        mods = outcomes_docs(self._outcomes, (self.stop or {}).get("deadline_ms"))
        body = local.end_body(state, mods)
        self.report = body or {}
        path = "/v1/sessions/" + urllib.parse.quote(self.session_id, safe="")
        try:
            r, w = await self._connect()
        except Error:
            raise
        try:
            await asyncio.wait_for(_request(r, w, "DELETE", path, body, self._url),
                                   self._timeout)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            raise Error(f"DELETE {path}: {e.__class__.__name__}: {e}", None, self._url) from e
        finally:
            _close_writer(w)


def session(hardware_id: str, module: str | None = None, data: Any = None, *,
            url: str | None = None, timeout: float = OPEN_TIMEOUT) -> Session:
    """An asyncio session of work on ``hardware_id`` with the local agent::

        async with ihc.aio.session("dev-1", module="text_processing") as s:
            async for token in s.guard(llm.stream(prompt)):   # ends at the stop
                await send(token)
            # or: reply = await s.run(generate(prompt))     # cancelled at the stop

    Arguments as :func:`ihc.session`. The stream is held by a task of the running loop; the
    session lives as long as this process holds it."""
    return Session(hardware_id, module, data, url=url, timeout=timeout)
