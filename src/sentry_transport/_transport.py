"""The public Transport interface, the engine-backed base of HTTP transports, and the
function transport.

    Transport                 the interface (capture, flush, close, stats, health)
    ├── FunctionTransport     hands each envelope to a plain callable
    └── EngineTransport       owns a Pump (engine + workers) over a runtime; drivers name one
        ├── SyncTransport, ThreadedTransport   (blocking sockets)
        └── AsyncioTransport                   (the running event loop)

A driver is a subclass that names its runtime (and, for event loops, adds the awaitable
``aflush``/``aclose``); everything else comes from here. Extending: subclass ``Transport``
(any destination), never a driver's internals.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .core.categories import outcomes
from .core.client_reports import check_reason
from .core.dsn import Dsn
from .core.engine import Engine
from .core.envelope import Envelope
from .core.stats import Stats
from .pump import Pump
from .runtime.threads import Threads


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
    def record_lost_event(
        self, reason: str, category: str = "error", quantity: int = 1, *, strict: bool = True
    ) -> None:
        """Count a loss that happened before the transport (sampling, before_send, ...).

        ``reason`` must be one of the spec's (``REASONS``); with ``strict=False`` any name
        shaped like one (``[a-z][a-z0-9_]*``, as newer SDKs send) is counted too."""

    def is_healthy(self) -> bool:
        """False while the transport cannot deliver (the server refuses it, or it is full)."""
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
        self._lock = threading.Lock()
        self._closed = False

    def capture_envelope(self, envelope: Envelope) -> None:
        with self._lock:
            self._stats.accept(envelope.items)
            if self._closed:
                self._lose("queue_overflow", envelope)
                return
        try:
            self.function(envelope)
        except Exception as exc:
            with self._lock:
                self._stats.last_error = f"{type(exc).__name__}: {exc}"
                self._lose("send_error", envelope)
            return
        with self._lock:
            self._stats.deliver(envelope.items)

    def _lose(self, reason: str, envelope: Envelope) -> None:
        self._stats.lose(reason, [o for item in envelope.items for o in outcomes(item)])

    def close(self, timeout: float | None = None) -> None:
        self._closed = True

    def record_lost_event(
        self, reason: str, category: str = "error", quantity: int = 1, *, strict: bool = True
    ) -> None:
        check_reason(reason, strict)
        with self._lock:
            self._stats.lose(reason, [(category, quantity)], handed_in=False)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._stats.snapshot()


class EngineTransport(Transport):
    """Base of the HTTP transports: a DSN, its options, and a pump (engine + workers) over the
    runtime named by ``runtime`` (see ``sentry_transport/runtime``)."""

    name = "engine"
    runtime: Any = Threads
    dsn: Dsn

    def __init__(self, dsn: str | Dsn, **options: Any) -> None:
        self.dsn = Dsn.parse(dsn, **options)
        self.options = self.dsn.options
        self._pump = Pump(self.dsn, self._make_runtime())

    def _make_runtime(self) -> Any:
        return self.runtime()

    @property
    def engine(self) -> Engine:
        return self._pump.engine

    def capture_envelope(self, envelope: Envelope) -> None:
        self._pump.capture(envelope)

    def flush(self, timeout: float | None = None) -> bool:
        pump = self._pump
        return bool(pump.runtime.run(pump.settle(self._deadline(timeout))))

    def close(self, timeout: float | None = None) -> None:
        pump = self._pump
        pump.runtime.run(pump.close(self._deadline(timeout)))

    def record_lost_event(
        self, reason: str, category: str = "error", quantity: int = 1, *, strict: bool = True
    ) -> None:
        with self._pump.lock:
            self._pump.engine.record_lost(reason, category, quantity, strict)

    def is_healthy(self) -> bool:
        """False while the server refuses us (all categories limited, repeated failures)."""
        with self._pump.lock:
            return self._pump.engine.healthy(time.time())

    def stats(self) -> dict[str, Any]:
        snapshot = self._pump.snapshot()
        snapshot["transport"] = self.name
        return snapshot

    def _deadline(self, timeout: float | None) -> float:
        seconds = self.options.shutdown_timeout if timeout is None else max(0.0, timeout)
        return time.monotonic() + seconds

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dsn}>"
