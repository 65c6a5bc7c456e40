"""A session of work on the local agent, for threads: ``with ihc.session("dev-1") as s:``.
The session is held by its event stream, read by a background thread; when the agent says
stop, ``s.stopped`` is set, the ``on_stop`` callbacks run and their outcome is reported to
the agent as the module's result. If the process dies, the kernel closes the stream and the
agent ends the session at once."""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from typing import Any, Callable

from . import local
from .errors import Error, Interrupted

#: how long opening a session waits for the agent (seconds)
OPEN_TIMEOUT = 10.0


class ModuleOutcome:
    """What one module's stop callbacks did, as the agent's DELETE body wants it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.time_ms = 0.0
        self.errors: list[str] = []

    def doc(self, deadline_ms: float | None) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "status": "ok", "time_ms": round(self.time_ms, 3)}
        if self.errors:
            d["status"] = "error"
            d["error"] = "; ".join(self.errors)[:1000]
        elif deadline_ms and self.time_ms > deadline_ms:
            d["status"] = "timeout"
            d["error"] = f"stop callbacks took {self.time_ms:.1f} ms, deadline {deadline_ms} ms"
        return d


_MODULE_NAME = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


def module_name(fn: Callable[..., Any], module: str | None, session_module: str | None) -> str:
    """The module an on_stop callback reports as: ``module``, else the session's module, else
    the function's name when the agent accepts it as one, else ``on_stop``."""
    if module is not None:
        if not isinstance(module, str) or not _MODULE_NAME.fullmatch(module):
            raise Error(f"module {module!r}: expected 1-128 characters of [A-Za-z0-9._:@-]")
        return module
    if session_module:
        return session_module
    name = getattr(fn, "__name__", "")
    return name if isinstance(name, str) and _MODULE_NAME.fullmatch(name) else "on_stop"


def outcomes_docs(outcomes: dict[str, ModuleOutcome], deadline_ms: Any) -> list[dict[str, Any]]:
    dl = deadline_ms if isinstance(deadline_ms, (int, float)) and deadline_ms > 0 else None
    return [o.doc(dl) for o in outcomes.values()]


