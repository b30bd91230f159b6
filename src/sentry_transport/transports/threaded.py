"""The threaded transport (the default): background delivery that never blocks the caller.

``capture_envelope`` only appends to an inbox (a deque: no lock, no allocation beyond the
node) and, if a worker is idle, wakes it. Workers move the inbox into the engine under the
lock, which is where the queue bounds (envelopes and bytes) are applied and overflow is
counted; every drain happens under the lock, so an envelope is always either in the inbox or
in the engine and ``flush`` never misses one. An inbox already ``queue_size`` long sends the
caller down the slow path (drain under the lock), so it stays bounded too.

Workers (up to ``max_connections``) each own one keep-alive connection; JSON encoding and
compression run on them. The first starts with the first capture; a worker that finds a
backlog and no idle peer starts the next one (the engine's ``should_add_connection``: past
two, only while round trips are slow), so threads grow with server latency, not with the
capture rate, and thread starts never run on the caller's thread after the first.

Fork safety: a child process starts with an empty queue and inbox, fresh locks and no
workers, and never sends what its parent had queued. A clean interpreter exit closes every
open threaded transport within its ``shutdown_timeout``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

from .._blocking import Connection, deliver
from .._tls import ssl_context
from .._transport import EngineTransport
from ..core.dsn import Dsn
from ..core.engine import Flush, Job, should_add_connection
from ..core.envelope import Envelope


class ThreadedTransport(EngineTransport):
    name = "threaded"

    def __init__(self, dsn: str | Dsn, **options: Any) -> None:
        super().__init__(dsn, **options)
        self._context = ssl_context(self.options) if self.dsn.scheme == "https" else None
        self._fresh_state()
        _OPEN.add(self)

    def _fresh_state(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # workers wait here for jobs
        self._done = threading.Condition(self._lock)  # flush/close wait here for progress
        self._inbox: deque[Envelope] = deque()
        self._workers: list[threading.Thread] = []
        self._connections: set[Connection] = set()
        self._idle = 0  # workers waiting for work (the only ones a capture must wake)
        self._round_trip = 0.0  # seconds the last delivery took (for growing the pool)
        self._stopping = False
        self._pid = os.getpid()

    # -- caller side --------------------------------------------------------------------------

    def capture_envelope(self, envelope: Envelope) -> None:
        if self._pid != os.getpid():  # forked without os.register_at_fork having run
            self._after_fork()
        inbox = self._inbox
        if len(inbox) >= self.options.queue_size or not self._workers:
            with self._lock:  # slow path: first capture, or a full inbox (counted there)
                inbox.append(envelope)
                self._drain()
                if not self._workers and not self._stopping:
                    self._start_worker()
                self._work.notify()
            return
        inbox.append(envelope)
        if self._idle:  # read after the append; see _next_job for why no wake-up is lost
            with self._lock:
                self._work.notify()

    def flush(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + self._timeout(timeout)
        with self._lock:
            self._drain()
            return self._wait(self.engine.begin_flush(), deadline)

    def close(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + self._timeout(timeout)
        with self._lock:
            if self._stopping:
                return
            self._drain()
            self.engine.close()
            self._wait(self.engine.begin_flush(), deadline)
            self.engine.abandon()
            self._stopping = True
            self._work.notify_all()
            connections = list(self._connections)
            workers = list(self._workers)
        for conn in connections:
            conn.abort()  # in-flight requests fail now and are counted lost
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        _OPEN.discard(self)

    def is_healthy(self) -> bool:
        return not self._stopping and super().is_healthy()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._drain()
        snapshot = super().stats()
        snapshot["workers"] = len(self._workers)
        return snapshot

    # -- workers ------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Under the lock: move the inbox into the engine (bounds and overflow apply here).

        JSON payloads are encoded here, on a worker (the caller only appended), so the byte
        bound counts their exact size; the encoding is kept for sending. One that cannot be
        encoded is left to the engine, which counts it as an internal error when preparing.
        """
        inbox, engine, now = self._inbox, self.engine, self.clock()
        while inbox:
            envelope = inbox.popleft()
            for item in envelope.items:
                with contextlib.suppress(TypeError, ValueError, RecursionError):
                    item.payload  # noqa: B018
            engine.submit(envelope, now)

    def _wait(self, flush: Flush, deadline: float) -> bool:
        """Under the lock: wait until the flush is over or the deadline passes."""
        while not self.engine.flushed(flush):
            if self.engine.queued:  # work for the workers (a report may just have been queued)
                if self._idle:
                    self._work.notify_all()
                elif not self._workers and not self._stopping:
                    self._start_worker()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._done.wait(remaining)
        return True

    def _start_worker(self) -> None:
        worker = threading.Thread(
            target=self._run, name=f"sentry-transport-{len(self._workers)}", daemon=True
        )
        self._workers.append(worker)
        worker.start()

    def _run(self) -> None:
        conn = Connection(self.dsn, self._context)
        lock = self._lock
        with lock:
            self._connections.add(conn)
        try:
            finished = False
            while True:
                with lock:
                    if finished:
                        self._done.notify_all()
                    job = self._next_job()
                    if job is None:
                        return
                    if should_add_connection(
                        len(self._workers),
                        self._idle,
                        self.engine.queued,
                        self._round_trip,
                        self.options.max_connections,
                    ):
                        self._start_worker()
                started = time.monotonic()
                deliver(self.engine, lock, conn, job, self.clock)
                self._round_trip = time.monotonic() - started
                finished = True
        finally:
            conn.close()
            with lock:
                self._connections.discard(conn)

    def _next_job(self) -> Job | None:
        """Under the lock: the next job, waiting for one; None when the worker should stop.

        A capture appends without the lock and notifies only if ``_idle`` (workers about to
        wait) is non-zero. So a worker counts itself idle first and looks at the inbox again
        after: a capture that came before the count is seen here, one after it notifies.
        """
        while not self._stopping:
            self._drain()
            now = self.clock()
            found = self.engine.next(now)
            if isinstance(found, Job):
                return found
            self._idle += 1
            try:
                if not self._inbox:
                    self._work.wait(None if found is None else max(0.0, found - now))
            finally:
                self._idle -= 1
        return None

    # -- fork ---------------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a child: forget the parent's queue, locks, workers and sockets."""
        super()._after_fork()
        self._fresh_state()


_OPEN: weakref.WeakSet[ThreadedTransport] = weakref.WeakSet()  # closed at interpreter exit


def _close_all_at_exit() -> None:
    for transport in list(_OPEN):
        transport.close(transport.options.shutdown_timeout)


atexit.register(_close_all_at_exit)
