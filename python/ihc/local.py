"""The agent's local API (HTTP/1.1 + JSON on a Unix socket, IHC_LOCAL_URL=unix:///path):
the URL, an http.client connection over AF_UNIX, the session requests, and the reader of the
session's Server-Sent Events stream. The sessions built on it are in session.py and aio.py."""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from typing import Any, Iterator

from . import _http
from .errors import Error

DEFAULT_LOCAL_URL = "unix:///tmp/ihc-agent.sock"

#: what the agent's DELETE /v1/sessions/{id} accepts as a module's status
MODULE_STATUSES = ("ok", "timeout", "error", "skipped")


def socket_path(url: str | None = None) -> str:
    """The socket path of a local API URL: ``url``, else IHC_LOCAL_URL, else
    ``unix:///tmp/ihc-agent.sock``. ``unix:///run/ihc/agent.sock`` → ``/run/ihc/agent.sock``;
    the old ``ipc:///PATH`` means ``unix:///PATH``, as for the agent. Raises
    :class:`ihc.Error` when the local API is disabled (``off``, ``none`` or empty, as the
    agent reads them) and for anything that is not ``unix://`` + an absolute path."""
    src = "url"
    if url is None:
        url = os.environ.get("IHC_LOCAL_URL")
        src = "IHC_LOCAL_URL"
        if url is None:
            url = DEFAULT_LOCAL_URL
    if url.strip().lower() in ("", "off", "none"):
        raise Error(f"{src} is {url!r}: the agent's local API is disabled")
    for scheme in ("unix://", "ipc://"):
        if url.startswith(scheme):
            path = url[len(scheme):]
            if path.startswith("/") and len(path) > 1:
                return path
    raise Error(f"{src} {url!r}: expected unix:///absolute/path/to/agent.sock")


class UnixHTTPConnection(http.client.HTTPConnection):
    """An http.client connection to a Unix socket (``Host: localhost``)."""

    def __init__(self, path: str, timeout: float | None = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.socket_path)
        except OSError:
            s.close()
            raise
        self.sock = s


def session_body(hardware_id: str, module: str | None, data: Any, pid: int | None) -> dict:
    """The POST /v1/sessions body; type errors are caught here, before the agent sees them."""
    if not isinstance(hardware_id, str) or not hardware_id:
        raise Error(f"hardware_id must be a non-empty string, not {hardware_id!r}")
    body: dict[str, Any] = {"hardware_id": hardware_id}
    if module is not None:
        if not isinstance(module, str):
            raise Error(f"module must be a string, not {module!r}")
        body["module"] = module
    if data is not None:
        body["data"] = data
    if pid is not None:
        body["pid"] = int(pid)
    return body


def end_body(state: str | None, modules: list[dict[str, Any]] | None) -> dict | None:
    body: dict[str, Any] = {}
    if state is not None:
        body["state"] = state
    if modules:
        body["modules"] = modules
    return body or None


class LocalAPI:
    """Plain requests to the agent's local API (one connection per request). A session
    registered here without ``pid`` ends as soon as its registering connection closes, so
    :meth:`register` is for sessions held by a pid; hold a stream instead with
    :func:`ihc.session` or :func:`ihc.aio.session`."""

    def __init__(self, url: str | None = None, timeout: float = 10.0) -> None:
        self.path = socket_path(url)
        self.url = "unix://" + self.path
        self.timeout = timeout

    def connection(self, timeout: float | None = None) -> UnixHTTPConnection:
        return UnixHTTPConnection(self.path, self.timeout if timeout is None else timeout)

    def request(self, method: str, path: str, body: Any = None, *,
                conn: UnixHTTPConnection | None = None, raw_body: bytes | None = None) -> Any:
        """One request: the parsed JSON answer; non-2xx raises :class:`ihc.Error`.
        With ``conn`` the request goes on that (kept-alive) connection, which stays open."""
        own = conn is None
        c = conn or self.connection()
        try:
            return _http.request(c, method, path, body, None, self.url + path,
                                 raw_body=raw_body)[1]
        except Error as e:
            if e.status is None and isinstance(e.__cause__, (FileNotFoundError,
                                                             ConnectionRefusedError)):
                e.message += (f": no agent serves {self.path} (is ihc-agent running with "
                              f"IHC_LOCAL_URL={self.url}?)")
            raise
        finally:
            if own:
                c.close()

    def register(self, hardware_id: str, module: str | None = None, data: Any = None,
                 pid: int | None = None, *, conn: UnixHTTPConnection | None = None) -> dict:
        """POST /v1/sessions: ``{session_id, epoch, hardware_id}``."""
        return self.request("POST", "/v1/sessions", session_body(hardware_id, module, data, pid),
                            conn=conn)

    def end(self, session_id: str, state: str | None = None,
            modules: list[dict[str, Any]] | None = None) -> dict:
        """DELETE /v1/sessions/{id}, reporting the modules' results."""
        return self.request("DELETE", "/v1/sessions/" + urllib.parse.quote(session_id, safe=""),
                            end_body(state, modules))

    def sessions(self) -> list[dict[str, Any]]:
        """GET /v1/sessions: this agent's sessions."""
        return self.request("GET", "/v1/sessions")["sessions"]

    def health(self) -> dict[str, Any]:
        """GET /healthz."""
        return self.request("GET", "/healthz")


def events_path(session_id: str) -> str:
    return "/v1/sessions/" + urllib.parse.quote(session_id, safe="") + "/events"


class SSEParser:
    """Server-Sent Events, fed one line at a time (without the line ending): yields
    (event, data) for each complete event; data is parsed JSON when it is JSON."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []

    def line(self, text: str) -> tuple[str, Any] | None:
        if text == "":
            if not self.event and not self.data:
                return None
            ev, data = self.event or "message", "\n".join(self.data)
            self.event, self.data = "", []
            try:
                return ev, json.loads(data) if data else None
            except ValueError:
                return ev, data
        if text.startswith(":"):
            return None  # a comment: keepalive
        field, _, value = text.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            self.event = value
        elif field == "data":
            self.data.append(value)
        return None


def read_events(resp: http.client.HTTPResponse) -> Iterator[tuple[str, Any]]:
    """The events of an open SSE response until the server ends it."""
    p = SSEParser()
    while True:
        raw = resp.readline(65536)
        if not raw:
            return
        ev = p.line(raw.decode("utf-8", "replace").rstrip("\r\n"))
        if ev is not None:
            yield ev


def open_events(api: LocalAPI, session_id: str,
                conn: UnixHTTPConnection | None = None) -> tuple[UnixHTTPConnection,
                                                                 http.client.HTTPResponse]:
    """GET /v1/sessions/{id}/events on a new connection (without a timeout: the stream is
    silent until the stop, apart from keepalives). The caller reads the response and closes
    the connection."""
    c = conn or api.connection(timeout=None)
    path = events_path(session_id)
    try:
        c.request("GET", path, headers={"Accept": "text/event-stream"})
        resp = c.getresponse()
    except (OSError, http.client.HTTPException) as e:
        c.close()
        raise Error(f"GET {path}: {e.__class__.__name__}: {e}", None, api.url + path) from e
    if resp.status != 200:
        data = resp.read()
        c.close()
        raise _http.error_of(resp.status, data, resp.reason, api.url + path)
    return c, resp
