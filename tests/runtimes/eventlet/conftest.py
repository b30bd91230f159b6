"""This group runs in an eventlet-patched process: ``python tests/runtimes/eventlet/run.py``.

The test servers (``Sink``, ``Proxy``) run each in a real OS thread here: patched, their
threads would be green threads of the main thread, and asyncio allows one running loop per
OS thread, so a sink and a proxy could not run at once. Eventlet's primitives may not be
shared across OS threads, so the servers get a real lock and a condition over a real lock
that green waiters poll (the servers' threads only notify).
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import eventlet
import eventlet.patcher
import pytest

from sentry_transport.testing import _server

_real_thread = eventlet.patcher.original("_thread")
_real_threading = eventlet.patcher.original("threading")


def pytest_configure(config: pytest.Config) -> None:
    if not eventlet.patcher.is_monkey_patched("socket"):
        raise pytest.UsageError(
            "tests/runtimes/eventlet needs a patched process: python tests/runtimes/eventlet/run.py"
        )


class _PollingCondition:
    """A real lock, held briefly by both sides; a waiter polls its predicate with green
    sleeps (so the hub keeps running), and notify is a no-op."""

    def __init__(self) -> None:
        self._lock = _real_thread.allocate_lock()

    def __enter__(self) -> _PollingCondition:
        self._lock.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def notify_all(self) -> None:
        pass

    notify = notify_all

    def wait(self, timeout: float | None = None) -> bool:
        self._lock.release()
        try:
            eventlet.sleep(0.002 if timeout is None else max(0.0, min(timeout, 0.002)))
        finally:
            self._lock.acquire()
        return True

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result and (deadline is None or time.monotonic() < deadline):
            self.wait(None if deadline is None else deadline - time.monotonic())
            result = predicate()
        return result


@pytest.fixture(autouse=True, scope="session")
def servers_in_os_threads() -> Iterator[None]:
    patched = _server.threading
    _server.threading = types.SimpleNamespace(  # type: ignore[assignment]
        Condition=_PollingCondition,
        Lock=_real_thread.allocate_lock,
        Event=_real_threading.Event,
        Thread=_real_threading.Thread,
        current_thread=_real_threading.current_thread,
    )
    try:
        yield
    finally:
        _server.threading = patched
