"""What the engine's mixins (``answers.Answers``, ``spooling.Spooling``) use of ``Engine``,
declared once: the engine's state and the internals they call. Annotations only."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .actions import Attempt, Job
    from .client_reports import ClientReportLedger
    from .ratelimit import RateLimits
    from .retry import RetryPolicy
    from .spool import SpoolState
    from .stats import Books, Stats


class EngineParts:
    _ready: deque[Job]
    _delayed: list[tuple[float, int, Job]]
    _flying: dict[int, Attempt]
    queued_bytes: int
    books: Books
    stats: Stats
    reports: ClientReportLedger
    limits: RateLimits
    retry: RetryPolicy
    spool: SpoolState | None
    closed: bool
    stopped: bool

    if TYPE_CHECKING:

        def _finish(self, job: Job, keep_file: bool = False) -> None: ...
        def _next_seq(self) -> int: ...
        def _park(self, job: Job, now: float) -> bool: ...
