"""tornado+: the conformance suite on a tornado IOLoop, the loop kept free, tornado
coroutines awaiting aflush/aclose, and the end of a program that never closed."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tornado.ioloop import IOLoop, PeriodicCallback

from sentry_transport import Transport, make_transport
from sentry_transport.testing import Respond, Sink
from sentry_transport.testing.conformance import *  # noqa: F403 -- the scenarios and fixtures
from sentry_transport.transports.with_tornado import TornadoTransport

pytestmark = pytest.mark.network
SRC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "src")


@pytest.fixture(scope="module")
def io_loop() -> Iterator[IOLoop]:
    """A tornado IOLoop running in a helper thread."""
    ready: list[IOLoop] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        ready.append(IOLoop.current())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(5)
    yield ready[0]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def transport_factory(io_loop: IOLoop) -> Callable[..., Transport]:
    return lambda dsn, **options: TornadoTransport(dsn, io_loop=io_loop, **options)


def test_the_prefix_makes_a_tornado_transport(sentry_sink: Sink, io_loop: IOLoop) -> None:
    async def main() -> Any:
        transport = make_transport("tornado+" + sentry_sink.dsn)
        assert isinstance(transport, TornadoTransport)
        transport.capture_event({"message": {"formatted": "via prefix"}})
        ok = await transport.aflush(5)  # type: ignore[attr-defined]
        await transport.aclose(1)  # type: ignore[attr-defined]
        return ok, transport.stats()["events"]

    ok, events = IOLoop.current().run_sync(main)  # a loop of tornado's own, in this thread
    assert ok and events == {"accepted": 1, "delivered": 1, "lost": 0}


def test_the_loop_stays_free_while_large_events_go_out(sentry_sink: Sink) -> None:
    sentry_sink.default = Respond(200, delay=0.02)

    async def main() -> tuple[float, float, dict[str, int]]:
        transport = TornadoTransport(sentry_sink.dsn)
        ticks: list[float] = []
        ticker = PeriodicCallback(lambda: ticks.append(time.monotonic()), 5)
        ticker.start()
        worst_capture = 0.0
        for i in range(300):
            event = {"message": {"formatted": f"big{i}"}, "extra": {"blob": ["x" * 100] * 1000}}
            started = time.monotonic()
            transport.capture_event(event)
            worst_capture = max(worst_capture, time.monotonic() - started)
            if i % 10 == 0:
                await asyncio.sleep(0)
        assert await transport.aflush(30)
        ticker.stop()
        await transport.aclose(2)
        gap = max(b - a for a, b in itertools.pairwise(ticks))
        return gap, worst_capture, transport.stats()["events"]

    # The test process's own heap (pytest, earlier tests) makes a full collection take ~30 ms
    # here; freeze it so that what is measured is the transport, not this process's past.
    gc.collect()
    gc.freeze()
    try:
        gap, worst_capture, events = IOLoop.current().run_sync(main, timeout=60)
    finally:
        gc.unfreeze()
    assert events == {"accepted": 300, "delivered": 300, "lost": 0}
    assert gap < 0.05, gap
    assert worst_capture < 0.02, worst_capture


def test_program_end_without_close_delivers(sentry_sink: Sink) -> None:
    sentry_sink.default = Respond(200, delay=0.01)
    code = f"""
        import json
        from tornado.ioloop import IOLoop
        from sentry_transport.transports.with_tornado import TornadoTransport

        async def main():
            global t
            t = TornadoTransport("{sentry_sink.dsn}", shutdown_timeout=10)
            for i in range(100):
                t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})

        IOLoop.current().run_sync(main)
        IOLoop.current().close()  # the application's loop ends; no aclose was awaited
        print(json.dumps(t.stats()["events"]))
        """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert done.returncode == 0, done.stderr
    assert sentry_sink.wait_for(100, timeout=10)
    assert len(sentry_sink.envelopes) == 100
    assert json.loads(done.stdout.splitlines()[-1])["accepted"] == 100
