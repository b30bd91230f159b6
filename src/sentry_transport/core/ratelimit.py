"""Rate-limit state, updated from responses, per develop-docs "Rate Limiting".

``RateLimits`` is immutable: ``update(status, headers, now)`` returns the new state.
Order of rules: ``X-Sentry-Rate-Limits`` on every status; if absent and the status is 429,
``Retry-After`` (seconds, fractional, or an HTTP date) for all categories; if neither, 60 s
for all. The longer of an old and a new deadline wins. Unknown categories are ignored, and so
is a limit naming only unknown ones. A malformed limit is skipped, never raised; a 429 whose
header holds no limit that can be read is a 429 without one (Retry-After, or 60 s).

No limit lasts longer than ``MAX_LIMIT`` (one hour) from the answer that set it: a server (or
a proxy in front of it) that says ``Retry-After: 1e308`` would otherwise stop delivery for
the life of the process. After an hour one request goes out; a server still limiting us
answers 429 again and sets the next hour, so the cost of the cap is one request an hour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import MappingProxyType

from .categories import KNOWN_CATEGORIES, limit_categories
from .envelope import Item

DEFAULT_RETRY_AFTER = 60.0
MAX_LIMIT = 3600.0  # seconds: the longest a single answer can limit us for
ALL = "*"  # the key under which a limit on every category is kept
_HEADER = "X-Sentry-Rate-Limits"

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def header(headers: Headers, name: str) -> str | None:
    """First value of a header, case-insensitively, from a mapping or (name, value) pairs."""
    pairs = headers if type(headers) is tuple else _pairs(headers)  # (answers: tuples)
    lowered = name.lower()
    for key, value in pairs:
        if key.lower() == lowered:
            return value
    return None


def _pairs(headers: Headers) -> Iterable[tuple[str, str]]:
    return headers.items() if isinstance(headers, Mapping) else headers


@dataclass(frozen=True)
class RateLimits:
    """Deadlines (unix seconds) per category; ``ALL`` holds the limit on every category."""

    deadlines: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def update(self, status: int, headers: Headers, now: float) -> RateLimits:
        """The state after a response: its limits merged in (the longer deadline wins)."""
        new: dict[str, float] = {}
        raw = header(headers, _HEADER)
        limits, readable = _read_limits(raw) if raw is not None else ([], False)
        for category, seconds in limits:
            _keep_longer(new, category, now + min(seconds, MAX_LIMIT))
        # An empty header is no header, and so is one with no limit in it that can be read:
        # a 429 still backs off. (A limit naming only unknown categories was read: ignored.)
        if status == 429 and not readable:
            retry_after = parse_retry_after(header(headers, "Retry-After"), now)
            seconds = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
            _keep_longer(new, ALL, now + min(seconds, MAX_LIMIT))
        if not new:
            return self
        merged = dict(self.deadlines)
        for category, deadline in new.items():
            _keep_longer(merged, category, deadline)
        return RateLimits(MappingProxyType(merged))

    def after(self, status: int, headers: Headers, now: float) -> RateLimits:
        """``update`` then ``pruned``: the state after a response, at ``now``."""
        if not self.deadlines and status != 429 and header(headers, _HEADER) is None:
            return self  # the usual: nothing limited, and nothing new
        return self.update(status, headers, now).pruned(now)

    def limited_until(self, category: str, now: float) -> float | None:
        """When the limit on ``category`` lifts, or None if it is not limited at ``now``."""
        deadline = max(self.deadlines.get(category, 0.0), self.deadlines.get(ALL, 0.0))
        return deadline if deadline > now else None

    def is_limited(self, category: str, now: float) -> bool:
        """Whether ``category`` (or every category) is limited at ``now``."""
        return self.limited_until(category, now) is not None

    def item_allowed(self, item: Item, now: float) -> bool:
        """Whether none of the item's categories is limited at ``now``."""
        return not any(self.is_limited(c, now) for c in limit_categories(item))

    def split(self, items: Iterable[Item], now: float) -> tuple[list[Item], list[Item]]:
        """(items that may go now, items a rate limit blocks)."""
        allowed: list[Item] = []
        blocked: list[Item] = []
        for item in items:
            (allowed if self.item_allowed(item, now) else blocked).append(item)
        return allowed, blocked

    def next_lift(self, now: float) -> float | None:
        """The earliest time a current limit lifts, or None when nothing is limited."""
        active = [d for d in self.deadlines.values() if d > now]
        return min(active) if active else None

    def active(self, now: float) -> dict[str, float]:
        """Category -> seconds left, for the limits in force (for stats and logs)."""
        return {c: d - now for c, d in self.deadlines.items() if d > now}

    def pruned(self, now: float) -> RateLimits:
        """The same state without the limits that lifted by ``now``."""
        if not self.deadlines or all(d > now for d in self.deadlines.values()):
            return self
        return RateLimits(MappingProxyType({c: d for c, d in self.deadlines.items() if d > now}))


def _keep_longer(target: dict[str, float], category: str, deadline: float) -> None:
    if deadline > target.get(category, float("-inf")):
        target[category] = deadline


def parse_rate_limits(value: str) -> list[tuple[str, float]]:
    """``X-Sentry-Rate-Limits`` -> (category or ALL, seconds) pairs; bad limits skipped."""
    return _read_limits(value)[0]


def _read_limits(value: str) -> tuple[list[tuple[str, float]], bool]:
    """``parse_rate_limits``, and whether any limit in ``value`` could be read (its seconds
    and categories), whether or not it names a category known here."""
    result: list[tuple[str, float]] = []
    readable = False
    for limit in value.split(","):
        fields = [f.strip() for f in limit.split(":")]
        if len(fields) < 2 or not fields[0]:
            continue
        seconds = _seconds(fields[0])
        if seconds is None:
            continue
        readable = True
        categories = [c.strip() for c in fields[1].split(";") if c.strip()]
        if not categories:
            result.append((ALL, seconds))
            continue
        namespaces = fields[4] if len(fields) > 4 else ""
        for category in categories:
            if category not in KNOWN_CATEGORIES:
                continue
            if category == "metric_bucket" and namespaces:
                names = {n.strip() for n in namespaces.split(";") if n.strip()}
                if names and "custom" not in names:
                    continue
            result.append((category, seconds))
    return result, readable


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: a number of seconds or an HTTP date."""
    if value is None:
        return None
    seconds = _seconds(value.strip())
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _seconds(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds
