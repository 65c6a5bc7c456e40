"""JSON over HTTP/1.1 with http.client, shared by the coordinator client and the agent's local
API: one request, its JSON answer, and ihc.Error for everything that is not a 2xx with JSON."""

from __future__ import annotations

import http.client
import json
from typing import Any, Iterator, Mapping

from .errors import Error


class Doc(Mapping[str, Any]):
    """A JSON object the server answered, read as attributes or as a mapping:
    ``r.success`` and ``r["success"]`` are the same; ``r.raw`` is the dict itself.
    Nested objects stay plain dicts and lists."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        object.__setattr__(self, "raw", raw)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.raw[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; "
                                 f"fields: {', '.join(self.raw)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw!r})"


def encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def decode(data: bytes, status: int, url: str) -> Any:
    """The JSON of an answer; Error when it is not JSON."""
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        text = data[:200].decode("utf-8", "replace").strip()
        raise Error(f"the answer is not JSON: {text!r}", status, url) from None


def error_of(status: int, data: bytes, reason: str, url: str) -> Error:
    """The Error for a non-2xx answer, carrying the server's {"error": ...} message."""
    msg = None
    body: Any = None
    try:
        body = json.loads(data) if data else None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            msg = body["error"]
    except ValueError:
        pass
    if msg is None:
        msg = data[:200].decode("utf-8", "replace").strip() or reason or "no message"
    return Error(msg, status, url, body)


def request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None,
            headers: Mapping[str, str] | None = None, url: str = "",
            raw_body: bytes | None = None) -> tuple[int, Any]:
    """Sends one request on conn and reads the whole answer: (status, parsed JSON).
    A non-2xx answer raises Error with the server's message; a connection failure raises
    Error with status None. ``raw_body`` sends bytes as they are (still as JSON)."""
    h = {"Accept": "application/json"}
    h.update(headers or {})
    data = raw_body
    if data is None and body is not None:
        data = encode(body)
    if data is not None:
        h["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        payload = resp.read()
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        raise Error(f"{method} {path}: {e.__class__.__name__}: {e}", None, url) from e
    if not 200 <= resp.status < 300:
        raise error_of(resp.status, payload, resp.reason, url)
    return resp.status, decode(payload, resp.status, url)
