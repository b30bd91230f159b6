"""The delivery engine: every delivery decision, once, as values; no I/O, clock or lock.

A driver owns it (under its lock, or on its one loop thread) and pumps it:

    engine.submit(envelope, now, size)        queue it, or count it lost (bounds apply here)
    action = engine.next_action(now, limit)   Send(attempts) | Wait(until) | IDLE | STOP
    engine.encode(attempt, now)               JSON, size limits, compression, request bytes:
                                              pure (encode.py), done OUTSIDE the lock
    engine.on_results([(attempt, result)], now, rand)   result: Response | exception | None

The engine finishes or fails every job itself: a driver moves bytes and reports what
happened, nothing else. ``result`` is the server's ``Response``, the exception a network
error raised, ``None`` when ``encode`` left nothing to send, or ``REQUEUE`` when the driver
gave the attempt back unsent (its worker was cancelled).

Flush and close: ``begin_flush()`` then ``flushed(flush)``; ``close()`` stops accepting and
``abandon()`` ends the rest: what is queued AND what is in flight is counted lost there, and a
result reported after it is ignored, so the books are final when ``abandon`` returns.

Accounting: every item handed in ends up delivered or lost under one reason, once (``Books``).
Reading results lives in answers.py, the disk spool's part in spooling.py (both mixins).
"""
# The names a driver needs come from here (they are defined in actions.py).

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

from .actions import (
    IDLE,
    MAX_BATCH,
    REQUEUE,
    STOP,
    Action,
    Attempt,
    Flush,
    Job,
    Result,
    Send,
    Wait,
    goes_on,
    should_grow,
)
from .answers import Answers
from .client_reports import Counts
from .dsn import Dsn
from .encode import Encoder
from .envelope import Envelope
from .ratelimit import ALL, RateLimits
from .retry import RetryPolicy
from .spool import SpoolState
from .spooling import Spooling
from .stats import Books
from .version import CLIENT

UNHEALTHY_AFTER_FAILURES = 3


