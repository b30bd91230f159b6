"""Relay's size and count limits, checked before sending.

A breach makes Relay reject the WHOLE envelope (413), so the items that would cause one are
found here and dropped alone. ``check(envelope)`` (``check_items(items)``) returns the
indexes of those items with the limit each breaks; ``body_too_large(n)`` is the limit on the
compressed request body.
"""

from __future__ import annotations

from dataclasses import dataclass

from .envelope import Envelope, Item

KiB = 1024
MiB = 1024 * KiB

MAX_ENVELOPE = 200 * MiB
MAX_BODY = 20 * 1000 * 1000
MAX_EVENT = 1 * MiB
MAX_ATTACHMENT = 200 * MiB
MAX_ATTACHMENTS_TOTAL = 200 * MiB
MAX_ATTACHMENT_COUNT = 30
MAX_CONTAINER = 12 * MiB
MAX_LOG = 2 * MiB
MAX_SPAN = 10 * MiB
MAX_CHECK_IN = 100 * KiB
MAX_CLIENT_REPORT = 100 * KiB
MAX_PROFILE = 50 * MiB
MAX_REPLAY = 10 * MiB
MAX_SESSIONS = 100

_SINGLETONS = frozenset({"event", "transaction", "feedback", "replay_event", "security"})
_PER_ITEM = {
    "event": MAX_EVENT,
    "transaction": MAX_EVENT,
    "feedback": MAX_EVENT,
    "check_in": MAX_CHECK_IN,
    "client_report": MAX_CLIENT_REPORT,
    "profile": MAX_PROFILE,
    "profile_chunk": MAX_PROFILE,
    "replay_event": MAX_REPLAY,
    "replay_recording": MAX_REPLAY,
    "replay_video": MAX_REPLAY,
    "attachment": MAX_ATTACHMENT,
}


@dataclass(frozen=True)
class Violation:
    index: int
    limit: str


def item_limit(item: Item) -> int | None:
    kind = item.type
    if kind in ("log", "span", "trace_metric"):
        if "item_count" in item.headers:
            return MAX_CONTAINER
        return MAX_LOG if kind == "log" else MAX_SPAN if kind == "span" else MAX_CONTAINER
    return _PER_ITEM.get(kind)


def check(envelope: Envelope) -> list[Violation]:
    """Items that would get the envelope rejected, in order. Encodes JSON payloads."""
    return check_items(envelope.items)


def check_items(items: list[Item]) -> list[Violation]:
    """``check`` for an envelope of these items."""
    if len(items) == 1:  # the usual: one event, within its limit or not
        item = items[0]
        kind = item.headers["type"]
        if kind in _PER_ITEM:
            size = len(item.payload)
            if size <= _PER_ITEM[kind] and size <= MAX_ENVELOPE:
                return []
    found: list[Violation] = []
    seen_singleton = False
    attachments = 0
    attachment_bytes = 0
    sessions = 0
    total = 0
    for index, item in enumerate(items):
        size = len(item.payload)
        kind = item.type
        limit = item_limit(item)
        if limit is not None and size > limit:
            found.append(Violation(index, f"{kind} item over {limit} bytes"))
            continue
        if kind in _SINGLETONS:
            if seen_singleton:
                found.append(Violation(index, f"second {kind}/event-like item in one envelope"))
                continue
            seen_singleton = True
        elif kind == "attachment":
            if attachments + 1 > MAX_ATTACHMENT_COUNT:
                found.append(Violation(index, f"more than {MAX_ATTACHMENT_COUNT} attachments"))
                continue
            if attachment_bytes + size > MAX_ATTACHMENTS_TOTAL:
                found.append(
                    Violation(index, f"attachments over {MAX_ATTACHMENTS_TOTAL} bytes in all")
                )
                continue
            attachments += 1
            attachment_bytes += size
        elif kind in ("session", "sessions"):
            if sessions + 1 > MAX_SESSIONS:
                found.append(Violation(index, f"more than {MAX_SESSIONS} session items"))
                continue
            sessions += 1
        if total + size > MAX_ENVELOPE:
            found.append(Violation(index, f"envelope over {MAX_ENVELOPE} bytes"))
            continue
        total += size
    return found


def body_too_large(size: int) -> bool:
    return size > MAX_BODY
