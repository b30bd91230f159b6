"""The sync transport: sends in the caller's thread, blocking for one request.

``capture_envelope`` sends that envelope, and only it, on one keep-alive connection (with any
pending client report riding along). A network error leaves it queued for a retry, which
``flush``/``close`` send, sleeping for the backoff but never past their deadline.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .._blocking import Connection, deliver
from .._tls import ssl_context
from .._transport import EngineTransport
from ..core.dsn import Dsn
from ..core.engine import Flush, Job
from ..core.envelope import Envelope


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
        with self._io:
            with self._lock:
                job = self.engine.submit(envelope, self.clock())
                taken = job is not None and self.engine.take(job)
            if taken:
                assert job is not None
                self._conn.timeout = self.options.timeout
                deliver(self.engine, self._lock, self._conn, job, self.clock)

    def flush(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + self._timeout(timeout)
        with self._lock:
            flush = self.engine.begin_flush()
        return self._pump(deadline, flush)

    def close(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + self._timeout(timeout)
        with self._lock:
            self.engine.close()
            flush = self.engine.begin_flush()
        self._pump(deadline, flush)
        with self._lock:
            self.engine.abandon()
        self._conn.close()

    def _pump(self, deadline: float, flush: Flush) -> bool:
        """Send what is due, sleeping for retries, until the flush is over or the deadline."""
        with self._io:
            while True:
                with self._lock:
                    if self.engine.flushed(flush):
                        return True
                    now = self.clock()
                    job = self.engine.next(now)
                if isinstance(job, Job):
                    remaining = deadline - time.monotonic()
                    self._conn.timeout = max(0.001, min(self.options.timeout, remaining))
                    deliver(self.engine, self._lock, self._conn, job, self.clock)
                    continue
                wait = (
                    deadline - time.monotonic()
                    if job is None
                    else min(job - now, deadline - time.monotonic())
                )
                if wait <= 0:
                    return False
                time.sleep(wait)