class Engine(Answers, Spooling):
    def __init__(self, dsn: Dsn, *, client: str = CLIENT) -> None:
        options = dsn.options
        self.dsn = dsn
        self.options = options
        self.client = client
        self.encoder = Encoder(dsn, client)
        self.encode = self.encoder.encode  # pure: drivers call it outside the lock
        self.retry = RetryPolicy(
            attempts=options.retry_attempts,
            backoff=options.retry_backoff,
            deadline=options.retry_deadline,
        )
        self.reset()

    def reset(self) -> None:
        """Start empty: at construction and in a forked child (nothing of the parent's)."""
        self.limits = RateLimits()
        self.books = Books(self.options.send_client_reports)
        self.stats = self.books.stats
        self.reports = self.books.reports
        self._ready: deque[Job] = deque()
        self._delayed: list[tuple[float, int, Job]] = []
        self._flying: dict[int, Attempt] = {}
        self.queued_bytes = 0
        self._seq = 0
        self._outstanding: list[int] = []  # heap of seqs not yet finished
        self._finished: set[int] = set()
        self._report_queued = False
        self._last_report: float | None = None
        self.spool = SpoolState() if self.options.spool_dir else None
        self.closed = False  # no longer accepting
        self.stopped = False  # abandoned: nothing more is sent or counted

    # -- caller side --------------------------------------------------------------------------

    def submit(self, envelope: Envelope, now: float, size: int | None = None) -> Job | None:
        """Queue an envelope; None when it was counted lost instead (full queue, closed).

        ``size`` is what it holds in bytes, if the driver measured it; else the payloads'
        lengths, with a bounded sampling estimate for JSON not yet encoded.
        """
        self.stats.accept(envelope.items)
        if size is None:
            size = sum(item.size_hint() for item in envelope.items)
        if (
            self.closed
            or self.queued >= self.options.queue_size
            or self.queued_bytes + size > self.options.queue_bytes
        ):
            self.books.lose("queue_overflow", envelope.items)
            return None
        job = Job(self._next_seq(), envelope, size)
        if self.spool is not None:
            self.spool.unwritten.append(job)  # sent once the spool's worker wrote it
        else:
            self._ready.append(job)
        self.queued_bytes += size
        return job

    def record_lost(
        self, reason: str, category: str, quantity: int = 1, strict: bool = True
    ) -> None:
        """A loss that happened before the transport (sampling, before_send, ...)."""
        self.books.record_lost(reason, category, quantity, strict)

    # -- worker side --------------------------------------------------------------------------

    def next_action(self, now: float, limit: int = 1) -> Action:
        """What a worker does now: send up to ``limit`` attempts, wait, idle, or stop."""
        if self.stopped:
            return STOP
        delayed = self._delayed
        if delayed and delayed[0][0] <= now:
            retries: list[Job] = []
            while delayed and delayed[0][0] <= now:
                retries.append(heapq.heappop(delayed)[2])
            self._ready.extendleft(reversed(retries))  # retries go first, in their order
        attempts: list[Attempt] = []
        ready = self._ready
        while ready and len(attempts) < limit:
            job = ready.popleft()
            self.queued_bytes -= job.size
            attempt = self._attempt(job, now)
            if attempt is not None:
                attempts.append(attempt)
        if attempts:
            return Send(attempts)
        if self._last_report is None:
            self._last_report = now  # the report timer starts with the first look
        if self.options.send_client_reports and self.reports:
            due = self._last_report + self.options.client_report_interval
            if due <= now:
                self._last_report = now
                attempt = self._attempt(self._report_job(), now)
                if attempt is not None:
                    return Send([attempt])
                due = now + self.options.client_report_interval
            return Wait(min(due, delayed[0][0]) if delayed else due)
        return Wait(delayed[0][0]) if delayed else IDLE

    def start(self, job: Job, now: float) -> Send | None:
        """Send this queued job now, ahead of the others (the sync transport sends the
        caller's own envelope); None if it is no longer queued or nothing of it is left."""
        try:
            self._ready.remove(job)
        except ValueError:
            return None
        self.queued_bytes -= job.size
        attempt = self._attempt(job, now)
        return None if attempt is None else Send([attempt])

    # -- flush and close ----------------------------------------------------------------------

    def begin_flush(self) -> Flush:
        """Queue pending client reports and mark everything submitted so far."""
        self._request_report()
        return Flush(self._seq)

    def flushed(self, flush: Flush) -> bool:
        """Whether a flush is over. When its mark is done and that cost losses, it queues
        their client report and waits for it too: one round only, so a server that keeps
        failing (a failed report's counts go back to the ledger) cannot keep a flush busy.
        """
        if not self.done(flush.mark):
            return False
        if flush.report_round and self.reports and self.options.send_client_reports:
            flush.report_round = False
            flush.mark = self.begin_flush().mark
            return self.done(flush.mark)
        return True

    def done(self, mark: int) -> bool:
        """Whether every job up to ``mark`` is delivered or counted lost."""
        return not self._outstanding or self._outstanding[0] > mark

    def close(self) -> None:
        """Stop accepting; what is queued may still be sent until ``abandon``."""
        self.closed = True
        self._request_report()

    def abandon(self) -> list[Attempt]:
        """End everything: count what is queued and what is in flight as lost. Returns the
        attempts that were in flight (the driver aborts their connections); results reported
        for them later are ignored, so the books are final now."""
        self.closed = self.stopped = True
        jobs = list(self._ready) + [entry[2] for entry in self._delayed]
        if self.spool is not None:
            jobs += self.spool.unwritten
            self.spool.unwritten.clear()
        self._ready.clear()
        self._delayed.clear()
        self.queued_bytes = 0
        for job in jobs:
            if job.spool is None:  # a spooled one waits on disk for the next process
                self.books.lose(
                    "network_error" if job.attempts else "queue_overflow", job.envelope.items
                )
            self._finish(job, keep_file=True)
        flying = list(self._flying.values())
        self._flying.clear()
        for attempt in flying:
            attempt.over = True
            if attempt.job.spool is None:
                self.books.lose("network_error", attempt.items)
            self._finish(attempt.job, keep_file=True)
        return flying

    # -- state --------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        spool = self.spool
        unwritten = 0 if spool is None else len(spool.unwritten) + spool.writing
        return len(self._ready) + len(self._delayed) + unwritten

    @property
    def pending(self) -> int:
        return self.queued + len(self._flying)

    def flying(self) -> list[Attempt]:
        """The attempts in flight (a driver that lost its workers gives them back)."""
        return list(self._flying.values())

    @property
    def ready(self) -> int:
        """Jobs that could be sent now (a backlog for the workers)."""
        return len(self._ready)

    def healthy(self, now: float) -> bool:
        return (
            not self.stopped
            and not self.limits.is_limited(ALL, now)
            and self.stats.consecutive_failures < UNHEALTHY_AFTER_FAILURES
            and self.queued < self.options.queue_size
        )

    def snapshot(self, now: float) -> dict[str, Any]:
        snapshot = self.stats.snapshot()
        snapshot["queued"] = self.queued
        snapshot["in_flight"] = len(self._flying)
        snapshot["rate_limits"] = self.limits.active(now)
        spool = self.spool
        snapshot["spooled"] = 0 if spool is None else spool.spooled
        if spool is not None:
            snapshot["spool"] = dict(spool.counters)
        return snapshot

    # -- internals ----------------------------------------------------------------------------

    def _attempt(self, job: Job, now: float) -> Attempt | None:
        """Start an attempt: rate limits, then the client report riding along. None (the
        job finished) when nothing is left to send."""
        if job.first_try is None:
            job.first_try = now
        job.attempts += 1
        items = job.envelope.items
        if self.limits.deadlines:
            items, blocked = self.limits.split(items, now)
            if blocked:
                self.books.lose("ratelimit_backoff", blocked)
                self._keep_only(job, items)
        report: Counts = {}
        if (
            self.options.send_client_reports
            and (items or job.internal)
            and self.reports
            and not self.limits.is_limited("internal", now)
        ):
            report = self.reports.take()  # while "internal" is limited the counts wait
            self._last_report = now
        if job.internal:
            self._report_queued = False
        if not items and not report:
            self._finish(job)
            return None
        attempt = Attempt(job, list(items), report)
        self._flying[job.seq] = attempt
        self.stats.requests += 1
        return attempt

    def _request_report(self) -> None:
        """Queue a client-report-only job now (at flush and close) instead of on the timer;
        queued at once so that a flush mark taken afterwards covers it."""
        if self.stopped:
            return  # nothing is sent any more
        if self.options.send_client_reports and self.reports and not self._report_queued:
            self._report_queued = True
            self._ready.append(self._report_job())

    def _report_job(self) -> Job:
        return Job(self._next_seq(), Envelope(), 0, internal=True)

    def _finish(self, job: Job, keep_file: bool = False) -> None:
        for item in job.envelope.items:
            item.forget_payload()  # (an envelope the application holds keeps no copy)
        if self.spool is not None:
            if job.spool is not None and not keep_file:
                self._release(job)  # its file goes
            self.spool.evicted.discard(job.seq)
        self._finished.add(job.seq)
        outstanding = self._outstanding
        while outstanding and outstanding[0] in self._finished:
            self._finished.discard(heapq.heappop(outstanding))

    def _next_seq(self) -> int:
        self._seq += 1
        heapq.heappush(self._outstanding, self._seq)
        return self._seq


__all__ = [
    "IDLE",
    "MAX_BATCH",
    "REQUEUE",
    "STOP",
    "Action",
    "Attempt",
    "Engine",
    "Flush",
    "Job",
    "Result",
    "Send",
    "Wait",
    "goes_on",
    "should_grow",
]
