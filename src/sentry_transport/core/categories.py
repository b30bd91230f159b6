"""Data categories: what rate limits block and what client reports count.

``outcomes(item)`` answers "if this item is lost, what is counted": (category, quantity)
pairs per develop-docs. ``limit_categories(item)`` answers "which rate-limit categories
block this item". Client reports are never counted (no feedback loop).
"""

from __future__ import annotations

from typing import Any

from .envelope import Item

# Categories a server may name in X-Sentry-Rate-Limits that this client acts on.
KNOWN_CATEGORIES = frozenset(
    {
        "default", "error", "transaction", "security", "attachment", "attachment_item",
        "session", "internal", "profile", "profile_chunk", "profile_chunk_ui", "replay",
        "monitor", "feedback", "span", "log_item", "log_byte", "trace_metric",
        "trace_metric_byte", "metric_bucket",
    }
)  # fmt: skip

UI_PLATFORMS = frozenset({"cocoa", "android", "javascript"})

_SIMPLE: dict[str, str] = {
    "event": "error",
    "session": "session",
    "sessions": "session",
    "client_report": "internal",
    "profile": "profile",
    "replay_event": "replay",
    "replay_recording": "replay",
    "replay_video": "replay",
    "check_in": "monitor",
    "user_report": "feedback",
    "feedback": "feedback",
    "statsd": "metric_bucket",
    "metric_buckets": "metric_bucket",
    "security": "security",
    "raw_security": "security",
    "nel": "security",
}


def limit_categories(item: Item) -> tuple[str, ...]:
    """The categories whose rate limit blocks this item."""
    kind = item.type
    if kind == "transaction":
        return ("transaction",)
    if kind == "attachment":
        return ("attachment", "attachment_item")
    if kind == "log":
        return ("log_item", "log_byte")
    if kind == "trace_metric":
        return ("trace_metric", "trace_metric_byte")
    if kind == "span":
        return ("span",)
    if kind == "profile_chunk":
        return (_profile_chunk_category(item),)
    return (_SIMPLE.get(kind, "default"),)


def outcomes(item: Item) -> list[tuple[str, int]]:
    """What losing this item counts as: (category, quantity) pairs."""
    kind = item.type
    if kind == "client_report":
        return []
    if kind == "transaction":
        return [("transaction", 1), ("span", _span_count(item) + 1)]
    if kind == "attachment":
        return [("attachment", max(1, len(item.payload))), ("attachment_item", 1)]
    if kind == "log":
        return [("log_item", _item_count(item)), ("log_byte", len(item.payload))]
    if kind == "trace_metric":
        return [("trace_metric", _item_count(item)), ("trace_metric_byte", len(item.payload))]
    if kind == "span":
        return [("span", _item_count(item))]
    return [(limit_categories(item)[0], 1)]


def _item_count(item: Item) -> int:
    count = item.headers.get("item_count")
    if type(count) is int and count >= 0:
        return count
    return 1


def _span_count(item: Item) -> int:
    try:
        body: Any = item.json
    except (ValueError, RecursionError):
        return 0
    spans = body.get("spans") if isinstance(body, dict) else None
    return len(spans) if isinstance(spans, list) else 0


def _profile_chunk_category(item: Item) -> str:
    platform = item.headers.get("platform")
    if isinstance(platform, str) and platform in UI_PLATFORMS:
        return "profile_chunk_ui"
    return "profile_chunk"
