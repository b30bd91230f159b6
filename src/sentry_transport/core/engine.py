"""The delivery engine: every delivery decision, once, with no I/O and no clock.

Drivers (sync, threaded, asyncio, ...) pump it:

    engine.submit(envelope, now)        caller side: queue it or count it lost
    job = engine.next(now)              Job -> send it; float -> nothing before then; None -> idle
    attempt = engine.prepare(job, now)  rate limits, size limits, client report, request bytes
    engine.on_response(attempt, status, headers, now)   or   engine.on_error(attempt, exc, now)

``submit``/``next``/``on_*``/``abandon`` mutate the queue: a driver calls them under its own
lock (or on its one event-loop thread). ``prepare`` only reads the immutable rate-limit state
and the thread-safe ledgers, so drivers call it outside the lock, off the caller's thread:
that is where JSON encoding and compression happen.

Accounting: every item handed in ends up delivered or lost under one reason, counted in
``stats`` (always) and in the client-report ledger (unless the server counted it: a 429, or
the item is itself a client report).
"""

from __future__ import annotations

import heapq
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import compress as _compress
from . import limits as _limits
from . import request as _request
from .categories import outcomes
from .client_reports import ClientReportLedger, check_reason, nested, report_item
from .dsn import Dsn
from .envelope import Envelope, Item
from .ratelimit import ALL, Headers, RateLimits
from .request import Outcome, Request
from .retry import RetryPolicy
from .version import CLIENT

EVENT_TYPES = frozenset({"event", "transaction"})  # items counted in stats()["events"]
EVENT_CATEGORIES = frozenset({"error", "transaction"})  # ... and their categories when lost
UNHEALTHY_AFTER_FAILURES = 3
# Connections beyond BASE_CONNECTIONS only pay off when the server's latency, not the
# client's CPU, is what limits: grow past it only while round trips take longer than this.
BASE_CONNECTIONS = 2
SLOW_ROUND_TRIP = 0.002


def should_add_connection(
    connections: int, idle: int, backlog: int, round_trip: float, limit: int
) -> bool:
    """Whether a driver should open one more connection (start a worker) now."""
    if backlog <= 0 or idle > 0 or connections >= limit:
        return False
    return connections < BASE_CONNECTIONS or round_trip > SLOW_ROUND_TRIP


@dataclass(eq=False)
class Job:
    seq: int
    envelope: Envelope
    size: int
    internal: bool = False  # a client-report-only envelope made by the engine
    attempts: int = 0
    first_try: float | None = None


@dataclass(eq=False)
class Flush:
    """What a flush (or close) waits for: a mark, then one more round for a client report."""

    mark: int
    report_round: bool = True


@dataclass(eq=False)
class Attempt:
    job: Job
    request: Request
    items: list[Item]  # the job's items in this request (not the attached client report)
    report: dict[tuple[str, str], int] = field(default_factory=dict)


