"""The HTTP request for an envelope, and what a response means (both pure).

``build(envelope, dsn, ...)`` stamps ``sent_at``, serializes, compresses when worth it and
returns the method, target, headers and body. ``classify(status)`` maps a status to an
``Outcome`` per develop-docs: 2xx delivered, 429 rate limited (the server counted the loss),
413 too large, anything else a send error. None of them is retried.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timezone

from . import _compress
from ._dsn import Dsn
from ._envelope import Envelope
from ._version import CLIENT


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    SEND_ERROR = "send_error"


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 429:
        return Outcome.RATE_LIMITED
    if status == 413:
        return Outcome.TOO_LARGE
    return Outcome.SEND_ERROR


@dataclass(frozen=True)
class Request:
    url: str
    target: str  # the request target for the origin server: the path
    headers: tuple[tuple[str, str], ...]
    body: bytes
    raw_size: int  # before compression
    encoding: str | None
    method: str = "POST"


def rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


def build(
    envelope: Envelope,
    dsn: Dsn,
    now: float,
    encoding: str | None,
    level: int | None = None,
    threshold: int = 1024,
    client: str = CLIENT,
) -> Request:
    stamped = Envelope({**envelope.headers, "sent_at": rfc3339(now)}, envelope.items)
    raw = stamped.serialize()
    chosen = _compress.choose(encoding, len(raw), threshold)
    body = _compress.compress(raw, chosen, level) if chosen else raw
    headers = [
        ("Host", dsn.netloc),
        ("User-Agent", client),
        ("X-Sentry-Auth", dsn.auth_header(client)),
        ("Content-Type", "application/x-sentry-envelope"),
        ("Content-Length", str(len(body))),
    ]
    if chosen:
        headers.append(("Content-Encoding", chosen))
    return Request(dsn.envelope_url, dsn.envelope_path, tuple(headers), body, len(raw), chosen)
