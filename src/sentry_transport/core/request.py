"""The HTTP request for an envelope, and what a response means (both pure).

``build(envelope, dsn, ...)`` stamps ``sent_at``, serializes, compresses when worth it and
returns the method, target, headers and body; given a DSN's ``Heads`` (rendered once per
transport) it also gives the head's bytes, ready to write. ``classify(status)`` maps a status to an
``Outcome`` per develop-docs: 2xx delivered, 429 rate limited (the server counted the loss),
413 too large, anything else a send error. None of them is retried.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache

from . import compress as _compress
from .dsn import Dsn
from .envelope import Envelope
from .http11 import render_head
from .version import CLIENT

_TYPE = "application/x-sentry-envelope"


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


@dataclass(slots=True)  # (not frozen: a frozen dataclass costs a setattr call per field)
class Request:
    url: str
    target: str  # the request target for the origin server: the path
    headers: tuple[tuple[str, str], ...]
    body: bytes
    raw_size: int  # before compression
    encoding: str | None
    method: str = "POST"
    head: bytes = b""  # the origin-form head as bytes, when built with Heads


class Heads:
    """A DSN's request heads: everything but the body's length and encoding is rendered (and
    checked) once, so a request's head is two small concatenations."""

    __slots__ = ("headers", "prefix", "target", "url")

    def __init__(self, dsn: Dsn, client: str = CLIENT) -> None:
        self.url = dsn.envelope_url
        self.target = dsn.envelope_path
        self.headers = (
            ("Host", dsn.netloc),
            ("User-Agent", client),
            ("X-Sentry-Auth", dsn.auth_header(client)),
            ("Content-Type", _TYPE),
        )
        self.prefix = render_head("POST", dsn.envelope_path, list(self.headers))[:-2]

    def head(self, length: int, encoding: str | None) -> bytes:
        """The bytes of ``render_head`` for these headers plus Content-Length/-Encoding."""
        if encoding:
            return b"%sContent-Length: %d\r\nContent-Encoding: %s\r\n\r\n" % (
                self.prefix,
                length,
                encoding.encode("ascii"),
            )
        return b"%sContent-Length: %d\r\n\r\n" % (self.prefix, length)


def rfc3339(timestamp: float) -> str:
    """``2026-11-21T18:23:39.123456Z`` (UTC), without a datetime object per request: the
    date and time to the second are rendered once per second (the last one is kept)."""
    seconds = int(timestamp // 1)
    micros = round((timestamp - seconds) * 1_000_000)
    if micros == 1_000_000:
        seconds, micros = seconds + 1, 0
    return f"{_to_second(seconds)}.{micros:06d}Z"


@lru_cache(maxsize=4)
def _to_second(seconds: int) -> str:
    days, second = divmod(seconds, 86400)
    year, month, day = _civil(days)
    hour, rest = divmod(second, 3600)
    minute, sec = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{sec:02d}"


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a count of days since 1970-01-01, proleptic Gregorian.

    Counts in 400-year eras of 146,097 days from 0000-03-01, so that the leap day is the last
    day of a year and months have a fixed offset table (153 days per 5 months).
    """
    days += 719_468
    era, day_of_era = divmod(days, 146_097)
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    year = year_of_era + era * 400 + (month <= 2)
    return year, month, day


def build(
    envelope: Envelope,
    dsn: Dsn,
    now: float,
    encoding: str | None,
    level: int | None = None,
    threshold: int = 2048,
    client: str = CLIENT,
    heads: Heads | None = None,
    sent_at: str | None = None,
) -> Request:
    """``sent_at``: ``rfc3339(now)``, if the caller has it already (a batch shares one)."""
    chunks = envelope.stamped_chunks(sent_at or rfc3339(now))
    raw_size = sum(map(len, chunks))
    chosen = _compress.choose(encoding, raw_size, threshold)
    body = _compress.compress_chunks(chunks, chosen, level) if chosen else b"".join(chunks)
    if heads is None:
        heads = Heads(dsn, client)
    length = len(body)
    headers: tuple[tuple[str, str], ...] = (*heads.headers, ("Content-Length", str(length)))
    if chosen:
        headers += (("Content-Encoding", chosen),)
    head = heads.head(length, chosen)
    return Request(heads.url, heads.target, headers, body, raw_size, chosen, head=head)
