"""The engine's part that reads what happened to attempts (a mixin of ``Engine``).

``on_results`` takes a batch of (attempt, result) in one lock round: a server's answer
(``_on_response``: rate limits from every answer, then delivered or lost by status), a
network error (``_on_error``: retried with backoff, parked in the spool, or lost), ``None``
(nothing was left to send), ``REQUEUE`` (given back unsent) or a bug the driver caught.
Every item ends delivered or lost under one reason, once.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from . import request as _request
from .actions import REQUEUE, Attempt, Job, Result
from .envelope import Envelope, Item
from .errors import ProtocolError
from .http11 import Response
from .parts import EngineParts
from .request import Outcome


class Answers(EngineParts):
    def on_results(
        self, results: Iterable[tuple[Attempt, Result]], now: float, rand: float = 0.5
    ) -> None:
        """Account what happened to each attempt. ``rand`` is uniform in [0, 1): the retry
        jitter (spread per job, so that one draw serves a whole batch)."""
        given_back: list[Job] = []
        for attempt, result in results:
            if attempt.over:
                continue
            self._flying.pop(attempt.job.seq, None)
            job = attempt.job
            if attempt.error is not None:
                self.stats.last_error = attempt.error
            if result is REQUEUE:  # never sent: as if it had not been taken
                self.reports.restore(attempt.report)
                self.stats.requests -= 1
                job.attempts -= 1
                given_back.append(job)
                self.queued_bytes += job.size
                continue
            if attempt.dropped:
                for reason, items in attempt.dropped:
                    self.books.lose(reason, items)
                gone = {id(item) for _, items in attempt.dropped for item in items}
                attempt.items = [item for item in attempt.items if id(item) not in gone]
                self._keep_only(job, attempt.items)
            if result is None:  # nothing was left to send: no request after all
                self.reports.restore(attempt.report)
                self.stats.requests -= 1
                self._finish(job)
            elif isinstance(result, Response):
                self._on_response(attempt, result, now)
            elif isinstance(result, (OSError, ProtocolError)):
                self._on_error(attempt, result, now, (rand + job.seq * 0.6180339887) % 1.0)
            else:  # a bug on the way (the driver caught it): it costs the job, not the worker
                self.stats.last_error = f"internal error: {type(result).__name__}: {result}"
                self.reports.restore(attempt.report)
                self.books.lose("internal_sdk_error", attempt.items)
                self._finish(job)
        self._ready.extendleft(reversed(given_back))  # first again, in their order

    def _on_response(self, attempt: Attempt, response: Response, now: float) -> None:
        self.limits = self.limits.after(response.status, response.headers, now)
        outcome = _request.classify(response.status)
        if self.spool is not None:
            self.spool.recovered()
        stats = self.stats
        stats.consecutive_failures = 0
        if outcome is Outcome.DELIVERED:
            if attempt.items:  # not for an engine-made client-report-only envelope
                stats.deliver(attempt.items)
        else:
            stats.last_error = f"HTTP {response.status}"
            if outcome is Outcome.RATE_LIMITED:
                self.books.lose("ratelimit_backoff", attempt.items, report=False)
            else:
                self.books.lose("send_error", attempt.items)
        self._finish(attempt.job)

    def _on_error(self, attempt: Attempt, error: BaseException, now: float, rand: float) -> None:
        job = attempt.job
        self.reports.restore(attempt.report)  # not lost: it goes with a later request
        stats = self.stats
        stats.network_errors += 1
        stats.consecutive_failures += 1
        stats.last_error = f"{type(error).__name__}: {error}"
        delay = None
        if not self.closed and attempt.items:
            assert job.first_try is not None
            delay = self.retry.delay(job.attempts, job.first_try, now, rand)
        if delay is None:
            if not self._park(job, now):  # with a spool it waits on disk instead
                self.books.lose("network_error", attempt.items)
                self._finish(job)
            return
        stats.retries += 1
        heapq.heappush(self._delayed, (now + delay, job.seq, job))
        self.queued_bytes += job.size

    def _keep_only(self, job: Job, items: list[Item]) -> None:
        """What was dropped is counted once: later attempts and abandon see the rest only."""
        if len(items) != len(job.envelope.items):
            remaining = Envelope(job.envelope.headers, items)
            remaining._raw_header = job.envelope._raw_header
            job.envelope = remaining
