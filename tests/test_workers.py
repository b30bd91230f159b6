"""Worker growth's inputs (workers.py): the server's speed is judged by the fastest recent
round trip, so that waits for the GIL or the CPU (which only ever add) do not read as a slow
server, and a request hanging in flight counts before it ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sentry_transport import Dsn
from sentry_transport.pump import Pump
from sentry_transport.runtime.threads import Threads
from sentry_transport.workers import HANGING, RTT_WINDOW


@pytest.fixture
def pump() -> Iterator[Pump]:
    made = Pump(Dsn.parse("http://k@127.0.0.1:9/1"), Threads())
    yield made
    made.stop()


def test_the_fastest_of_recent_round_trips_is_the_estimate(pump: Pump) -> None:
    assert pump.round_trip == 0.0  # nothing measured yet
    pump._sample(0.008)  # a request that waited for the GIL
    assert pump.round_trip == 0.008
    pump._sample(0.0003)
    pump._sample(0.006)
    assert pump.round_trip == 0.0003
    assert pump._slowest() == 0.0003


def test_old_windows_are_forgotten(pump: Pump) -> None:
    pump._sample(0.0003)
    for _ in range(2 * RTT_WINDOW):  # the server became slow: 20 ms
        pump._sample(0.020)
    assert pump.round_trip == 0.020


def test_a_request_hanging_in_flight_counts_once_it_is_long(pump: Pump) -> None:
    class Conn:
        since = 0.0

    conn = Conn()
    pump.connections.add(conn)  # type: ignore[arg-type]
    pump._sample(0.0003)
    from sentry_transport import workers

    conn.since = workers.monotonic() - HANGING / 2  # in flight, but not long: GIL noise
    assert pump._slowest() == 0.0003
    conn.since = workers.monotonic() - 1.0
    assert pump._slowest() >= 1.0
    pump.connections.discard(conn)  # type: ignore[arg-type]


# -- pipelining ---------------------------------------------------------------------------------


def test_batches_fill_a_pipeline_while_slow_and_stay_small_for_large_envelopes(pump: Pump) -> None:
    from sentry_transport import Envelope

    for i in range(100):
        pump.engine.submit(Envelope.for_event({"message": f"e{i}"}), 0.0, 1000)
    pump.workers = 2
    pump._sample(0.020)  # a slow server
    assert pump._batch() == pump.pipelining.depth == 16
    pump.pipelining.refuse("no pipelining here")
    assert pump._batch() == 1  # one request at a time, as without pipelining
    pump.engine.reset()
    for i in range(100):
        pump.engine.submit(Envelope.for_event({"message": f"e{i}"}), 0.0, 100_000)
    pump.pipelining.depth = 16
    assert pump._batch() == 2  # about 256 KiB


def test_connections_grow_to_carry_64_requests_while_pipelining(pump: Pump) -> None:
    assert pump._most_connections() == 4  # 4 x 16 in flight
    pump.pipelining.refuse("no pipelining here")
    assert pump._most_connections() == pump.options.max_connections == 16


def test_a_runtime_with_its_own_http_client_does_not_pipeline() -> None:
    class Own(Threads):
        def connection(self, pump: Pump) -> object:
            raise AssertionError("not called here")

    made = Pump(Dsn.parse("http://k@127.0.0.1:9/1"), Own())
    try:
        assert made.pipelining.depth == 1
    finally:
        made.stop()
