"""The sync transport: sends in the caller's thread, blocking for one request.

``capture_envelope`` sends what is ready now (the new envelope, and earlier ones whose retry
is due) on one keep-alive connection; it never sleeps for a retry. ``flush``/``close`` do
sleep for due retries, but never past their deadline.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .._blocking import Connection, deliver
from .._dsn import Dsn
from .._engine import Job
from .._envelope import Envelope
from .._tls import ssl_context
from .._transport import EngineTransport


class SyncTransport(EngineTransport):
    name = "sync"

    def __init__(self, dsn: str | Dsn, **options: Any) -> None:
        super().__init__(dsn, **options)
        context = ssl_context(self.options) if self.dsn.scheme == "https" else None
        self._conn = Connection(self.dsn, context)
        self._io = threading.Lock()  # one request at a time

    def _after_fork(self) -> None:
        super()._after_fork()
        self._io = threading.Lock()
        self._conn = Connection(self.dsn, self._conn.context)  # the parent's socket stays theirs

    def capture_envelope(self, envelope: Envelope) -> None:
        with self._lock:
            queued = self.engine.submit(envelope, self.clock())
        if queued:
            self._pump(deadline=None)

    def flush(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + self._timeout(timeout)
        for _ in range(self.engine.FLUSH_ROUNDS):
            with self._lock:
                mark = self.engine.flush_mark()
            if not self._pump(deadline, mark):
                return False
        return True

    def close(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + self._timeout(timeout)
        with self._lock:
            self.engine.close()
        for _ in range(self.engine.FLUSH_ROUNDS):
            with self._lock:
                mark = self.engine.flush_mark()
            if not self._pump(deadline, mark):
                break
        with self._lock:
            self.engine.abandon()
        self._conn.close()

    def _pump(self, deadline: float | None, mark: int | None = None) -> bool:
        """Send ready jobs; with a deadline, also wait for due retries until ``mark`` is done."""
        with self._io:
            while True:
                with self._lock:
                    if mark is not None and self.engine.done(mark):
                        return True
                    now = self.clock()
                    job = self.engine.next(now)
                if isinstance(job, Job):
                    self._conn.timeout = self._request_timeout(deadline)
                    deliver(self.engine, self._lock, self._conn, job, self.clock)
                    continue
                if deadline is None or job is None:
                    return mark is None
                wait = min(job - now, deadline - time.monotonic())
                if wait <= 0:
                    return False
                time.sleep(wait)

    def _request_timeout(self, deadline: float | None) -> float:
        if deadline is None:
            return self.options.timeout
        return max(0.001, min(self.options.timeout, deadline - time.monotonic()))
