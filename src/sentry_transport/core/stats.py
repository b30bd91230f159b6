"""The books: what a transport accepted, delivered and lost, and why.

``Stats`` holds cumulative counters; ``Books`` adds the client-report ledger so that a loss is
counted once in both places (``stats()["lost"]`` always, the next client report unless the
server already counted it). Single owner, like the rest of the core: the engine's, under its
driver's lock. ``snapshot()`` is what ``Transport.stats()`` shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .categories import outcomes
from .client_reports import ClientReportLedger, check_reason, nested
from .envelope import Item

EVENT_TYPES = frozenset({"event", "transaction"})  # items counted in stats()["events"]
EVENT_CATEGORIES = frozenset({"error", "transaction"})  # ... and their categories when lost


def count_events(items: Iterable[Item]) -> int:
    count = 0
    for item in items:
        if item.headers.get("type") in EVENT_TYPES:
            count += 1
    return count


class Stats:
    """Cumulative counters."""

    def __init__(self) -> None:
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
        self.accepted += 1
        self.events_accepted += count_events(items)

    def deliver(self, items: list[Item]) -> None:
        self.delivered += 1
        self.events_delivered += count_events(items)

    def lose(self, reason: str, counted: list[tuple[str, int]], handed_in: bool = True) -> None:
        """Count a loss; ``handed_in`` is False for losses before the transport."""
        lost = self.lost
        for category, quantity in counted:
            key = (reason, category)
            lost[key] = lost.get(key, 0) + quantity
            if handed_in and category in EVENT_CATEGORIES:
                self.events_lost += quantity

    def snapshot(self) -> dict[str, Any]:
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


class Books:
    """Stats plus the client-report ledger; every loss goes through ``lose``."""

    def __init__(self, send_client_reports: bool) -> None:
        self.report = send_client_reports
        self.stats = Stats()
        self.reports = ClientReportLedger()

    def lose(self, reason: str, items: Iterable[Item], report: bool = True) -> None:
        counted: list[tuple[str, int]] = []
        for item in items:
            counted.extend(outcomes(item))
        if not counted:
            return
        self.stats.lose(reason, counted)
        if report and self.report:
            self.reports.record_many(reason, counted)

    def record_lost(
        self, reason: str, category: str, quantity: int = 1, strict: bool = True
    ) -> None:
        """A loss that happened before the transport (sampling, before_send, ...).
        ``strict=False`` accepts a reason outside the spec's list (see check_reason)."""
        check_reason(reason, strict)
        if quantity <= 0 or category == "internal":
            return
        self.stats.lose(reason, [(category, quantity)], handed_in=False)
        if self.report:
            self.reports.record(reason, category, quantity, strict)
