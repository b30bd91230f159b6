"""One reactor per test process, running in a helper thread (a reactor cannot be restarted).

Tests hand it work with ``reactor.callFromThread`` or ``on_reactor`` (which waits for the
result of a function run there, Deferreds included, within a bounded time).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.defer import maybeDeferred
from twisted.python.failure import Failure


@pytest.fixture(scope="session")
def reactor() -> Iterator[Any]:
    from twisted.internet import reactor

    thread = threading.Thread(
        target=reactor.run,
        kwargs={"installSignalHandlers": False},
        name="reactor",
        daemon=True,
    )
    thread.start()
    ready = threading.Event()
    reactor.callFromThread(ready.set)
    assert ready.wait(10), "the reactor did not start"
    yield reactor
    reactor.callFromThread(reactor.stop)
    thread.join(10)


def call_on(reactor: Any, function: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run ``function()`` on the reactor and wait (bounded) for its result or Deferred's."""
    outcome: queue.SimpleQueue[Any] = queue.SimpleQueue()
    reactor.callFromThread(lambda: maybeDeferred(function).addBoth(outcome.put))
    result = outcome.get(timeout=timeout)
    if isinstance(result, Failure):
        result.raiseException()
    return result


@pytest.fixture
def on_reactor(reactor: Any) -> Callable[..., Any]:
    return lambda function, timeout=30.0: call_on(reactor, function, timeout)
