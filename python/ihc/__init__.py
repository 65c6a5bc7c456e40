"""ihc: stop work on a hardware_id everywhere, from Python (standard library only).

- :class:`Client` — the coordinator's HTTP API: ``ihc.Client().interrupt("dev-1")``.
- :func:`session` — a session of work with the local ``ihc-agent``, for threads; and
  :mod:`ihc.aio` — the same for asyncio (``s.guard(agen)``, ``await s.run(coro)``).
- :class:`Error` — a request failed (``.status``, ``.message``); :class:`Interrupted` — the
  work was told to stop.
"""

from . import aio
from .client import DEFAULT_URL, Client, Result
from .errors import Error, Interrupted
from .local import DEFAULT_LOCAL_URL, LocalAPI
from .session import Session, session

__version__ = "0.1.0"

__all__ = ["Client", "Result", "Error", "Interrupted", "Session", "session", "aio",
           "LocalAPI", "DEFAULT_URL", "DEFAULT_LOCAL_URL", "__version__"]
