"""Sending a worker's batch: encode, then pipelined or one request at a time, then one report.

``Sender`` is a part of ``workers.Workers`` (a mixin: the attributes it uses are the
workers'). After a failure the rest of a batch goes back to the engine (REQUEUE), which
decides it afresh; unreported attempts go back the same way when a worker is cancelled.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

from . import delivery
from .core.connection import HttpConnection
from .core.engine import REQUEUE, Attempt, Result, goes_on
from .core.request import Request

if TYPE_CHECKING:
    from .core.dsn import Dsn
    from .core.engine import Engine
    from .core.options import TransportOptions
    from .core.pipelining import Pipelining
    from .spooler import SpoolWorker

Steps = Generator[tuple[Any, ...], Any, Any]


class Connection(Protocol):
    """What a worker needs of its connection: core's HttpConnection, or a whole HTTP
    client's (``runtime.connection(pump)``: requests, urllib3)."""

    open: bool
    since: float
    stream: Any

    def exchange(self, request: Request, deadline: float) -> Steps: ...

    def abort(self) -> None: ...


CPU_WINDOW = 0.02  # seconds over which cpu_busy is measured, at the least

wall = time.time  # the engine's clock (rate limits, sent_at)
monotonic = time.monotonic  # deadlines


class Sender:
    # what it uses of Workers
    generation: int
    runtime: Any
    engine: Engine
    lock: Any
    watchers: list[Any]
    failing: str | None
    spool: SpoolWorker | None
    pipelining: Pipelining
    options: TransportOptions
    dsn: Dsn
    cpu_busy: float
    _cpu_mark: tuple[float, float]

    if TYPE_CHECKING:

        def _timed(self, seconds: float) -> None: ...

    def _send(self, conn: Connection, attempts: list[Attempt], deadline: float = 0.0) -> Steps:
        """Encode, send on ``conn`` (pipelined when it can), report every result in one round.

        After a failure the rest go back to the engine (REQUEUE), which decides them afresh:
        a 429's limits apply to them, a network error's backoff to the one that failed.
        """
        generation = self.generation
        timed = self._timed  # a round trip, as soon as its answer is read
        yield (self.runtime.encode, self.engine.encode, attempts, wall())
        results: list[tuple[Attempt, Result]] = []
        refused = self.pipelining.refused
        try:
            if isinstance(conn, HttpConnection) and len(attempts) > 1:
                yield from self._pipelined(conn, attempts, deadline, results, timed)
            else:
                yield from self._one_by_one(conn, attempts, deadline, results, timed)
        finally:
            # Unreported attempts go back: the rest of a batch after a failure, and all of them
            # when the worker is cancelled (asyncio.run cancels every task at the loop's end)
            # or killed. One cancelled mid-exchange may have reached the server already: it is
            # sent again (Sentry drops a duplicate event id); never counted twice here.
            if len(results) < len(attempts):
                reported = {id(attempt) for attempt, _ in results}
                results += [(a, REQUEUE) for a in attempts if id(a) not in reported]
            self._measure_cpu()
            if self.pipelining.refused != refused:
                delivery.log.info(
                    "sentry_transport: one request at a time to %s from now on: %s",
                    self.dsn.envelope_url,
                    self.pipelining.refused,
                )
            if generation == self.generation:
                self._report(results)

    def _measure_cpu(self) -> None:
        """``cpu_busy``: the process's CPU seconds per second over the last CPU_WINDOW or
        more. Reading the process's CPU clock sums every thread's time in the kernel (tens
        of us on a busy machine): once a window, not once a round."""
        now = monotonic()
        since, cpu_then = self._cpu_mark
        if now - since >= CPU_WINDOW:
            cpu = time.process_time()
            if cpu >= cpu_then:  # (a forked child's clock starts again from 0)
                self.cpu_busy = (cpu - cpu_then) / (now - since)
            self._cpu_mark = (now, cpu)

    def _pipelined(
        self,
        conn: HttpConnection,
        attempts: list[Attempt],
        deadline: float,
        results: list[tuple[Attempt, Result]],
        timed: Callable[[float], None],
    ) -> Steps:
        """Several requests in flight on ``conn``; those it leaves unanswered go back."""
        sending = []
        for attempt in attempts:
            if attempt.request is None:
                results.append((attempt, None))
            elif not attempt.over:
                sending.append(attempt)
        if not sending:
            return
        outcomes = yield from conn.pipeline(
            [attempt.request for attempt in sending],  # type: ignore[misc]
            self.options.timeout,
            deadline,
            goes_on,
            timed,  # each request that went out alone: the server's own time
        )
        results += zip(sending, outcomes, strict=False)

    def _one_by_one(
        self,
        conn: Connection,
        attempts: list[Attempt],
        deadline: float,
        results: list[tuple[Attempt, Result]],
        timed: Callable[[float], None],
    ) -> Steps:
        """One request at a time (a runtime's own HTTP client; a batch of one)."""
        for attempt in attempts:
            request = attempt.request
            if request is None:
                results.append((attempt, None))
                continue
            if attempt.over:
                break
            conn.since = begun = monotonic()
            limit = begun + self.options.timeout
            result: Result
            try:
                result = yield from conn.exchange(request, min(limit, deadline or limit))
                timed(monotonic() - begun)
            except Exception as exc:  # the engine tells a network error from a bug
                result = exc
            finally:
                conn.since = 0.0
            results.append((attempt, result))
            if not goes_on(result):
                break

    def _report(self, results: list[tuple[Attempt, Result]]) -> None:
        with self.lock:
            self.engine.on_results(results, wall(), random.random())
            watchers, self.watchers = self.watchers, []
            self.failing = delivery.log_results(self, results)
        for wake in watchers:
            wake.set()
        if self.spool is not None:
            self.spool.kick()  # files to remove (delivered), or parked ones to time
