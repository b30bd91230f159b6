"""The threaded transport (the default): background delivery that never blocks the caller.

``capture_envelope`` takes the lock, queues the envelope (or counts it lost when the queue
is full in envelopes or bytes), wakes an idle worker or starts one, and returns. Workers
(up to ``max_connections``, started on demand) each own one keep-alive connection, so that
many requests are in flight at once; JSON encoding and compression run on them.

Fork safety: a child process starts with an empty queue, fresh locks and no workers, and
never sends what its parent had queued. A clean interpreter exit closes every open threaded
transport within its ``shutdown_timeout``.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import Any

from .._blocking import Connection, deliver
from .._dsn import Dsn
from .._engine import Job
from .._envelope import Envelope
from .._tls import ssl_context
from .._transport import EngineTransport


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
        self._workers: list[threading.Thread] = []
        self._connections: set[Connection] = set()
        self._idle = 0
        self._stopping = False
        self._pid = os.getpid()

    # -- caller side --------------------------------------------------------------------------

    def capture_envelope(self, envelope: Envelope) -> None:
        if self._pid != os.getpid():  # forked without os.register_at_fork having run
            self._after_fork()
        with self._lock:
            if not self.engine.submit(envelope, self.clock()):
                return
            if self._idle:
                self._work.notify()
            elif len(self._workers) < self.options.max_connections and not self._stopping:
                self._start_worker()

    def flush(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + self._timeout(timeout)
        with self._lock:
            for _ in range(self.engine.FLUSH_ROUNDS):
                if not self._wait(self.engine.flush_mark(), deadline):
                    return False
            return True

    def close(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + self._timeout(timeout)
        with self._lock:
            if self._stopping:
                return
            self.engine.close()
            for _ in range(self.engine.FLUSH_ROUNDS):
                if not self._wait(self.engine.flush_mark(), deadline):
                    break
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
        snapshot = super().stats()
        snapshot["workers"] = len(self._workers)
        return snapshot

    # -- workers ------------------------------------------------------------------------------

    def _wait(self, mark: int, deadline: float) -> bool:
        """Under the lock: wait until ``mark`` is done or the deadline passes."""
        if not self.engine.done(mark) and self._idle:
            self._work.notify_all()
        elif not self.engine.done(mark) and not self._workers and not self._stopping:
            self._start_worker()
        while not self.engine.done(mark):
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
            while True:
                with lock:
                    job = self._next_job()
                    if job is None:
                        return
                deliver(self.engine, lock, conn, job, self.clock)
                with lock:
                    self._done.notify_all()
        finally:
            conn.close()
            with lock:
                self._connections.discard(conn)

    def _next_job(self) -> Job | None:
        """Under the lock: the next job, waiting for one; None when the worker should stop."""
        while not self._stopping:
            now = self.clock()
            found = self.engine.next(now)
            if isinstance(found, Job):
                return found
            self._idle += 1
            try:
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
