"""The workers: capture, the worker loop, growth and sending, written once for every runtime.

``Workers`` (the base of ``pump.Pump``, which adds the lifecycle) owns a transport's engine
(all policy) and drives it over a runtime (threads, asyncio, gevent, ...; see runtime/). Its
loops are generators that yield the calls they need (``(callable, *args)``: a wait, an
encode, the connection's socket calls) and the runtime's runner executes them: blocking for
threads and green threads, awaited on an event loop.

Capture never waits on the workers: below ``INBOX_UNMEASURED`` envelopes it is a lock-free
append to the inbox; past that (the workers are behind) the caller measures its own envelope
and submits it under the lock, so the bounds hold from the moment of capture. A worker moves
the inbox into the engine (measuring outside the lock), asks the engine what to do, encodes
outside the lock, sends, and reports every result in one lock round. Logging: one warning
when delivery starts failing, one info when it recovers (delivery.py), debug per request.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

from .core import proxy as _proxy
from .core.actions import SLOW_ROUND_TRIP
from .core.connection import HttpConnection
from .core.dsn import Dsn
from .core.engine import (
    MAX_BATCH,
    STOP,
    Engine,
    Job,
    Send,
    Wait,
)
from .core.envelope import Envelope
from .core.pipelining import PIPELINE_BYTES, Pipelining
from .core.spool import project_of
from .growth import Growth
from .io.spool_files import SpoolDir
from .sending import Connection, Sender, Steps
from .spooler import SpoolWorker

INBOX_UNMEASURED = 64  # envelopes held before they are measured, at the most
DRAIN_BATCH = 256  # envelopes a worker moves from the inbox into the engine in one round

wall = time.time  # the engine's clock (rate limits, sent_at)
monotonic = time.monotonic  # deadlines


class Workers(Growth, Sender):
    def __init__(self, dsn: Dsn, runtime: Any) -> None:
        self.dsn = dsn
        self.options = dsn.options
        self.runtime = runtime
        self.engine = Engine(dsn)
        self.proxy = _proxy.select(dsn, os.environ)
        # What the server does with pipelined requests, learned once for the transport (a
        # runtime with an HTTP client of its own sends one request at a time per connection).
        own = getattr(runtime, "connection", None) is not None
        self.pipelining = Pipelining(1 if own else self.options.pipeline_depth)
        self.generation = 0  # bumped by a fork or a rebuild: older workers stop, report nothing
        self.spool: SpoolWorker | None = None
        runtime.attach(self)
        self._contexts()
        self._fresh()
        if self.options.spool_dir:
            self.spool = self._spool_worker()

    def _contexts(self) -> None:
        https = self.dsn.scheme == "https"
        self.tls = self.runtime.tls(self.options) if https else None
        use_proxy_tls = self.proxy is not None and self.proxy.scheme == "https"
        self.proxy_tls = self.runtime.proxy_tls() if use_proxy_tls else None

    def _fresh(self) -> None:
        self.lock = self.runtime.lock()  # never held across I/O or a wait
        self.io_lock = self.runtime.lock()  # inline runtimes: one request at a time
        self.inbox: deque[Envelope] = deque()
        self.workers = 0
        self.idle: list[Any] = []  # wakes of workers waiting for work
        self.watchers: list[Any] = []  # wakes of flush/close waiting for progress
        self.connections: set[Connection] = set()
        self.draining = False
        self.inline = self.runtime.inline
        self.inline_conn: Connection | None = None
        self._fresh_growth()
        self.failing: str | None = None  # what the last warning said is wrong
        self.pid = os.getpid()
        if self.spool is not None:
            self.spool.fresh()

    def _spool_worker(self) -> SpoolWorker:
        """The disk spool (its folder made and locked here: a bad one is a clear error)."""
        options = self.options
        assert options.spool_dir is not None
        dsn = self.dsn
        project = project_of(dsn.host, dsn.path_prefix, dsn.project_id)
        directory = SpoolDir(options.spool_dir, options.spool_bytes, options.spool_fsync, project)
        return SpoolWorker(self, directory)

    # -- capture (any thread) -----------------------------------------------------------------

    def capture(self, envelope: Envelope) -> None:
        engine, inbox = self.engine, self.inbox
        if not self.inline and not engine.closed and len(inbox) < INBOX_UNMEASURED:
            inbox.append(envelope)
            if self.spool is not None:  # written first, by the spool's worker
                self.spool.kick()
            elif self.idle or not self.workers:  # read after the append: see _work
                self._kick()
            else:
                waiting = len(inbox)
                if not waiting & (waiting - 1) and self._growth_due():  # 1, 2, 4, ... waiting
                    self._grow()
            return
        size = self.runtime.measure(envelope)
        kick: tuple[Any, bool] = (None, False)
        with self.lock:
            job = engine.submit(envelope, wall(), size)
            if job is not None and not self.inline and self.spool is None:
                kick = self._kicked()  # in the same lock round
        if job is None:
            return
        if self.inline:
            with self.io_lock:
                self.runtime.run(self._send_now(job))
        elif self.spool is not None:
            self.spool.kick()
        else:
            self._carry_out(*kick)

    def _kick(self) -> None:
        """Wake an idle worker, or start the first one."""
        with self.lock:
            kick = self._kicked()
        self._carry_out(*kick)

    def _kicked(self) -> tuple[Any, bool]:
        """Under the lock: (an idle worker's wake to set, or None; whether to start one)."""
        wake = self.idle.pop() if self.idle else None
        return wake, wake is None and self._may_start(first=True)

    def _carry_out(self, wake: Any, spawn: bool) -> None:
        if wake is not None:
            wake.set()
        elif spawn:
            self._spawn()

    def _spawn(self) -> None:
        try:
            started = self.runtime.spawn(self._work, f"sentry-transport-{self.workers}")
        except RuntimeError:  # no new threads at interpreter exit (Python 3.12.0-3.12.2)
            started = False
            self.inline = True  # flush and close send on the caller's thread
        if not started:  # (asyncio: no loop to run on yet)
            with self.lock:
                self.workers -= 1

    def never_started(self, work: Any = None) -> None:
        """The runtime dropped a worker before it ran (a task cancelled at the loop's end)."""
        if self.spool is not None and work == self.spool.loop:
            self.spool.never_started()
            return
        with self.lock:
            self.workers -= 1

    # -- workers ------------------------------------------------------------------------------

    def _connection(self) -> Connection:
        make = getattr(self.runtime, "connection", None)  # a whole HTTP client's, if it has one
        if make is not None:
            made: Connection = make(self)
            return made
        return HttpConnection(
            self.dsn,
            self.runtime.stream(),
            proxy=self.proxy,
            tls=self.tls,
            proxy_tls=self.proxy_tls,
            pipelining=self.pipelining,
            clock=monotonic,
        )

    def _work(self) -> Steps:
        """One worker: its own connection; runs until the transport stops."""
        generation = self.generation
        wake = self.runtime.wake()
        conn = self._connection()
        with self.lock:
            self.connections.add(conn)
        try:
            while generation == self.generation:
                yield from self._drain()
                chain = None
                with self.lock:
                    engine = self.engine
                    action = engine.next_action(wall(), self._batch())
                    if isinstance(action, Send):
                        grow = self._may_start(first=False)
                        if engine.ready and self.idle:
                            chain = self.idle.pop()  # more work: a waiting peer takes some
                    elif action is STOP:
                        return
                    else:
                        wake.clear()
                        if wake not in self.idle:
                            self.idle.append(wake)
                        # the engine may have finished jobs without a send (rate limited)
                        watchers, self.watchers = self.watchers, []
                if isinstance(action, Send):
                    if chain is not None:
                        chain.set()
                    if grow:
                        self._spawn()
                    yield from self._send(conn, action.attempts)
                    continue
                for watcher in watchers:
                    watcher.set()
                # Counted idle first, then looked: no capture is missed. What a peer is
                # draining meanwhile (on another thread) is not for this worker: going round
                # would spin without yielding, and the peer wakes an idle worker when it is
                # done if the inbox still holds more.
                if self.undrained():
                    continue
                timeout = max(0.0, action.until - wall()) if isinstance(action, Wait) else None
                if not (yield (wake.wait, timeout)):
                    with self.lock:
                        if wake in self.idle:
                            self.idle.remove(wake)
        finally:
            with self.lock:
                if generation == self.generation:
                    self.workers -= 1
                    self.connections.discard(conn)
                    if wake in self.idle:
                        self.idle.remove(wake)
            conn.stream.close_now()

    def _batch(self) -> int:
        """Jobs to take this round, about PIPELINE_BYTES at most (large envelopes: a few at a
        time, so that encoding them comes in small steps). Against a fast server, a share of
        the backlog (the workers' CPU limits: each takes part). While round trips are slow or
        not yet measured (the server's latency limits), a full pipeline (one job without
        pipelining): a round trip costs the same for 1 request as for a full pipeline, so a
        backlog split evenly over the workers would go out as many part-filled pipelines,
        each a round trip."""
        engine = self.engine
        size = engine.queued_bytes // max(1, engine.queued)  # an average job's
        most = PIPELINE_BYTES // max(1, size)
        if not 0.0 < self.round_trip <= SLOW_ROUND_TRIP:
            return max(1, min(self.pipelining.depth, most))
        return max(1, min(MAX_BATCH, most, engine.ready // max(1, self.workers)))

    def undrained(self) -> bool:
        """Envelopes in the inbox that no drain is moving (a worker or the spool's may take
        them; what a drain in progress leaves, it wakes someone for)."""
        return bool(self.inbox) and not self.draining

    def _drain(self) -> Steps:
        """Move the inbox into the engine; sizes are measured outside the lock. One drain
        at a time: what is captured meanwhile waits in the inbox, and the drain wakes an idle
        worker (or the spool's) when it ends if there is any. ``measure_all`` may measure a
        part of the batch only (threads: ``DRAIN_BYTES`` of JSON): the rest goes back to the
        inbox's front, for the next drain (a peer's, woken, while this worker sends). Returns
        how many envelopes it moved."""
        inbox = self.inbox
        if not inbox:
            return 0
        with self.lock:
            if self.draining:
                return 0
            self.draining = True
        batch: list[Envelope] = []
        sizes: list[int] | None = None
        try:
            while inbox and len(batch) < DRAIN_BATCH:
                batch.append(inbox.popleft())
            sizes = yield (self.runtime.measure_all, batch)
        finally:
            wake = None
            moved = len(sizes) if sizes else len(batch)  # (failed: submitted unmeasured)
            with self.lock:
                self.draining = False
                now = wall()
                engine = self.engine
                for i, envelope in enumerate(batch[:moved]):
                    engine.submit(envelope, now, sizes[i] if sizes else None)
                rest = batch[moved:]  # not measured yet: first in line for the next drain
                if rest and engine.closed:  # (stopped meanwhile) no next drain: counted now
                    for envelope in rest:
                        engine.submit(envelope, now, 0)
                elif rest:  # (into the inbox of now: a rebuild makes a new one)
                    self.inbox.extendleft(reversed(rest))
                inbox = self.inbox
                if inbox and self.idle and self.spool is None:
                    wake = self.idle.pop()
            if wake is not None:
                wake.set()
            elif inbox and self.spool is not None:
                self.spool.kick()
        return moved

    def _send_now(self, job: Job) -> Steps:
        """Inline runtimes: send the caller's own envelope now (on disk first, if spooled)."""
        if self.spool is not None:
            yield from self.spool.round()
        with self.lock:
            action = self.engine.start(job, wall())
        if action is not None:
            yield from self._send(self._inline(), action.attempts)

    def _inline(self) -> Connection:
        if self.inline_conn is None:
            self.inline_conn = self._connection()
            self.connections.add(self.inline_conn)
        return self.inline_conn
