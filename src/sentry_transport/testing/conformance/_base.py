"""Fixtures and helpers every scenario of the conformance suite uses.

The one fixture a backend supplies is ``transport_factory``: a callable ``(dsn, **options)``
returning a started Transport. ``traits`` (override it too if it differs) says whether the
backend's ``capture_envelope`` blocks for its own request, as a sync transport's does.
Scenarios get ``make`` (the factory with fast failure settings, closing what it made) and
``sink`` (a started ``Sink``), and check the books against what the sink saw: for every
scenario, events accepted == delivered + lost, and the sink answered 2xx to exactly the
delivered ones.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ...core.envelope import Envelope
from ..sink import Sink

# Fast settings so that failure scenarios finish in well under a second.
FAST = {"timeout": 1.0, "retry_attempts": 2, "retry_backoff": 0.05, "retry_deadline": 5.0}

Make = Callable[..., Any]


@dataclass(frozen=True)
class Traits:
    """What a backend is like, where the scenarios must allow for it."""

    blocking: bool = False  # capture_envelope sends its own envelope before returning
    pipelines: bool = True  # several requests in flight on one connection to a slow server


@pytest.fixture
def traits() -> Traits:
    return Traits()


@pytest.fixture
def make(transport_factory: Make) -> Iterator[Make]:
    made: list[Any] = []

    def factory(dsn: str, **options: Any) -> Any:
        transport = transport_factory(dsn, **{**FAST, **options})
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        transport.close(0.5)


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as started:
        yield started


def event(tag: str) -> Envelope:
    return Envelope.for_event({"message": {"formatted": tag}, "level": "error"})


def transaction(tag: str, spans: int = 2) -> Envelope:
    body = {
        "type": "transaction",
        "transaction": tag,
        "spans": [{"span_id": f"{i:016x}"} for i in range(spans)],
    }
    return Envelope.for_event(body)


def sink_events(sink: Sink) -> list[str]:
    """Messages (or transaction names) of the event items the sink answered 2xx to."""
    found = []
    for envelope in sink.envelopes:
        for item in envelope.items:
            if item.type == "event":
                found.append(item.json["message"]["formatted"])
            elif item.type == "transaction":
                found.append(item.json["transaction"])
    return found


def reports(sink: Sink) -> dict[tuple[str, str], int]:
    """Client-report totals the sink received (in 2xx-answered envelopes)."""
    totals: dict[tuple[str, str], int] = {}
    for envelope in sink.envelopes:
        for item in envelope.items:
            if item.type == "client_report":
                for entry in item.json["discarded_events"]:
                    key = (entry["reason"], entry["category"])
                    totals[key] = totals.get(key, 0) + entry["quantity"]
    return totals


def settle(transport: Any, timeout: float = 3.0) -> dict[str, Any]:
    """Stats once nothing is queued or in flight (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        stats: dict[str, Any] = transport.stats()
        if (stats.get("queued", 0) == 0 and stats.get("in_flight", 0) == 0) or (
            time.monotonic() > deadline
        ):
            return stats
        time.sleep(0.01)


def check_accounting(transport: Any, sink: Sink) -> dict[str, Any]:
    stats = settle(transport)
    events = stats["events"]
    assert events["accepted"] == events["delivered"] + events["lost"], stats
    assert len(sink_events(sink)) == events["delivered"], (sink_events(sink), stats)
    return stats


def books(transport: Any) -> dict[str, Any]:
    """stats() without what is not accounting (the worker count falls as workers end)."""
    return {key: value for key, value in transport.stats().items() if key != "workers"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
