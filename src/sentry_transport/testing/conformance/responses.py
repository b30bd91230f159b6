"""Scenarios: what the server answers (2xx, rate-limit headers, 413, other errors, 429)."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from ...core.envelope import Envelope, Item
from .._record import Respond
from ..sink import Sink
from ._base import (
    Make,
    check_accounting,
    event,
    reports,
    sink_events,
    transaction,
)

pytestmark = pytest.mark.network

# -- 2xx --------------------------------------------------------------------------------------


def test_200_delivers_everything_over_keep_alive(make: Make, sink: Sink) -> None:
    transport = make(sink.dsn, max_connections=4)
    for i in range(40):
        transport.capture_envelope(event(f"e{i}"))
    assert transport.flush(5)
    assert sorted(sink_events(sink)) == sorted(f"e{i}" for i in range(40))
    assert sink.connections <= 4
    stats = check_accounting(transport, sink)
    assert stats["accepted"] == 40 and stats["delivered"] == 40 and stats["lost"] == {}
    request = sink.requests[0]
    assert "sentry_key=public" in request.headers["x-sentry-auth"]
    assert request.headers["content-type"] == "application/x-sentry-envelope"
    assert request.envelope is not None and "sent_at" in request.envelope.headers


def test_capture_event_builds_an_envelope(make: Make, sink: Sink) -> None:
    transport = make(sink.dsn)
    transport.capture_event({"message": {"formatted": "from a dict"}})
    assert transport.flush(5)
    assert sink_events(sink) == ["from a dict"]
    check_accounting(transport, sink)


def test_rate_limit_header_on_200_blocks_that_category(make: Make, sink: Sink) -> None:
    sink.script(Respond(200, headers={"X-Sentry-Rate-Limits": "60:error:organization"}))
    transport = make(sink.dsn)
    transport.capture_envelope(event("first"))
    assert transport.flush(5)
    transport.capture_envelope(event("blocked"))
    transport.capture_envelope(transaction("still-sent"))
    assert transport.flush(5)
    assert sorted(sink_events(sink)) == ["first", "still-sent"]
    stats = check_accounting(transport, sink)
    assert stats["lost"] == {"ratelimit_backoff": {"error": 1}}
    assert reports(sink) == {("ratelimit_backoff", "error"): 1}
    assert 55 < stats["rate_limits"]["error"] <= 60
    assert transport.is_healthy()  # one category limited is not the server refusing us


# -- HTTP errors --------------------------------------------------------------------------------


def test_413_is_a_send_error_and_never_retried(make: Make, sink: Sink) -> None:
    sink.script(Respond(413))
    transport = make(sink.dsn)
    transport.capture_envelope(event("too-big"))
    assert transport.flush(5)
    with_events = [r for r in sink.requests if r.envelope and r.envelope.event_id]
    assert len(with_events) == 1
    stats = check_accounting(transport, sink)
    assert stats["lost"] == {"send_error": {"error": 1}}
    assert reports(sink) == {("send_error", "error"): 1}


def test_413_before_the_body_is_read_is_a_send_error_and_never_retried(
    make: Make, sink: Sink
) -> None:
    # The server answers 413 as soon as it has the head and closes with the body unread:
    # the client's write fails, and the answer already sent is the request's outcome.
    sink.script(Respond(413, early=True))
    transport = make(sink.dsn, compression="none")
    big = Item.attachment(random.Random(0).randbytes(8 << 20), "big.bin")
    transport.capture_envelope(
        Envelope.for_event({"message": {"formatted": "too-big"}, "level": "error"}, [big])
    )
    assert transport.flush(10)
    stats = check_accounting(transport, sink)
    assert len([r for r in sink.requests if r.status == 413]) == 1, sink.requests
    assert stats["network_errors"] == 0 and stats["retries"] == 0, stats
    assert set(stats["lost"]) == {"send_error"} and stats["lost"]["send_error"]["error"] == 1


@pytest.mark.parametrize("status", [500, 503, 400])
def test_other_http_errors_are_send_errors(make: Make, sink: Sink, status: int) -> None:
    sink.script(Respond(status))
    transport = make(sink.dsn, max_connections=1)
    transport.capture_envelope(event("fails"))
    transport.capture_envelope(event("passes"))
    assert transport.flush(5)
    stats = check_accounting(transport, sink)
    assert stats["lost"] == {"send_error": {"error": 1}}
    assert sink_events(sink) == ["passes"]
    assert stats["retries"] == 0


def _http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "limited", "seconds"),
    [
        ({"X-Sentry-Rate-Limits": "30:error:organization"}, "error", 30),
        ({"X-Sentry-Rate-Limits": "30::organization"}, "all", 30),
        ({"Retry-After": "30"}, "all", 30),
        ({"Retry-After": "29.5"}, "all", 29.5),
        ({"Retry-After": "HTTP-DATE"}, "all", 30),
        ({}, "all", 60),
        ({"X-Sentry-Rate-Limits": "not a limit", "Retry-After": "30"}, "all", 30),
    ],
    ids=[
        "sentry-header",
        "sentry-header-all",
        "retry-after",
        "retry-after-float",
        "date",
        "bare",
        "unreadable-sentry-header",
    ],
)
def test_429_forms(
    make: Make, sink: Sink, headers: dict[str, str], limited: str, seconds: float
) -> None:
    if headers.get("Retry-After") == "HTTP-DATE":
        headers = {"Retry-After": _http_date(30)}
    sink.script(Respond(429, headers=headers))
    transport = make(sink.dsn)
    transport.capture_envelope(event("rejected"))
    assert transport.flush(5)
    transport.capture_envelope(event("dropped-before-sending"))
    assert transport.flush(5)
    stats = check_accounting(transport, sink)
    # Both lost as ratelimit_backoff; only the second one is ours to report (the server
    # counted the 429 itself).
    assert stats["lost"] == {"ratelimit_backoff": {"error": 2}}
    assert len([r for r in sink.requests if r.envelope and r.envelope.event_id]) == 1
    remaining = stats["rate_limits"]
    key = "error" if limited == "error" else "*"
    assert seconds - 5 < remaining[key] <= seconds
    if limited == "error":
        assert reports(sink) == {("ratelimit_backoff", "error"): 1}
    else:
        assert reports(sink) == {}  # a limit on every category blocks client reports too
        assert not transport.is_healthy()
