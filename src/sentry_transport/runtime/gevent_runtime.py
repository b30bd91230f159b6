"""Gevent: workers are greenlets on one hub, over gevent's own sockets and TLS.

Built on gevent's APIs, not on monkey-patching, so it behaves the same in a patched process
and in one that is not (there, greenlets run while the application waits on gevent: in its
server, a ``gevent.sleep``, a join, or this transport's ``flush``/``close``).

- Home hub: the hub of the thread that made the runtime. Workers run there; a capture, flush
  or close from another OS thread hands over through the loop's thread-safe callbacks
  (``run_callback_threadsafe``), never by touching the hub's state from outside.
- Lock: a real OS lock (the unpatched ``_thread`` one), which the pump never holds across a
  switch. Wakes: a greenlet waits on its own thread's hub, woken through an async watcher
  (whose ``send()`` is thread-safe); a thread without a hub blocks on an OS lock.
- Batches with ``INLINE_ENCODE_BYTES`` or more of JSON to encode or bodies to compress
  (``threads.encodes_inline``) are encoded in the home hub's threadpool, so the hub keeps
  running; sizes: ``threads.LoopSizes`` (the JSON is encoded on the hub when it is measured:
  the standard library's encoder holds the GIL, which a thread would not free the hub of).
- Sockets come from ``gevent.socket``; TLS contexts are configured by ``io/tls.py`` and made
  gevent contexts (whose sockets are cooperative, patched or not).
- Fork: gevent's ``os.fork`` re-initialises the hub in the child; after a plain ``os.fork``
  (``os`` not patched) this runtime does it. Exit: the pump closes on the exiting thread; if
  the home hub's thread is gone, the pump is rebuilt on the exiting thread first.

``patched()`` is True only when the home hub is dead (destroyed, or its thread ended): the
pump then rebuilds on the hub of the thread that captures next.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Generator
from typing import Any

from ..core.errors import MissingDependencyError
from ..core.options import TransportOptions
from ..io import tls
from ..io.sockets import SocketStream, run
from .threads import Hub

try:
    import gevent
    import gevent.monkey
    import gevent.socket
    import gevent.ssl
    import gevent.threadpool  # now: at exit its import would fail (it registers an atexit hook)
    from gevent._hub_local import get_hub_if_exists  # (gevent exports no public form)
    from gevent.hub import Waiter
except ModuleNotFoundError as missing:
    if missing.name != "gevent":
        raise
    raise MissingDependencyError("gevent", "gevent", "the 'gevent+' transport") from None

# The real OS primitives, whether or not the process is (or will be) patched.
_allocate_lock: Callable[[], Any] = gevent.monkey.get_original("_thread", "allocate_lock")
_get_ident: Callable[[], int] = gevent.monkey.get_original("_thread", "get_ident")
_os_sleep: Callable[[float], None] = gevent.monkey.get_original("time", "sleep")


class GreenWake:
    """An event for one waiter, ``set()`` from any thread. ``wait`` on a thread with a hub
    yields to that hub until set (or the timeout); on a thread without one it blocks the
    thread on an OS lock."""

    __slots__ = ("_flag", "_hub", "_notify", "_watcher")

    def __init__(self) -> None:
        self._flag = False
        self._notify: Callable[[], object] | None = None  # wakes the waiter, from any thread
        self._hub: Any = None  # the hub of the cached watcher
        self._watcher: Any = None

    def set(self) -> None:
        self._flag = True
        notify = self._notify  # read after the flag: see wait
        if notify is not None:
            notify()

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: float | None) -> bool:
        if self._flag:
            return True
        hub = get_hub_if_exists()
        if hub is None or hub.dead:
            return self._block(timeout)
        return self._switch(hub, timeout)

    def _switch(self, hub: Any, timeout: float | None) -> bool:
        watcher = self._watcher
        if self._hub is not hub:
            watcher = self._watcher = hub.loop.async_()
            self._hub = hub
        waiter = Waiter(hub)
        watcher.start(waiter.switch, None)  # started before the flag is read: no lost send
        timer = None
        try:
            self._notify = watcher.send
            if not self._flag:
                if timeout is not None:
                    timer = hub.loop.timer(max(0.0, timeout))
                    timer.start(waiter.switch, None)
                waiter.get()
        finally:
            self._notify = None
            watcher.stop()
            if timer is not None:
                timer.close()
        return self._flag

    def _block(self, timeout: float | None) -> bool:
        lock = _allocate_lock()
        lock.acquire()
        self._notify = functools.partial(_release, lock)
        try:
            if not self._flag:
                lock.acquire(True, -1 if timeout is None else max(0.0, timeout))
        finally:
            self._notify = None
        return self._flag


def _release(lock: Any) -> None:
    with contextlib.suppress(RuntimeError):  # set twice: released already
        lock.release()


class GeventStream(SocketStream):
    """Gevent sockets. ``abort()`` from another OS thread runs on the socket's hub: a gevent
    socket's shutdown cancels its waiters, which only that hub may do."""

    def __init__(self, hub: Any) -> None:
        super().__init__(create_connection=gevent.socket.create_connection)
        self._hub = hub

    def abort(self) -> None:
        if _get_ident() == self._hub.thread_ident:
            super().abort()
        elif not self._hub.dead:
            self._hub.loop.run_callback_threadsafe(super().abort)


