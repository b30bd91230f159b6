"""Scenarios: flush and close deadlines, stopping, in-flight requests at close, overflow,
recorded losses, a stale keep-alive resend, fork."""

from __future__ import annotations

import os
import threading
import time
import warnings

import pytest

from .._record import Hang, Respond
from ..sink import Sink
from ._base import (
    Make,
    Traits,
    books,
    check_accounting,
    event,
    free_port,
    reports,
    settle,
    sink_events,
)

pytestmark = pytest.mark.network

# -- flush and close ------------------------------------------------------------------------------


def test_flush_keeps_its_deadline(make: Make) -> None:
    transport = make(f"http://public@127.0.0.1:{free_port()}/42", retry_backoff=2.0)
    transport.capture_envelope(event("waits-for-retry"))
    started = time.monotonic()
    assert transport.flush(0.2) is False
    assert time.monotonic() - started < 0.6


def test_close_stops_accepting(make: Make, sink: Sink) -> None:
    transport = make(sink.dsn)
    transport.capture_envelope(event("before"))
    transport.close(5)
    transport.capture_envelope(event("after"))
    stats = check_accounting(transport, sink)
    assert sink_events(sink) == ["before"]
    assert stats["lost"] == {"queue_overflow": {"error": 1}}


def test_close_keeps_its_deadline_and_counts_the_rest(
    make: Make, sink: Sink, traits: Traits
) -> None:
    sink.default = Hang(10)
    # A blocking backend blocks each capture for one try (its job), so it gets a short
    # timeout; the background ones must not block the caller at all.
    timeout = 0.2 if traits.blocking else 5.0
    transport = make(sink.dsn, timeout=timeout)
    started = time.monotonic()
    for i in range(3):
        transport.capture_envelope(event(f"stuck{i}"))
    capture_time = time.monotonic() - started
    assert capture_time < (3 * timeout + 0.5 if traits.blocking else 0.1)
    started = time.monotonic()
    transport.close(0.5)
    assert time.monotonic() - started < 0.9
    stats = check_accounting(transport, sink)
    assert stats["events"] == {"accepted": 3, "delivered": 0, "lost": 3}
    assert set(stats["lost"]) <= {"network_error", "queue_overflow"}


def test_queue_overflow_is_counted(make: Make, sink: Sink, traits: Traits) -> None:
    sink.default = Respond(200, delay=0.05 if traits.blocking else 0.3)
    # One connection, one request on it at a time: at most 1 in flight, 5 queued.
    transport = make(sink.dsn, queue_size=5, max_connections=1, pipeline_depth=1)
    for i in range(20):
        transport.capture_envelope(event(f"burst{i}"))
    assert transport.flush(10)
    stats = check_accounting(transport, sink)
    if traits.blocking:  # each capture sent its own envelope: nothing waited, nothing overflowed
        assert stats["lost"] == {} and stats["events"]["delivered"] == 20
        return
    lost = stats["lost"]["queue_overflow"]["error"]
    assert lost >= 20 - 5 - 1 and stats["events"]["delivered"] == 20 - lost


def test_close_with_requests_in_flight_leaves_final_books(make: Make, sink: Sink) -> None:
    sink.default = Hang(10)
    transport = make(sink.dsn, timeout=5.0, max_connections=4)
    capturing = threading.Thread(  # a blocking backend's capture blocks: not on this thread
        target=lambda: [transport.capture_envelope(event(f"stuck{i}")) for i in range(20)],
        daemon=True,
    )
    capturing.start()
    assert sink.wait_for_requests(1, timeout=5)  # requests are in flight
    started = time.monotonic()
    transport.close(1.0)
    assert time.monotonic() - started < 1.5
    capturing.join(2)
    stats = books(transport)
    events = stats["events"]
    assert events["delivered"] == 0 and events["accepted"] == events["lost"] > 0, stats
    requests = len(sink.requests)
    time.sleep(1.2)  # long enough for a resend on a new connection to show
    assert books(transport) == stats  # final: nothing moved after close returned
    assert len(sink.requests) == requests  # and nothing more was sent


def test_stale_resend_keeps_the_first_deadline(make: Make, sink: Sink) -> None:
    transport = make(sink.dsn, retry_attempts=0, timeout=1.0)
    transport.capture_envelope(event("first"))
    assert transport.flush(5)  # a keep-alive connection is open now
    # On the reused socket the server reads the request, says nothing for 0.8 s and closes:
    # the transport takes it for a stale socket and sends again, which then hangs.
    sink.script(Hang(0.8), Hang(10))
    started = time.monotonic()
    transport.capture_envelope(event("second"))
    assert transport.flush(5)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 0.4, elapsed  # one timeout in all, not 0.8 s plus a fresh one
    assert transport.stats()["lost"] == {"network_error": {"error": 1}}


def test_recorded_losses_are_reported(make: Make, sink: Sink) -> None:
    transport = make(sink.dsn)
    transport.record_lost_event("sample_rate", "transaction", 3)
    transport.record_lost_event("before_send", "error")
    assert transport.flush(5)
    assert reports(sink) == {("sample_rate", "transaction"): 3, ("before_send", "error"): 1}
    stats = transport.stats()
    assert stats["lost"] == {"sample_rate": {"transaction": 3}, "before_send": {"error": 1}}
    assert stats["events"]["lost"] == 0  # they never reached the transport


# -- fork -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_starts_empty(make: Make, sink: Sink) -> None:
    sink.default = Respond(200, delay=0.2)
    transport = make(sink.dsn, max_connections=2)
    for i in range(6):
        transport.capture_envelope(event(f"parent{i}"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: must not re-send the parent's envelopes
        code = 1
        try:
            stats = transport.stats()
            if stats["accepted"] == 0 and stats.get("queued", 0) == 0:
                transport.capture_envelope(event("child"))
                ok = transport.flush(5)  # an event loop's backend: on a loop of its own
                stats = transport.stats()
                code = 0 if ok and stats["accepted"] == 1 and stats["delivered"] == 1 else 2
        finally:
            os._exit(code)
    assert transport.flush(10)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    seen = sink_events(sink)
    assert sorted(seen) == sorted([f"parent{i}" for i in range(6)] + ["child"])  # no repeats
    stats = settle(transport)
    assert stats["events"] == {"accepted": 6, "delivered": 6, "lost": 0}
    # the child left the parent's connections alone (nothing timed out and was sent twice)
    assert stats["network_errors"] == 0 and stats["retries"] == 0
