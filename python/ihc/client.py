"""The coordinator client: interrupts and queries over the coordinator's HTTP API
(``POST /v1/interrupt``, ``GET /v1/sessions`` ...), standard library only."""

from __future__ import annotations

import http.client
import os
import ssl
import urllib.parse
from typing import Any

from . import _http
from .errors import Error

DEFAULT_URL = "http://127.0.0.1:7480"


class Result(_http.Doc):
    """An interrupt's result: every field of the coordinator's JSON as an attribute
    (``success``, ``interrupt_id``, ``hardware_id``, ``epoch``, ``interrupted_modules``,
    ``cleaned_sessions``, ``modules``, ``agents``, ``reason``, ``total_time_ms``,
    ``persisted``, and ``error`` when it failed) and as a mapping (``r["modules"]``)."""


def _token_from_env() -> str | None:
    tok = os.environ.get("IHC_HTTP_TOKEN")
    if tok:
        return tok
    path = os.environ.get("IHC_HTTP_TOKEN_FILE")
    if path:
        try:
            with open(path, encoding="ascii") as f:
                return f.read().strip() or None
        except OSError as e:
            raise Error(f"IHC_HTTP_TOKEN_FILE {path}: {e.strerror}") from e
    return None


class Client:
    """A client of one coordinator's HTTP API.

    ``url`` is the coordinator's HTTP address (``http://host:7480``; ``https://`` when its
    HTTP API is served over TLS, verified with ``ssl_context`` or the system's CAs).
    ``token`` is the bearer token when the coordinator has IHC_HTTP_TOKEN set; ``None`` takes
    IHC_HTTP_TOKEN, or the file named by IHC_HTTP_TOKEN_FILE, from the environment.
    ``timeout`` (seconds) bounds each request; an interrupt waits at most its own
    ``timeout_ms`` plus this. Each call uses its own connection, so one Client may be shared
    by threads. Failures raise :class:`ihc.Error` with the server's message and status.
    """

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *,
                 timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise Error(f"coordinator URL {url!r}: expected http://HOST[:PORT] or https://HOST[:PORT]")
        if u.path not in ("", "/") or u.query:
            raise Error(f"coordinator URL {url!r}: no path or query expected")
        self.url = url.rstrip("/")
        self._https = u.scheme == "https"
        self._host = u.hostname
        try:
            self._port = u.port or (443 if self._https else 80)
        except ValueError as e:
            raise Error(f"coordinator URL {url!r}: {e}") from None
        self._token = token if token is not None else _token_from_env()
        self.timeout = timeout
        self._ssl = ssl_context

    def __repr__(self) -> str:
        return f"ihc.Client({self.url!r})"

    # ---- requests ----

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._ssl or ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, *,
                timeout: float | None = None, raw_body: bytes | None = None) -> Any:
        """One request to the API: the parsed JSON answer. Non-2xx raises :class:`ihc.Error`.
        ``raw_body`` sends those bytes as the JSON body unchanged (for tests of bad input)."""
        headers = {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        conn = self._conn(self.timeout if timeout is None else timeout)
        try:
            _, doc = _http.request(conn, method, path, body, headers, self.url + path,
                                   raw_body=raw_body)
            return doc
        finally:
            conn.close()

    def interrupt(self, hardware_id: str, reason: str | None = None,
                  timeout_ms: int | None = None) -> Result:
        """Interrupts every session of ``hardware_id`` on every agent and returns the result
        once all answered or the deadline passed. A result with ``success`` false (an agent
        missing, a module timed out) is returned, not raised; check ``result.success`` and
        ``result.error``. Refused requests (bad hardware_id: 400; a global interrupt while
        disabled: 403; too many in flight: 503) raise :class:`ihc.Error`."""
        body: dict[str, Any] = {"hardware_id": hardware_id}
        if reason is not None:
            body["reason"] = reason
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        wait = self.timeout + (timeout_ms or 0) / 1000.0
        doc = self.request("POST", "/v1/interrupt", body, timeout=wait)
        if not isinstance(doc, dict):
            raise Error("the interrupt's answer is not a JSON object", 200,
                        self.url + "/v1/interrupt", doc)
        return Result(doc)

    def sessions(self, hardware_id: str | None = None) -> list[dict[str, Any]]:
        """The sessions the coordinator knows (of one hardware_id if given): a list of dicts
        (session_id, hardware_id, agent_id, module, epoch, created_ms ...)."""
        path = "/v1/sessions"
        if hardware_id is not None:
            path += "?" + urllib.parse.urlencode({"hardware_id": hardware_id})
        return self.request("GET", path)["sessions"]

    def agents(self) -> list[dict[str, Any]]:
        """The live agents: a list of dicts (agent_id, node, connected, sessions ...)."""
        return self.request("GET", "/v1/agents")["agents"]

    def stats(self) -> dict[str, Any]:
        """Counters: interrupts, their outcome, latencies, Redis' state."""
        return self.request("GET", "/v1/stats")

    def flags(self) -> dict[str, Any]:
        """The interrupt flags still set per hardware_id."""
        return self.request("GET", "/v1/flags")

    def reset_flags(self) -> dict[str, Any]:
        """Clears every interrupt flag; the coordinator's answer."""
        return self.request("POST", "/v1/flags/reset", {})

    def health(self) -> dict[str, Any]:
        """``GET /healthz`` (served without the token)."""
        return self.request("GET", "/healthz")
