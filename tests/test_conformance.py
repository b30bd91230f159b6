"""The conformance suite (sentry_transport.testing.conformance) against each of our backends.

The asyncio backend runs its loop in a helper thread and is driven through its thread-safe
API (``capture_envelope`` from another thread, sync ``flush``/``close``). Scenarios that only
make sense for one of our backends follow the import.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sentry_transport import Transport, make_transport, registry
from sentry_transport.testing.conformance import *  # noqa: F403 -- the scenarios and fixtures
from sentry_transport.testing.conformance import Make, Traits
from sentry_transport.testing.conformance._base import event, free_port, settle
from sentry_transport.transports.aio import AsyncioTransport

pytestmark = pytest.mark.network

# every transport of the main test group (the others run in processes of their own)
BACKENDS = [name for name, backend in registry.BACKENDS.items() if backend.group == "main"]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a helper thread, for the asyncio backend."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def traits(backend: str) -> Traits:
    return Traits(blocking=backend == "sync")


@pytest.fixture
def transport_factory(backend: str, loop: asyncio.AbstractEventLoop) -> Callable[..., Transport]:
    def factory(dsn: str, **options: Any) -> Transport:
        if backend == "asyncio":
            return AsyncioTransport(dsn, loop=loop, **options)
        return make_transport(f"{backend}+{dsn}", **options)

    return factory


@pytest.mark.parametrize("backend", ["sync"])
def test_sync_capture_sends_only_its_own_envelope(make: Make) -> None:
    transport = make(f"http://public@127.0.0.1:{free_port()}/42", retry_backoff=0.01)
    transport.capture_envelope(event("first"))
    time.sleep(0.05)  # first's retry is due now
    transport.capture_envelope(event("second"))
    stats = transport.stats()
    assert stats["network_errors"] == 2  # one try each: capture did not send first's retry
    assert stats["queued"] == 2
    assert transport.flush(5)  # flush sends the retries
    stats = settle(transport)
    assert stats["lost"] == {"network_error": {"error": 2}} and stats["retries"] == 4