class Session:
    """One session of ``hardware_id`` on the local agent (see :func:`ihc.session`).

    Attributes: ``session_id``, ``epoch``, ``hardware_id``, ``module``; ``stopped``
    (a :class:`threading.Event`, set when the agent says stop or the agent's stream ends);
    ``stop`` (the stop event's data: ``interrupt_id``, ``reason``, ``deadline_ms``; None
    before; when the agent ended the session without a stop, its ``end`` event's data,
    ``{"session_id", "state"}`` — e.g. ``expired`` after SESSION_TIMEOUT —, and an empty dict
    when the stream ended without either); ``report`` (what the end
    sent the agent) and ``report_error`` (the :class:`ihc.Error` when it could not be sent
    because the agent was gone; ``close`` does not raise then).
    """

    def __init__(self, hardware_id: str, module: str | None = None, data: Any = None, *,
                 url: str | None = None, timeout: float = OPEN_TIMEOUT) -> None:
        local.session_body(hardware_id, module, data, None)  # bad arguments fail here
        self.hardware_id = hardware_id
        self.module = module
        self.data = data
        self.session_id: str = ""
        self.epoch: int = 0
        self.stopped = threading.Event()
        self.stop: dict[str, Any] | None = None
        self.report: dict[str, Any] | None = None  # what was sent in DELETE
        self.report_error: Error | None = None  # why the end could not be reported
        self._api = local.LocalAPI(url, timeout)
        self._timeout = timeout
        self._callbacks: list[tuple[Callable[[], Any], str]] = []
        self._outcomes: dict[str, ModuleOutcome] = {}
        self._lock = threading.Lock()
        self._callbacks_done = threading.Event()
        self._report_done = threading.Event()
        self._held = threading.Event()
        self._closing = False
        self._reported = False
        self._ended = False  # the agent ended the session: nothing to DELETE
        self._stream: local.UnixHTTPConnection | None = None
        self._thread: threading.Thread | None = None
        self._stream_error: BaseException | None = None
        self._stop_t = 0.0

    def __repr__(self) -> str:
        return (f"ihc.Session({self.session_id or '(not open)'}, hardware_id="
                f"{self.hardware_id!r}, stopped={self.stopped.is_set()})")

    # ---- open and close ----

    def open(self) -> "Session":
        """Registers the session and holds its event stream (what ``with`` does)."""
        if self._thread is not None:
            raise Error("the session is already open")
        reg = self._api.connection()
        try:
            # The registering connection holds the session until the stream does.
            doc = self._api.register(self.hardware_id, self.module, self.data, conn=reg)
            self.session_id, self.epoch = doc["session_id"], int(doc.get("epoch", 0))
            self._stream, resp = local.open_events(self._api, self.session_id)
            self._thread = threading.Thread(target=self._read, args=(resp,), daemon=True,
                                            name=f"ihc-session-{self.session_id}")
            self._thread.start()
            held = self._held.wait(self._timeout)
            failed = self._stream_error is not None and not self.stopped.is_set()
            if not held or failed:
                with self._lock:
                    self._closing = True
                self._shutdown_stream()
                why = (f"the event stream failed: {self._stream_error}" if failed else
                       f"no event from the agent in {self._timeout:g} s")
                raise Error(f"session {self.session_id}: {why}", None, self._api.url)
        finally:
            reg.close()
        return self

    def close(self, state: str | None = None) -> None:
        """Ends the session: reports it to the agent (unless the stop callbacks already
        did) with ``state`` (default ``done``, or ``interrupted`` once stopped), then lets
        go of the stream. Waits for running stop callbacks up to the stop's deadline."""
        if self._thread is None or self._closing:
            return
        if self.stopped.is_set():
            dl = (self.stop or {}).get("deadline_ms")
            wait = dl / 1000.0 if isinstance(dl, (int, float)) and dl > 0 else self._timeout
            self._callbacks_done.wait(wait)
        with self._lock:
            self._closing = True
            if self.stopped.is_set() and not self._callbacks and self.module:
                # No callbacks: the module's time to stop is the stop → the end of the work.
                o = self._outcomes.setdefault(self.module, ModuleOutcome(self.module))
                o.time_ms = (time.monotonic() - self._stop_t) * 1000.0
        try:
            self._report(state or ("interrupted" if self.stopped.is_set() else "done"))
        except Error as e:
            if e.status is not None:
                raise
            # The agent is gone, and the session with it: nothing left to end.
            self.report_error = e
        finally:
            self._shutdown_stream()

    def __enter__(self) -> "Session":
        return self.open()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        ours = isinstance(exc, Interrupted) and exc.session_id == self.session_id
        state = None
        if exc is not None and not ours:
            state = "interrupted" if self.stopped.is_set() else "failed"
        self.close(state)
        return ours

    # ---- the work's side ----

    def check(self) -> None:
        """Raises :class:`ihc.Interrupted` once the session was told to stop (the session's
        ``with`` block swallows it)."""
        if self.stopped.is_set():
            raise Interrupted(self.session_id, self.stop)

    def on_stop(self, fn: Callable[[], Any], module: str | None = None) -> None:
        """Runs ``fn()`` on the session's thread when the stop arrives (callbacks in the
        order given). Their outcome — ``ok``, ``error`` with the exception, ``timeout`` when
        they took longer than the stop's deadline — and time are reported to the agent as
        the result of ``module`` (default: the session's module, else the function's name,
        else ``on_stop``), and appear in the interrupt's ``modules``. Registered after the
        stop, ``fn`` runs at once here and is not reported."""
        name = module_name(fn, module, self.module)
        with self._lock:
            late = self.stopped.is_set()
            if not late:
                self._callbacks.append((fn, name))
        if late:
            fn()

    # ---- the background thread ----

    def _read(self, resp: Any) -> None:
        stop: dict[str, Any] | None = None
        got_any = False
        try:
            for ev, data in local.read_events(resp):
                got_any = True
                if ev == "session":
                    self._held.set()
                elif ev == "stop":
                    stop = data if isinstance(data, dict) else {"reason": str(data)}
                    break
                elif ev == "end":  # ended without a stop (expired): the stream ends too
                    stop = data if isinstance(data, dict) else {}
                    self._ended = True
                    break
        except (OSError, ValueError, http.client.HTTPException) as e:
            self._stream_error = e
        if not got_any:
            # the stream never held the session: open() fails
            self._stream_error = self._stream_error or ConnectionError(
                "the agent ended the event stream at once")
            self._held.set()
            return
        self._held.set()
        with self._lock:
            if self._closing:
                return
            self._stop_t = time.monotonic()
            self.stop = stop if stop is not None else {}
            self.stopped.set()
            callbacks = list(self._callbacks)
        self._run_callbacks(callbacks)
        if callbacks:
            # The process ran its own interrupt methods: say how they went right away.
            try:
                self._report("interrupted")
            except Error as e:
                self.report_error = e  # the agent went away; nothing to report to

    def _run_callbacks(self, callbacks: list[tuple[Callable[[], Any], str]]) -> None:
        for fn, name in callbacks:
            o = self._outcomes.setdefault(name, ModuleOutcome(name))
            t0 = time.monotonic()
            try:
                fn()
            except Exception as e:  # reported to the agent, not lost
                o.errors.append(f"{type(e).__name__}: {e}")
            o.time_ms += (time.monotonic() - t0) * 1000.0
        self._callbacks_done.set()

    def _report(self, state: str) -> None:
        with self._lock:
            first = not self._reported
            self._reported = True
        if not first:
            # the stream must outlive the report in flight on the other thread
            self._report_done.wait(self._timeout)
            return
        if self._ended:
            self._report_done.set()
            return
        try:
            mods = outcomes_docs(self._outcomes, (self.stop or {}).get("deadline_ms"))
            self.report = local.end_body(state, mods) or {}
            self._api.end(self.session_id, state, mods)
        finally:
            self._report_done.set()

    def _shutdown_stream(self) -> None:
        """Lets go of the stream: shutdown wakes the reading thread, which is joined before
        the connection is closed under it."""
        c = self._stream
        if c is None:
            return
        if c.sock is not None:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self._timeout)
        c.close()


def session(hardware_id: str, module: str | None = None, data: Any = None, *,
            url: str | None = None, timeout: float = OPEN_TIMEOUT) -> Session:
    """A session of work on ``hardware_id`` with the local agent, for ``with``::

        with ihc.session("dev-1", module="text_processing") as s:
            s.on_stop(lambda: model.cancel())
            for token in generate():
                s.check()          # raises ihc.Interrupted once stopped; `with` swallows it
                emit(token)

    ``module`` names the work (it appears in the interrupt's result), ``data`` is stored
    with the session. ``url`` is the agent's local API (default: IHC_LOCAL_URL, else
    ``unix:///tmp/ihc-agent.sock``). The session is registered without a pid: it lives as
    long as this process holds its event stream. Errors raise :class:`ihc.Error`."""
    return Session(hardware_id, module, data, url=url, timeout=timeout)
