"""Scenarios: servers that do not take pipelined requests well. A transport may pipeline or
not; either way every envelope is delivered or counted once, and a request the server never
answered because it closed the connection is sent again without counting as a failure."""

from __future__ import annotations

import pytest

from .._record import Hang, Respond
from ..sink import Sink
from ._base import Make, Traits, check_accounting, event, sink_events

pytestmark = pytest.mark.network

_BURST = 12


def _burst(transport: object, tag: str) -> list[str]:
    sent = [f"{tag}{i}" for i in range(_BURST)]
    for name in sent:
        transport.capture_envelope(event(name))  # type: ignore[attr-defined]
    return sent


def test_a_slow_server_gets_many_requests_in_flight_on_a_few_connections(
    make: Make, sink: Sink, traits: Traits
) -> None:
    sink.default = Respond(200, delay=0.05)
    transport = make(sink.dsn)
    sent = [f"slow{i}" for i in range(40)]
    for name in sent:
        transport.capture_envelope(event(name))
    assert transport.flush(10)
    stats = check_accounting(transport, sink)
    assert sorted(sink_events(sink)) == sorted(sent) and stats["lost"] == {}
    if traits.pipelines and not traits.blocking:
        assert sink.most_in_flight >= 8, sink.most_in_flight  # pipelined
        assert sink.connections <= 4, sink.connections
    else:
        assert sink.most_in_flight <= 1  # one request at a time per connection


@pytest.mark.parametrize("answers", [1, 3])
def test_a_server_closing_after_some_answers_gets_the_rest_again(
    make: Make, sink: Sink, answers: int
) -> None:
    # Each connection answers `answers` requests, then ends without saying so: what was
    # written behind them is unanswered, and goes again on a new connection.
    sink.answers_per_connection = answers
    sink.default = Respond(200, delay=0.02)
    transport = make(sink.dsn, retry_attempts=0)
    sent = _burst(transport, "closing")
    assert transport.flush(10)
    stats = check_accounting(transport, sink)
    assert sorted(sink_events(sink)) == sorted(sent)
    assert stats["lost"] == {} and stats["network_errors"] == 0, stats
    assert sink.connections >= _BURST // answers
    assert all(request.status == 200 for request in sink.requests)  # none read and dropped


def test_a_server_answering_one_request_per_connection(make: Make, sink: Sink) -> None:
    sink.default = Respond(200, headers={"Connection": "close"}, delay=0.02)
    transport = make(sink.dsn, retry_attempts=0)
    sent = _burst(transport, "one-each")
    assert transport.flush(10)
    stats = check_accounting(transport, sink)
    assert sorted(sink_events(sink)) == sorted(sent)
    assert stats["lost"] == {} and stats["network_errors"] == 0, stats
    assert sink.connections == _BURST and len(sink.requests) == _BURST


def test_a_stall_mid_pipeline_is_one_failure_and_the_rest_go_again(make: Make, sink: Sink) -> None:
    # The third request gets no answer until the client gives up on it; what was written
    # behind it is sent again without counting against it.
    sink.default = Respond(200, delay=0.05)
    sink.script(Respond(200, delay=0.05), Respond(200, delay=0.05), Hang(5))
    transport = make(sink.dsn, timeout=0.5, retry_attempts=1, retry_backoff=0.05)
    sent = _burst(transport, "stall")
    assert transport.flush(10)
    stats = check_accounting(transport, sink)
    assert sorted(sink_events(sink)) == sorted(sent)
    assert stats["lost"] == {}, stats
    assert stats["network_errors"] == 1 and stats["retries"] == 1, stats
