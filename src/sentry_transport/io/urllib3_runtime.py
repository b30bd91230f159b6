"""The urllib3+ runtime: worker threads sending through ONE urllib3 pool manager.

The pieces it shares with the requests+ runtime (our pools with their ``Tracker``,
``ClientConnection``, reading an answer) are in ``urllib3_io``; this module is what only
urllib3+ has: the shared pool manager, each worker's use of it, and the runtime.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..core.http11 import Response
from ..core.request import Request
from ..runtime.threads import Threads
from .urllib3_io import (
    NO_RETRIES,
    ClientConnection,
    Tracker,
    pool_manager,
    read_response,
)

if TYPE_CHECKING:  # (urllib3_io imports the library, or raises MissingDependencyError)
    from urllib3.util import Timeout


class SharedPool:
    """The urllib3+ runtime's pool manager, shared by the workers, cleared (its idle sockets
    closed) when the last of them is done."""

    def __init__(self, pump: Any) -> None:
        self.tracker = Tracker()
        self.manager = pool_manager(
            self.tracker,
            proxy=pump.proxy,
            tls=pump.tls,
            proxy_tls=pump.proxy_tls,
            timeout=pump.options.timeout,
            maxsize=pump.options.max_connections,
        )
        self._lock = threading.Lock()
        self._users = 0

    def take(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.manager.clear()


class Urllib3Connection(ClientConnection):
    """One worker's use of the shared pool manager."""

    def __init__(self, shared: SharedPool) -> None:
        super().__init__(shared.tracker)
        self._shared = shared
        self._released = False

    def _send(self, request: Request, timeout: Timeout) -> Response:
        raw = self._shared.manager.urlopen(
            request.method,
            request.url,
            body=request.body,
            headers=dict(request.headers),
            retries=NO_RETRIES,
            redirect=False,
            timeout=timeout,
            preload_content=False,
            decode_content=False,
        )
        return read_response(raw)

    def close_now(self) -> None:
        if not self._released:
            self._released = True
            self._shared.release()


class Urllib3Threads(Threads):
    """Worker threads sending through one urllib3 pool manager (capped at max_connections:
    a worker never waits for a pooled connection, and there are never more workers)."""

    name = "urllib3"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._shared: SharedPool | None = None

    def connection(self, pump: Any) -> Urllib3Connection:
        """A new worker's connection (what ``workers.Workers._connection`` would ask for)."""
        with self._lock:
            if self._shared is None:
                self._shared = SharedPool(pump)
            shared = self._shared
            shared.take()
        return Urllib3Connection(shared)

    def after_fork(self) -> None:
        """In a forked child: close our copies of the parent's sockets, then start afresh
        (the old locks may have been held by a parent's thread when it forked)."""
        shared, self._shared = self._shared, None
        self._lock = threading.Lock()
        if shared is not None:
            shared.tracker.forget_all()
