"""Twisted: workers are generators driven by Deferreds on the reactor; no threads of its own
but the reactor's thread pool for large encodes.

The reactor is Twisted's global one, looked up at the first capture (an application may
install another reactor after making the transport, before using it). Captures may come
from any thread: the pump's decision lock is a real lock, never held across I/O, and wakes,
spawns and aborts made off the reactor's thread hop onto it (``callFromThread``; before
the reactor starts they wait in its queue and run when it does). A batch with
``INLINE_ENCODE_BYTES`` or more of JSON to encode or bodies to compress
(``threads.encodes_inline``) is encoded in the reactor's thread pool, so
the reactor never stalls on it (its JSON was encoded when its size was measured:
``threads.LoopSizes``).

End of the reactor: the first worker registers a "before shutdown" trigger that closes the
pump within ``shutdown_timeout`` (the reactor waits for it), so a program that stops the
reactor without closing still delivers. At interpreter exit with the reactor still running in
another thread, what is left is drained through it. With no reactor to run on (never
started, already stopped, or a forked child of a process whose reactor was running), flush,
close and the exit drain send on the calling thread over blocking sockets instead
(``run_privately``: the threads runtime, for that call).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator
from typing import Any

from ..core.engine import Attempt
from ..core.errors import MissingDependencyError
from ..core.options import TransportOptions
from ..io import tls
from ..io.sockets import run
from .threads import LoopSizes, Threads, encodes_inline

try:
    from twisted.internet.defer import Deferred, maybeDeferred
    from twisted.internet.task import deferLater
    from twisted.internet.threads import deferToThreadPool
    from twisted.python import threadable
    from twisted.python.failure import Failure
except ImportError:  # pragma: no cover - exercised without twisted installed
    raise MissingDependencyError("twisted", "twisted", "the 'twisted+' transport") from None

from ..io.twisted_io import TwistedStream, drive

in_reactor_thread: Callable[[], bool] = threadable.isInIOThread  # (the one Twisted registered)

SLACK = 1.0  # seconds a thread waits for the reactor past the deadline it gave it

log = logging.getLogger("sentry_transport")

_forked_away = False  # a forked child of a process whose reactor was running: none runs here


def _note_fork() -> None:
    """In a forked child: a reactor that was running is not one to run on here (its thread
    is gone; or, forked from one of its callbacks, the child's copy of it shares the
    parent's epoll set). A reactor that had not started may still be started here."""
    global _forked_away
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is not None and getattr(reactor, "_started", False):
        _forked_away = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_fork)


def global_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class ReactorWake:
    """An event for one waiter on the reactor; ``set()`` from any thread."""

    __slots__ = ("_flag", "_runtime", "_waiter")

    def __init__(self, runtime: Twisted) -> None:
        self._runtime = runtime
        self._flag = False
        self._waiter: Deferred[bool] | None = None

    def set(self) -> None:
        if self._runtime.direct():
            self._set()
        else:
            self._runtime.reactor.callFromThread(self._set)

    def _set(self) -> None:
        self._flag = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.called:
            waiter.callback(True)

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: float | None) -> Deferred[bool] | bool:
        if self._flag:
            return True
        waiter: Deferred[bool] = Deferred()
        self._waiter = waiter
        if timeout is None:
            return waiter
        timer = self._runtime.reactor.callLater(timeout, self._expire, waiter)

        def stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return waiter.addBoth(stop_timer)

    def _expire(self, waiter: Deferred[bool]) -> None:
        if self._waiter is waiter:
            self._waiter = None
        if not waiter.called:
            waiter.callback(False)


