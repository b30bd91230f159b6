"""The client-report ledger: ``(reason, category) -> quantity`` of items dropped.

Single owner: the engine's, under its driver's lock (or on its loop), like the rest of the
core. ``take()`` swaps the counts out and leaves the ledger empty, so two requests never
report the same loss. ``report_item(counts, timestamp)`` turns counts into the
``client_report`` item. Reasons are checked against the spec's list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .envelope import Item

REASONS = frozenset(
    {
        "queue_overflow", "cache_overflow", "ratelimit_backoff", "network_error",
        "sample_rate", "before_send", "event_processor", "send_error",
        "internal_sdk_error", "insufficient_data", "backpressure", "buffer_overflow",
        "ignored", "invalid",
    }
)  # fmt: skip

Counts = dict[tuple[str, str], int]


_REASON_SHAPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_reason(reason: str, strict: bool = True) -> str:
    """The reason, if the spec lists it; with ``strict=False`` also any name shaped like one
    (newer SDKs send reasons the list does not have yet, and Relay stores any string)."""
    if reason in REASONS or (not strict and _REASON_SHAPE.fullmatch(reason)):
        return reason
    raise ValueError(f"unknown discard reason {reason!r}; expected one of {sorted(REASONS)}")


class ClientReportLedger:
    """Counts of discarded items awaiting a client report."""

    def __init__(self) -> None:
        self._counts: Counts = {}

    def record(self, reason: str, category: str, quantity: int = 1, strict: bool = True) -> None:
        """Count ``quantity`` items of ``category`` dropped for ``reason`` (see check_reason)."""
        check_reason(reason, strict)
        if quantity <= 0:
            return
        key = (reason, category)
        self._counts[key] = self._counts.get(key, 0) + quantity

    def record_many(self, reason: str, outcomes: Iterable[tuple[str, int]]) -> None:
        """Count several ``(category, quantity)`` outcomes dropped for ``reason``."""
        for category, quantity in outcomes:
            self.record(reason, category, quantity)

    def take(self) -> Counts:
        """The counts so far, leaving the ledger empty."""
        counts, self._counts = self._counts, {}
        return counts

    def restore(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Put counts back (when a report could not be attached after all)."""
        for key, quantity in counts.items():
            self._counts[key] = self._counts.get(key, 0) + quantity

    def __bool__(self) -> bool:
        return bool(self._counts)

    def reset(self) -> None:
        """Forget everything (a forked child)."""
        self._counts = {}


def report_payload(counts: Mapping[tuple[str, str], int], timestamp: float) -> dict[str, Any]:
    return {
        "timestamp": timestamp,
        "discarded_events": [
            {"reason": reason, "category": category, "quantity": quantity}
            for (reason, category), quantity in sorted(counts.items())
        ],
    }


def report_item(counts: Mapping[tuple[str, str], int], timestamp: float) -> Item:
    return Item.client_report(report_payload(counts, timestamp))


def nested(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """``{(reason, category): n}`` -> ``{reason: {category: n}}``."""
    out: dict[str, dict[str, int]] = {}
    for (reason, category), quantity in sorted(counts.items()):
        out.setdefault(reason, {})[category] = quantity
    return out
