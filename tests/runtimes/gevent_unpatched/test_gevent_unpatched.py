"""gevent+ in a process that is not monkey-patched.

The conformance suite drives the transport the way a plain thread of such a process would:
the transport is made on a helper thread whose hub runs (its home hub), and the tests call
``capture_envelope``, ``flush`` and ``close`` from the main thread, which blocks on OS
primitives (the sink's waits, ``time.sleep``) without ever running that hub. The shared
scenarios (_gevent_cases) use the main thread's hub as a gevent application does.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from _gevent_cases import *  # noqa: F403 -- the scenarios shared with the patched group
from _gevent_cases import ticking
from gevent._hub_local import get_hub_if_exists

from sentry_transport import Transport
from sentry_transport.testing import Sink
from sentry_transport.testing.conformance import *  # noqa: F403 -- the scenarios and fixtures
from sentry_transport.testing.conformance._base import event
from sentry_transport.transports.with_gevent import GeventTransport

pytestmark = pytest.mark.network


class HubThread:
    """A plain thread running its own gevent hub; ``call`` runs a function on that hub."""

    def __init__(self) -> None:
        self._running = True
        self._ready = threading.Event()
        self.hub: Any = None
        self.thread = threading.Thread(target=self._run, name="gevent-home", daemon=True)
        self.thread.start()
        assert self._ready.wait(5)

    def _run(self) -> None:
        self.hub = gevent.get_hub()
        self._ready.set()
        while self._running:
            gevent.sleep(0.05)

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def on_hub() -> None:
            try:
                result.set_result(function(*args, **kwargs))
            except BaseException as exc:
                result.set_exception(exc)

        self.hub.loop.run_callback_threadsafe(on_hub)
        return result.result(5)

    def stop(self) -> None:
        self._running = False
        self.thread.join(5)


@pytest.fixture(scope="module")
def home() -> Iterator[HubThread]:
    started = HubThread()
    yield started
    started.stop()


@pytest.fixture
def transport_factory(home: HubThread) -> Callable[..., Transport]:
    return lambda dsn, **options: home.call(GeventTransport, dsn, **options)


def test_workers_run_on_the_home_hub_while_the_caller_blocks(
    home: HubThread, sentry_sink: Sink
) -> None:
    transport = home.call(GeventTransport, sentry_sink.dsn)
    assert transport._pump.runtime.hub is home.hub
    for i in range(20):
        transport.capture_envelope(event(f"e{i}"))
    assert sentry_sink.wait_for(20, timeout=5)  # a plain OS wait here: the home hub sends
    assert transport.flush(5)
    transport.close(2)
    assert transport.stats()["events"] == {"accepted": 20, "delivered": 20, "lost": 0}


def test_flush_from_a_thread_with_a_hub_of_its_own_waits_on_that_hub(
    home: HubThread, sentry_sink: Sink
) -> None:
    transport = GeventTransport(sentry_sink.dsn)  # its home: the main thread's hub
    answer: concurrent.futures.Future[tuple[bool, float, bool]] = concurrent.futures.Future()

    def on_the_other_hub() -> None:  # a greenlet of the helper thread's hub
        gaps, ticker = ticking()
        for i in range(20):
            transport.capture_envelope(event(f"e{i}"))
        started = time.monotonic()
        flushed = transport.flush(10)  # yields to this thread's hub, which keeps ticking
        took = time.monotonic() - started
        ticker.kill()
        other = get_hub_if_exists() is not transport._pump.runtime.hub
        # no tick at all: the flush never had to wait (all was delivered already), and then
        # the hub was held for as long as the flush took
        answer.set_result((flushed, max(gaps, default=took), other))

    home.call(gevent.spawn, on_the_other_hub)
    give_up = time.monotonic() + 15
    while not answer.done() and time.monotonic() < give_up:
        gevent.sleep(0.01)  # the main thread's hub runs the workers meanwhile
    flushed, gap, other = answer.result(0)
    assert flushed and other and gap < 0.05, (flushed, gap, other)
    transport.close(2)
    assert transport.stats()["events"] == {"accepted": 20, "delivered": 20, "lost": 0}