class Twisted(LoopSizes):
    name = "twisted"
    inline = False

    def __init__(self) -> None:
        self._reactor: Any = None
        self.pump: Any = None
        self.held: set[Deferred[Any]] = set()  # workers and background closes, until done
        self._watching = False  # a "before shutdown" trigger closes the pump

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            self._reactor = global_reactor()
        return self._reactor

    def attach(self, pump: Any) -> None:
        self.pump = pump

    # -- where we are -------------------------------------------------------------------------

    def alive(self) -> bool:
        """Work handed to the reactor will run: it runs, or has not been started yet."""
        if _forked_away:
            return False
        reactor = self.reactor
        started = getattr(reactor, "_started", reactor.running)
        return bool(started or not getattr(reactor, "_startedBefore", False))

    def reachable(self) -> bool:
        """The reactor runs in another thread: this one may wait for it."""
        return bool(self.alive() and self.reactor.running and not in_reactor_thread())

    def direct(self) -> bool:
        """This thread may touch the reactor's objects now: it is the reactor's thread, or
        no reactor will ever run what we hand it."""
        return in_reactor_thread() or not self.alive()

    # -- the runtime interface ----------------------------------------------------------------

    def patched(self) -> bool:
        return False  # (gevent and eventlet patching do not apply to a reactor)

    @staticmethod
    def lock() -> Any:
        return threading.Lock()  # captures may come from any thread

    def wake(self) -> ReactorWake:
        return ReactorWake(self)

    def spawn(self, work: Callable[[], Generator[Any, Any, Any]], name: str) -> bool:
        if not self.alive():
            return False  # flush, close or the exit drain send it (run_privately)
        generation = self.pump.generation
        if in_reactor_thread():
            self._start(work, generation)
        else:
            self.reactor.callFromThread(self._start, work, generation)
        return True

    def _start(self, work: Callable[[], Generator[Any, Any, Any]], generation: int) -> None:
        pump = self.pump
        if pump.runtime is not self or pump.generation != generation:
            return  # rebuilt or forked since: that worker's count was reset with the rest
        self._watch_shutdown()
        self.keep(drive(work()), "a worker")

    def keep(self, running: Deferred[Any], what: str) -> None:
        """Hold on to a Deferred until it fires; log it if it fails (a bug)."""
        self.held.add(running)

        def done(result: Any) -> None:
            self.held.discard(running)
            if isinstance(result, Failure):
                log.error("sentry_transport: %s failed on the reactor: %s", what, result)

        running.addBoth(done)

    def _watch_shutdown(self) -> None:
        if not self._watching:
            self._watching = True
            ref = weakref.ref(self)  # the trigger must not keep a dropped transport alive
            self.reactor.addSystemEventTrigger("before", "shutdown", _close_at_shutdown, ref)

    def stream(self) -> TwistedStream:
        return TwistedStream(self.reactor, self.direct)

    def tls(self, options: TransportOptions) -> Any:
        return tls.ssl_context(options)

    def proxy_tls(self) -> Any:
        return tls.proxy_context()

    def encode(
        self, encode: Callable[[Attempt, float], None], attempts: list[Attempt], now: float
    ) -> Deferred[None] | None:
        if encodes_inline(attempts):
            Threads.encode(encode, attempts, now)  # cheaper than the hop to a thread
            return None
        deferred: Deferred[None] | None = self.offload(Threads.encode, encode, attempts, now)
        return deferred

    def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking work (a large encode, file I/O) in the reactor's thread pool (a
        Deferred); off the reactor's thread (a private run) right there."""
        if not in_reactor_thread():
            return fn(*args)
        reactor = self.reactor
        try:
            pool = reactor.getThreadPool()
            return deferToThreadPool(reactor, pool, fn, *args)
        except RuntimeError:  # no new threads at interpreter exit (Python 3.12.0-3.12.2)
            return fn(*args)

    def sleep(self, seconds: float) -> Deferred[None]:
        return deferLater(self.reactor, seconds, lambda: None)

    def after_fork(self) -> None:
        _note_fork()  # (the pump's fork hook may run before ours)
        _ORPHANED.append(self.held)  # the parent's workers: never finalized here
        self.held = set()

    def at_exit(self, pump: Any) -> None:
        """Interpreter exit with work left: drain through the reactor if it still runs in
        another thread, else on this thread over blocking sockets."""
        if pump.engine.stopped:
            return
        deadline = time.monotonic() + pump.options.shutdown_timeout
        if self.reachable():
            wait_for_reactor(self.reactor, lambda: drive(pump.close(deadline)), deadline)
        else:
            run_privately(pump, lambda: pump.close(deadline))


_ORPHANED: list[Any] = []


def _close_at_shutdown(ref: weakref.ref[Twisted]) -> Deferred[None] | None:
    """The reactor is stopping: close the pump within its shutdown timeout (the reactor
    waits for the Deferred before it shuts down)."""
    runtime = ref()
    pump = None if runtime is None else runtime.pump
    if pump is None or pump.runtime is not runtime or pump.engine.stopped:
        return None
    deadline = time.monotonic() + pump.options.shutdown_timeout
    closing: Deferred[None] = drive(pump.close(deadline))

    def failed(failure: Failure) -> None:
        log.error("sentry_transport: closing at the reactor's shutdown failed: %s", failure)

    return closing.addErrback(failed)


def wait_for_reactor(reactor: Any, make: Callable[[], Any], deadline: float) -> Any:
    """From a thread other than the reactor's: run ``make()`` on the reactor and wait for
    its result (a Deferred's, or the value), until ``SLACK`` past the deadline. None when
    it did not finish by then or failed (which is logged)."""
    outcome: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def start() -> None:
        maybeDeferred(make).addBoth(outcome.put)

    reactor.callFromThread(start)
    try:
        result = outcome.get(timeout=max(0.0, deadline - time.monotonic()) + SLACK)
    except queue.Empty:
        return None
    if isinstance(result, Failure):
        log.error("sentry_transport: a call on the reactor failed: %s", result)
        return None
    return result


def run_privately(pump: Any, make: Callable[[], Any]) -> Any:
    """No reactor to run on: run a generator of the pump's on this thread over blocking
    sockets (the threads runtime, for this call); then back to the reactor for what comes
    next, unless the pump is closed."""
    pump.runtime = Threads()
    pump.rebuild()  # (rebuild makes a fresh runtime of the type it finds)
    try:
        return run(make())
    finally:
        if not pump.engine.stopped:
            pump.runtime = Twisted()
            pump.rebuild()


__all__ = ["ReactorWake", "Twisted", "run_privately", "wait_for_reactor"]
