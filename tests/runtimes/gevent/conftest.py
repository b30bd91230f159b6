"""This group runs in a monkey-patched process:
``python -m gevent.monkey --module pytest -q tests/runtimes/gevent``.

The test servers (``Sink``, ``Proxy``) run each in a real OS thread here: patched, their
threads would be greenlets of the main thread, and asyncio allows one running loop per OS
thread, so a sink and a proxy could not run at once. Their condition and locks stay gevent's
(gevent's locks may be used across threads); their start-up event is the pure-Python
``threading.Event`` over those locks, not gevent's single-thread Event.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import gevent.monkey
import gevent.threadpool
import pytest

from sentry_transport.testing import _server


def pytest_configure(config: pytest.Config) -> None:
    if not gevent.monkey.is_module_patched("socket"):
        raise pytest.UsageError(
            "tests/runtimes/gevent needs a patched process: "
            "python -m gevent.monkey --module pytest -q tests/runtimes/gevent"
        )


_POOL = gevent.threadpool.ThreadPool(32)


class _OsThread:
    """What ``_server`` needs of a thread, as a real OS thread (from a gevent threadpool,
    whose ``join`` waits cooperatively)."""

    def __init__(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] = (),
        name: str | None = None,
        daemon: bool | None = None,
    ) -> None:
        self._target, self._args = target, args
        self._done: Any = None

    def start(self) -> None:
        self._done = _POOL.spawn(self._target, *self._args)

    def join(self, timeout: float | None = None) -> None:
        if self._done is not None:
            self._done.wait(timeout)


@pytest.fixture(autouse=True, scope="session")
def servers_in_os_threads() -> Iterator[None]:
    patched = _server.threading
    _server.threading = types.SimpleNamespace(  # type: ignore[assignment]
        Condition=threading.Condition,
        Lock=threading.Lock,
        Event=gevent.monkey.get_original("threading", "Event"),
        Thread=_OsThread,
        current_thread=threading.current_thread,
    )
    try:
        yield
    finally:
        _server.threading = patched
