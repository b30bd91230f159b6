"""The public Transport interface, the engine-backed base of HTTP transports, and the
function transport.

    Transport                 the interface (capture, flush, close, stats, health)
    ├── FunctionTransport     hands each envelope to a plain callable
    └── EngineTransport       owns an Engine (all policy) and a clock; drivers subclass it
        ├── SyncTransport, ThreadedTransport   (blocking sockets)
        └── AsyncioTransport                   (the running event loop)

Subclasses implement ``capture_envelope``, ``flush`` and ``close``; everything else comes
from here. Extending: subclass ``Transport`` (any destination) — never a driver's internals.
"""

from __future__ import annotations

import abc
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .core.categories import outcomes
from .core.client_reports import check_reason
from .core.dsn import Dsn
from .core.engine import Engine, Stats
from .core.envelope import Envelope


class Transport(abc.ABC):
    """Delivers envelopes. Every method is safe to call from any thread and never raises for
    a delivery problem: losses are counted in ``stats()`` instead."""

    dsn: Dsn | None = None

    @abc.abstractmethod
    def capture_envelope(self, envelope: Envelope) -> None:
        """Hand an envelope over; returns at once (except in the sync transport)."""

    def capture_event(self, event: Mapping[str, Any]) -> None:
        """Wrap one event (or transaction) dict in an envelope and capture it."""
        self.capture_envelope(Envelope.for_event(event))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait, at most ``timeout`` seconds, until everything captured before the call is
        delivered or counted lost. True if it all was."""
        return True

    def close(self, timeout: float | None = None) -> None:  # noqa: B027 -- optional hook
        """Stop accepting, drain for at most ``timeout`` seconds, count the rest as lost."""

    @abc.abstractmethod
    def record_lost_event(self, reason: str, category: str = "error", quantity: int = 1) -> None:
        """Count a loss that happened before the transport (sampling, before_send, ...)."""

    def is_healthy(self) -> bool:
        return True

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters: ``accepted``, ``delivered`` (envelopes), ``lost`` {reason: {category: n}}."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class FunctionTransport(Transport):
    """Calls ``function(envelope)`` for each envelope, in the caller's thread. An exception
    from the function counts the envelope's items lost as ``send_error``."""

    def __init__(self, function: Callable[[Envelope], object]) -> None:
        self.function = function
        self._stats = Stats()
        self._closed = False

    def capture_envelope(self, envelope: Envelope) -> None:
        stats = self._stats
        stats.accept(envelope.items)
        if self._closed:
            self._lose("queue_overflow", envelope)
            return
        try:
            self.function(envelope)
        except Exception as exc:
            with stats.lock:
                stats.last_error = f"{type(exc).__name__}: {exc}"
            self._lose("send_error", envelope)
            return
        stats.deliver(envelope.items)

    def _lose(self, reason: str, envelope: Envelope) -> None:
        self._stats.lose(reason, [o for item in envelope.items for o in outcomes(item)])

    def close(self, timeout: float | None = None) -> None:
        self._closed = True

    def record_lost_event(self, reason: str, category: str = "error", quantity: int = 1) -> None:
        check_reason(reason)
        self._stats.lose(reason, [(category, quantity)], handed_in=False)

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()


class EngineTransport(Transport):
    """Base of the HTTP transports: a DSN, its options, the engine and a lock around it."""

    name = "engine"
    dsn: Dsn

    def __init__(self, dsn: str | Dsn, **options: Any) -> None:
        self.dsn = Dsn.parse(dsn, **options)
        self.options = self.dsn.options
        self.engine = Engine(self.dsn)
        self.clock: Callable[[], float] = time.time
        self._lock = threading.Lock()
        _LIVE.add(self)

    def _after_fork(self) -> None:
        """In a forked child: fresh locks, an empty queue and fresh counters; nothing of the
        parent's is sent again. Drivers extend this to drop their threads and sockets."""
        self._lock = threading.Lock()
        self.engine.reset()

    def record_lost_event(self, reason: str, category: str = "error", quantity: int = 1) -> None:
        self.engine.record_lost(reason, category, quantity)

    def is_healthy(self) -> bool:
        return self.engine.healthy(self.clock())

    def stats(self) -> dict[str, Any]:
        with self._lock:
            snapshot = self.engine.snapshot(self.clock())
        snapshot["transport"] = self.name
        return snapshot

    def _timeout(self, timeout: float | None) -> float:
        return self.options.shutdown_timeout if timeout is None else max(0.0, timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dsn}>"


_LIVE: weakref.WeakSet[EngineTransport] = weakref.WeakSet()


def _reset_in_child() -> None:
    for transport in list(_LIVE):
        transport._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
