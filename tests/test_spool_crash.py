"""The disk spool across a SIGKILL, on the threaded and the asyncio transport: a child
process captures and is killed; what it captured is on disk within half a second, and a
later start on the same folder delivers every event exactly once."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sentry_transport import make_transport
from sentry_transport.io.spool_survey import survey
from sentry_transport.testing import Hang, Respond, Sink

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
]

CHILD = """
import asyncio, sys, time
from sentry_transport import make_transport
from sentry_transport.io.spool_survey import survey
dsn, kind, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

def capture(transport):
    for i in range(count):
        transport.capture_event({"message": {"formatted": f"crash{i:03d}"}, "level": "error"})
    print("captured", flush=True)

if kind == "asyncio":
    async def main():
        transport = make_transport("asyncio+" + dsn)
        capture(transport)
        await asyncio.sleep(60)
    asyncio.run(main())
else:
    capture(make_transport(dsn))
    time.sleep(60)
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def capture_and_kill(dsn: str, kind: str, count: int, before_kill: object = None) -> None:
    """Run the child until it captured ``count`` events, then (after ``before_kill()``, or
    half a second) SIGKILL it."""
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), dsn, kind, str(count)],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        _kill_after_capture(child, before_kill)


def _kill_after_capture(child: subprocess.Popen[str], before_kill: object) -> None:
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "captured", line
        if before_kill is not None:
            before_kill()  # type: ignore[operator]
        else:
            time.sleep(0.5)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def waiting(folder: Path) -> int:
    """Envelopes on disk, not yet answered."""
    return int(survey(str(folder))["envelopes"])


def delivered_messages(sink: Sink) -> collections.Counter[str]:
    found: collections.Counter[str] = collections.Counter()
    for envelope in sink.envelopes:
        for item in envelope.items:
            if item.type == "event":
                found[item.json["message"]["formatted"]] += 1
    return found


def restart_and_deliver(dsn: str, count: int, sink: Sink) -> collections.Counter[str]:
    transport = make_transport(dsn)  # a new process's transport: nothing captured
    deadline = time.monotonic() + 20
    while sum(delivered_messages(sink).values()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    transport.close(5)
    stats = transport.stats()
    assert stats["events"]["delivered"] == count and stats["events"]["lost"] == 0, stats
    assert stats["spooled"] == 0
    return delivered_messages(sink)


@pytest.mark.parametrize("kind", ["threaded", "asyncio"])
def test_sigkill_with_the_server_down_then_a_restart_delivers_everything_once(
    tmp_path: Path, kind: str
) -> None:
    port = free_port()
    dsn = f"http://public@127.0.0.1:{port}/42?spool_dir={tmp_path}&retry_backoff=0.05"
    capture_and_kill(dsn, kind, 100)
    assert waiting(tmp_path) == 100  # on disk within half a second of capture
    with Sink(port=port) as sink:
        delivered = restart_and_deliver(dsn, 100, sink)
    assert delivered == collections.Counter(f"crash{i:03d}" for i in range(100))
    assert waiting(tmp_path) == 0


@pytest.mark.parametrize("kind", ["threaded", "asyncio"])
def test_sigkill_with_requests_in_flight_loses_none(tmp_path: Path, kind: str) -> None:
    with Sink() as sink:
        sink.default = Hang(30)  # takes the requests, answers none
        dsn = f"{sink.dsn}?spool_dir={tmp_path}"

        def in_flight_then_half_a_second() -> None:
            assert sink.wait_for_requests(2, 10)
            time.sleep(0.5)  # what was captured is on disk by now; the requests still hang

        capture_and_kill(dsn, kind, 30, before_kill=in_flight_then_half_a_second)
        in_flight = len(sink.requests)
        assert in_flight >= 2
        assert waiting(tmp_path) == 30
        sink.default = Respond(200)
        delivered = restart_and_deliver(dsn, 30, sink)
    # nothing was answered before the kill: each event is delivered exactly once now
    assert delivered == collections.Counter(f"crash{i:03d}" for i in range(30))


def test_a_living_process_takes_over_a_dead_ones_files(tmp_path: Path) -> None:
    with Sink() as sink:
        living = make_transport(f"{sink.dsn}?spool_dir={tmp_path}")  # on the folder all along
        down = f"http://public@127.0.0.1:{free_port()}/42?spool_dir={tmp_path}"
        capture_and_kill(down + "&retry_backoff=0.05", "threaded", 20)
        # within one look for dead owners (every 5 s) the living one takes them and sends them
        deadline = time.monotonic() + 20
        while sum(delivered_messages(sink).values()) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        living.close(5)
        stats = living.stats()
        assert stats["spool"]["claimed"] == 20, stats
        assert stats["events"] == {"accepted": 20, "delivered": 20, "lost": 0}
    assert delivered_messages(sink) == collections.Counter(f"crash{i:03d}" for i in range(20))
    assert waiting(tmp_path) == 0
