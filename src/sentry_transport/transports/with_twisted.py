"""The twisted transport: delivery on the reactor, with no threads of its own.

``capture_envelope`` works from the reactor's thread and from any other. On the reactor,
``aflush(t)`` and ``aclose(t)`` return Deferreds. ``flush(t)`` and ``close(t)`` from another
thread wait (within the timeout) for the reactor to finish them; on the reactor's own thread
they cannot wait: ``flush`` answers whether everything is already done and ``close`` stops
accepting and finishes in the background. With no reactor running (not started yet, already
stopped, or in a forked child), all four send on the calling thread over blocking sockets
and return when done; what is captured meanwhile waits for the reactor to start, or for
them, or for the exit drain. Stopping the reactor closes the transport within
``shutdown_timeout`` (the reactor waits for it), so a program that never closes delivers.

    transport = TwistedTransport(dsn)
    transport.capture_event({"message": {"formatted": "hello"}})
    d = transport.aflush(2.0)  # on the reactor: a Deferred firing True when all went out
"""

from __future__ import annotations

from typing import Any

from .._transport import EngineTransport
from ..core.errors import ConfigurationError, MissingDependencyError

try:
    from twisted.internet.defer import Deferred, succeed
except ImportError:  # pragma: no cover - exercised without twisted installed
    raise MissingDependencyError("twisted", "twisted", "the 'twisted+' transport") from None

from ..io.twisted_io import drive
from ..runtime.twisted_runtime import Twisted, in_reactor_thread, run_privately, wait_for_reactor

REACTOR, OTHER_THREAD, NO_REACTOR = "reactor", "other thread", "no reactor"


class TwistedTransport(EngineTransport):
    """Delivers on the reactor: ``TwistedTransport(dsn, **options)``, capture from any thread,
    ``aflush``/``aclose`` (Deferreds) on the reactor, ``flush``/``close`` from other threads."""

    name = "twisted"
    runtime = Twisted

    def aflush(self, timeout: float | None = None) -> Deferred[bool]:
        """On the reactor: fires True once everything captured before is delivered or
        counted lost, False at the timeout."""
        pump, deadline = self._pump, self._deadline(timeout)
        if self._async_place("aflush") == NO_REACTOR:
            return succeed(bool(run_privately(pump, lambda: pump.settle(deadline))))
        settling: Deferred[Any] = drive(pump.settle(deadline))
        return settling.addCallback(bool)

    def aclose(self, timeout: float | None = None) -> Deferred[None]:
        """On the reactor: stop accepting, drain within the timeout, count the rest lost."""
        pump, deadline = self._pump, self._deadline(timeout)
        if self._async_place("aclose") == NO_REACTOR:
            run_privately(pump, lambda: pump.close(deadline))
            return succeed(None)
        closing: Deferred[None] = drive(pump.close(deadline))
        return closing

    def flush(self, timeout: float | None = None) -> bool:
        """From another thread: wait for the reactor to deliver what was captured before (True
        when all of it was). On the reactor's thread: whether that is already done."""
        pump, deadline = self._pump, self._deadline(timeout)
        place = self._place()
        if place == REACTOR:
            return self._done()  # the reactor's own thread: it must not block
        if place == OTHER_THREAD:
            reactor = pump.runtime.reactor
            return bool(wait_for_reactor(reactor, lambda: drive(pump.settle(deadline)), deadline))
        return bool(run_privately(pump, lambda: pump.settle(deadline)))

    def close(self, timeout: float | None = None) -> None:
        """From another thread: stop accepting, drain within the timeout, return with final
        books. On the reactor's thread: stop accepting now; the drain goes on there."""
        pump, deadline = self._pump, self._deadline(timeout)
        place = self._place()
        if place == REACTOR:
            self._close_later(deadline)
        elif place == OTHER_THREAD:
            wait_for_reactor(pump.runtime.reactor, lambda: drive(pump.close(deadline)), deadline)
        else:
            run_privately(pump, lambda: pump.close(deadline))

    def _place(self) -> str:
        runtime = self._pump.runtime
        if not isinstance(runtime, Twisted) or not runtime.alive():
            return NO_REACTOR
        if in_reactor_thread():
            return REACTOR
        return OTHER_THREAD if runtime.reactor.running else NO_REACTOR

    def _async_place(self, what: str) -> str:
        place = self._place()
        if place == OTHER_THREAD:
            raise ConfigurationError(
                f"TwistedTransport.{what}() returns a Deferred: call it on the reactor's "
                f"thread (from other threads, {what[1:]}() waits for the reactor)"
            )
        return place

    def _done(self) -> bool:
        with self._pump.lock:
            engine = self._pump.engine
            return not self._pump.inbox and engine.flushed(engine.begin_flush())

    def _close_later(self, deadline: float) -> None:
        pump = self._pump
        with pump.lock:
            pump.admit_inbox()
            pump.engine.close()  # stops accepting now; the rest finishes in the background
        pump.runtime.keep(drive(pump.close(deadline)), "a close")


__all__ = ["TwistedTransport"]