class Gevent(Hub):
    name = "gevent"
    inline = False
    run = staticmethod(run)  # flush/close and the exit drain: waits yield to the hub

    def __init__(self) -> None:
        self.hub: Any = gevent.get_hub()
        self.pump: Any = None

    def attach(self, pump: Any) -> None:
        self.pump = pump

    def patched(self) -> bool:
        return bool(self.hub.dead)  # the home hub was destroyed or its thread ended

    @staticmethod
    def lock() -> Any:
        return _allocate_lock()

    @staticmethod
    def wake() -> GreenWake:
        return GreenWake()

    def _at_home(self) -> bool:
        return bool(_get_ident() == self.hub.thread_ident)

    def spawn(self, work: Callable[[], Generator[Any, Any, Any]], name: str) -> bool:
        if self._at_home():
            self._start(work, name)
        else:
            self.hub.loop.run_callback_threadsafe(self._start, work, name)
        return True

    def _start(self, work: Callable[[], Generator[Any, Any, Any]], name: str) -> None:
        started: list[bool] = []
        greenlet = gevent.Greenlet(_worker, work, started)
        greenlet.name = name
        # killed before it ran (gevent.killall, the hub's end): its finally never counts it out
        greenlet.link(lambda _: started or self.pump.never_started(work))
        greenlet.start()

    def stream(self) -> GeventStream:
        return GeventStream(self.hub)

    def tls(self, options: TransportOptions) -> Any:
        return _green(tls.ssl_context(options))

    def proxy_tls(self) -> Any:
        return _green(tls.proxy_context())

    def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking work (a large encode, file I/O) in the hub's thread pool; on a caller's
        thread (off the hub already) right there."""
        if not self._at_home():
            return fn(*args)
        return self.hub.threadpool.apply(fn, args)

    @staticmethod
    def sleep(seconds: float) -> None:
        if get_hub_if_exists() is None:
            _os_sleep(seconds)
        else:
            gevent.sleep(seconds)

    def after_fork(self) -> None:
        """In the child: its loop must stop sharing the parent's (gevent's own ``os.fork``
        sees to it when ``os`` is patched); the forking thread's hub is home from now on."""
        if not gevent.monkey.is_module_patched("os"):
            gevent.reinit()
        self.hub = gevent.get_hub()

    def at_exit(self, pump: Any) -> None:
        """Interpreter exit: close within the shutdown timeout, on the exiting thread."""
        if pump.engine.stopped:
            return
        if self.patched() or not (self._at_home() or self.hub.thread_ident in _live_threads()):
            pump.rebuild()  # nobody runs the home hub any more: workers on this thread's
        run(pump.close(time.monotonic() + pump.options.shutdown_timeout))


def _worker(work: Callable[[], Generator[Any, Any, Any]], started: list[bool]) -> None:
    started.append(True)  # from here on the worker's own finally does its accounting
    run(work())


def _green(context: Any) -> Any:
    """The same context as a gevent one: gevent's class only changes how it wraps sockets."""
    context.__class__ = gevent.ssl.SSLContext
    return context


def _live_threads() -> set[int]:
    return set(sys._current_frames())
