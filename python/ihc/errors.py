"""The two exceptions of the ihc package: Error (a request failed) and Interrupted (the work
was told to stop)."""

from __future__ import annotations

from typing import Any


class Error(Exception):
    """A request to the coordinator or to the agent failed.

    ``status`` is the HTTP status the server answered (``None`` when no answer came: the
    server could not be reached, or its answer was not HTTP/JSON), ``message`` the server's
    ``{"error": ...}`` text (or what went wrong locally), ``url`` what was asked.
    """

    def __init__(self, message: str, status: int | None = None, url: str | None = None,
                 body: Any = None) -> None:
        self.message = message
        self.status = status
        self.url = url
        self.body = body
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        if self.status is None:
            return f"{self.message}{where}"
        return f"HTTP {self.status}: {self.message}{where}"


class Interrupted(Exception):
    """Raised by ``Session.check()`` (and by ``aio`` ``Session.run()``) once the session was told
    to stop. ``stop`` is the agent's stop event: ``interrupt_id``, ``hardware_id``, ``reason``,
    ``deadline_ms`` (empty when the stream ended without one). A session's own ``with`` /
    ``async with`` block swallows it, so code after the block goes on."""

    def __init__(self, session_id: str, stop: dict[str, Any] | None = None) -> None:
        self.session_id = session_id
        self.stop = dict(stop or {})
        reason = self.stop.get("reason")
        msg = f"session {session_id} was interrupted"
        if "interrupt_id" in self.stop:
            msg += f" (interrupt {self.stop['interrupt_id']}"
            msg += f": {reason})" if reason else ")"
        super().__init__(msg)