class Stats:
    """Cumulative counters (thread-safe); ``snapshot()`` is what ``Transport.stats()`` shows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted = 0  # envelopes handed to capture_envelope
        self.delivered = 0  # envelopes the server answered 2xx
        self.events_accepted = 0  # event + transaction items handed in
        self.events_delivered = 0
        self.events_lost = 0  # event + transaction items the transport lost (not record_lost)
        self.lost: dict[tuple[str, str], int] = {}
        self.requests = 0
        self.network_errors = 0
        self.retries = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None

    def accept(self, items: list[Item]) -> None:
        """An envelope with these items was handed in."""
        events = _count_events(items)
        with self.lock:
            self.accepted += 1
            self.events_accepted += events

    def deliver(self, items: list[Item]) -> None:
        """An envelope with these items was delivered."""
        events = _count_events(items)
        with self.lock:
            self.delivered += 1
            self.events_delivered += events

    def lose(self, reason: str, counted: list[tuple[str, int]], handed_in: bool = True) -> None:
        """Count a loss; ``handed_in`` is False for losses before the transport."""
        with self.lock:
            for category, quantity in counted:
                key = (reason, category)
                self.lost[key] = self.lost.get(key, 0) + quantity
                if handed_in and category in EVENT_CATEGORIES:
                    self.events_lost += quantity

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "accepted": self.accepted,
                "delivered": self.delivered,
                "lost": nested(self.lost),
                "events": {
                    "accepted": self.events_accepted,
                    "delivered": self.events_delivered,
                    "lost": self.events_lost,
                },
                "requests": self.requests,
                "network_errors": self.network_errors,
                "retries": self.retries,
                "last_error": self.last_error,
            }


class Engine:
    def __init__(
        self,
        dsn: Dsn,
        *,
        rand: Callable[[], float] = random.random,
        client: str = CLIENT,
    ) -> None:
        options = dsn.options
        self.dsn = dsn
        self.options = options
        self.client = client
        self.encoding = _compress.resolve(options.compression)
        self.retry = RetryPolicy(
            attempts=options.retry_attempts,
            backoff=options.retry_backoff,
            deadline=options.retry_deadline,
        )
        self.rand = rand
        self.reset()

    def reset(self) -> None:
        """Start empty: at construction and in a forked child (nothing of the parent's)."""
        self.limits = RateLimits()
        self.reports = ClientReportLedger()
        self.stats = Stats()
        self._ready: deque[Job] = deque()
        self._delayed: list[tuple[float, int, Job]] = []
        self._queued_bytes = 0
        self._in_flight = 0
        self._seq = 0
        self._outstanding: list[int] = []  # heap of seqs not yet finished
        self._finished: set[int] = set()
        self._report_queued = False
        self._last_report: float | None = None
        self.closed = False

    # -- caller side --------------------------------------------------------------------------

    def submit(self, envelope: Envelope, now: float) -> Job | None:
        """Queue an envelope; None when it was counted lost instead (full queue, closed)."""
        self.stats.accept(envelope.items)
        # JSON not yet encoded counts by a bounded sampling estimate of its size
        size = sum(item.size_hint() for item in envelope.items)
        if (
            self.closed
            or len(self._ready) + len(self._delayed) >= self.options.queue_size
            or self._queued_bytes + size > self.options.queue_bytes
        ):
            self.lose("queue_overflow", envelope.items)
            return None
        job = Job(self._next_seq(), envelope, size)
        self._enqueue(job)
        return job

    def take(self, job: Job) -> bool:
        """Start this queued job now, ahead of the others (the sync transport sends the
        caller's own envelope); False if it is no longer queued."""
        try:
            self._ready.remove(job)
        except ValueError:
            return False
        self._queued_bytes -= job.size
        self._in_flight += 1
        return True

    def request_report(self) -> None:
        """Queue a client-report-only job now (at flush and close) instead of on the timer.

        Queued at once so that a flush mark taken afterwards covers it.
        """
        if self.options.send_client_reports and self.reports and not self._report_queued:
            self._report_queued = True
            self._ready.append(Job(self._next_seq(), Envelope(), 0, internal=True))

    # -- worker side --------------------------------------------------------------------------

    def next(self, now: float) -> Job | float | None:
        """The job to send now, else when to look again (a time), else None (idle)."""
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            job = heapq.heappop(delayed)[2]
            self._ready.appendleft(job)
        if self._ready:
            job = self._ready.popleft()
            self._queued_bytes -= job.size
            self._in_flight += 1
            if job.internal:
                self._report_queued = False
                self._last_report = now
            return job
        if self._last_report is None:
            self._last_report = now  # the report timer starts with the first look
        if self.options.send_client_reports and self.reports:
            due = self._last_report + self.options.client_report_interval
            if due <= now:
                self._last_report = now
                self._in_flight += 1
                return Job(self._next_seq(), Envelope(), 0, internal=True)
            return min(due, delayed[0][0]) if delayed else due
        return delayed[0][0] if delayed else None

    def prepare(self, job: Job, now: float) -> Attempt | None:
        """The request for a job, after rate and size limits; None when nothing is left to send.

        Safe to call outside the driver's lock. A None means the job is over: the driver
        must still call ``finish(job)``.
        """
        if job.first_try is None:
            job.first_try = now
        job.attempts += 1
        if self.limits.deadlines:
            allowed, blocked = self.limits.split(job.envelope.items, now)
        else:
            allowed, blocked = job.envelope.items, []
        if blocked:
            self.lose("ratelimit_backoff", blocked)
        items: list[Item] = []
        for item in allowed:
            try:
                item.payload  # noqa: B018 -- encode JSON payloads here, off the caller's thread
            except (TypeError, ValueError, RecursionError):
                self.lose("internal_sdk_error", [item])
                continue
            items.append(item)
        if items:
            candidate = Envelope(job.envelope.headers, items)
            too_big = {v.index for v in _limits.check(candidate)}
            if too_big:
                self.lose("send_error", [items[i] for i in sorted(too_big)])
                items = [item for i, item in enumerate(items) if i not in too_big]
        if len(items) != len(job.envelope.items):
            # What was dropped is counted once: later attempts and abandon() see the rest only.
            remaining = Envelope(job.envelope.headers, items)
            remaining._raw_header = job.envelope._raw_header
            job.envelope = remaining
        report: dict[tuple[str, str], int] = {}
        if (
            self.options.send_client_reports
            and (items or job.internal)
            and not self.limits.is_limited("internal", now)
        ):
            report = self.reports.take()  # while "internal" is limited the counts wait
        if not items and not report:
            return None
        body_items = list(items)
        if report:
            body_items.append(report_item(report, round(now, 3)))
        envelope = Envelope(job.envelope.headers if items else {}, body_items)
        envelope._raw_header = job.envelope._raw_header if items else None
        request = _request.build(
            envelope,
            self.dsn,
            now,
            self.encoding,
            self.options.compression_level,
            self.options.compression_threshold,
            self.client,
        )
        if _limits.body_too_large(len(request.body)):
            self.lose("send_error", items)
            return None
        with self.stats.lock:
            self.stats.requests += 1
        return Attempt(job, request, items, report)

    def on_response(self, attempt: Attempt, status: int, headers: Headers, now: float) -> Outcome:
        self.limits = self.limits.update(status, headers, now).pruned(now)
        outcome = _request.classify(status)
        stats = self.stats
        with stats.lock:
            stats.consecutive_failures = 0
            if outcome is not Outcome.DELIVERED:
                stats.last_error = f"HTTP {status}"
        if outcome is Outcome.DELIVERED:
            if attempt.items:  # not for an engine-made client-report-only envelope
                stats.deliver(attempt.items)
        elif outcome is Outcome.RATE_LIMITED:
            self.lose("ratelimit_backoff", attempt.items, report=False)
        else:
            self.lose("send_error", attempt.items)
        self.finish(attempt.job)
        return outcome

    def on_error(self, attempt: Attempt, error: BaseException, now: float) -> float | None:
        """A network error: returns the retry time, or None when the items were counted lost."""
        job = attempt.job
        if attempt.report:
            self.reports.restore(attempt.report)  # not lost: it goes with a later request
        with self.stats.lock:
            self.stats.network_errors += 1
            self.stats.consecutive_failures += 1
            self.stats.last_error = f"{type(error).__name__}: {error}"
        delay = None
        if not self.closed and attempt.items:
            assert job.first_try is not None
            delay = self.retry.delay(job.attempts, job.first_try, now, self.rand())
        if delay is None:
            self.lose("network_error", attempt.items)
            self.finish(job)
            return None
        with self.stats.lock:
            self.stats.retries += 1
        self._in_flight -= 1
        heapq.heappush(self._delayed, (now + delay, job.seq, job))
        self._queued_bytes += job.size
        return now + delay

    def fail(self, job: Job, error: BaseException) -> None:
        """An unexpected error while handling a job: count its items, end the job."""
        with self.stats.lock:
            self.stats.last_error = f"internal error: {type(error).__name__}: {error}"
        self.lose("internal_sdk_error", job.envelope.items)
        self.finish(job)

    def finish(self, job: Job) -> None:
        """A job is over (delivered or counted lost)."""
        self._in_flight -= 1
        self._finished.add(job.seq)
        outstanding = self._outstanding
        while outstanding and outstanding[0] in self._finished:
            self._finished.discard(heapq.heappop(outstanding))

    # -- flush and close ----------------------------------------------------------------------

    def mark(self) -> int:
        """A flush mark: everything submitted so far."""
        return self._seq

    def begin_flush(self) -> Flush:
        """Queue pending client reports and mark everything submitted so far."""
        self.request_report()
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

    @property
    def pending(self) -> int:
        return len(self._ready) + len(self._delayed) + self._in_flight

    @property
    def queued(self) -> int:
        return len(self._ready) + len(self._delayed)

    def close(self) -> None:
        """Stop accepting; what is queued may still be sent until ``abandon``."""
        self.closed = True
        self.request_report()

    def abandon(self) -> None:
        """Count everything still queued as lost (the close deadline passed)."""
        jobs = list(self._ready) + [entry[2] for entry in self._delayed]
        self._ready.clear()
        self._delayed.clear()
        self._queued_bytes = 0
        for job in jobs:
            self.lose("network_error" if job.attempts else "queue_overflow", job.envelope.items)
            self._in_flight += 1  # finish() balances in-flight for every job
            self.finish(job)

    # -- accounting ---------------------------------------------------------------------------

    def lose(self, reason: str, items: list[Item], report: bool = True) -> None:
        counted: list[tuple[str, int]] = []
        for item in items:
            counted.extend(outcomes(item))
        if not counted:
            return
        self.stats.lose(reason, counted)
        if report and self.options.send_client_reports:
            self.reports.record_many(reason, counted)

    def record_lost(self, reason: str, category: str, quantity: int = 1) -> None:
        """A loss that happened before the transport (sampling, before_send, ...)."""
        check_reason(reason)
        if quantity <= 0 or category == "internal":
            return
        self.stats.lose(reason, [(category, quantity)], handed_in=False)
        if self.options.send_client_reports:
            self.reports.record(reason, category, quantity)

    def healthy(self, now: float) -> bool:
        return (
            not self.limits.is_limited(ALL, now)
            and self.stats.consecutive_failures < UNHEALTHY_AFTER_FAILURES
            and self.queued < self.options.queue_size
        )

    def snapshot(self, now: float) -> dict[str, Any]:
        snapshot = self.stats.snapshot()
        snapshot["queued"] = self.queued
        snapshot["in_flight"] = self._in_flight
        snapshot["rate_limits"] = self.limits.active(now)
        return snapshot

    # -- internals ----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        heapq.heappush(self._outstanding, self._seq)
        return self._seq

    def _enqueue(self, job: Job) -> None:
        self._ready.append(job)
        self._queued_bytes += job.size


def _count_events(items: list[Item]) -> int:
    return sum(1 for item in items if item.headers.get("type") in EVENT_TYPES)
