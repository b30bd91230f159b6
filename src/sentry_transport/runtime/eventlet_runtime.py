"""Eventlet: workers are green threads on one hub, over eventlet's green sockets and TLS.

Eventlet is in maintenance mode upstream and discourages new use; this is the least that
keeps the guarantees, patched process or not:

- Home: the thread that made the runtime; workers run on its hub (``eventlet.spawn_n``).
- Wakes are pipes: ``set()`` writes a byte from any thread; a green thread of the home hub
  waits for the pipe through the hub, any other thread in ``select``. No hub state is
  touched from another thread; a spawn asked for by another thread goes through a doorbell
  (a green thread at home that runs what other threads hand it).
- Lock: a real OS lock, never held across a switch. Batches with ``INLINE_ENCODE_BYTES`` or
  more of JSON to encode or bodies to compress (``threads.encodes_inline``) are encoded on the
  process's helper thread; sizes: ``threads.LoopSizes``.
- TLS: the contexts of ``io/tls.py`` as eventlet's ``GreenSSLContext``.
- Fork: the child's first pump gives the forking thread a fresh hub when the inherited one
  polls through a kernel object (epoll, kqueue) it would share with the parent.
- Exit: the pump closes on the exiting thread (rebuilt there first if home is gone).

Importing eventlet warns ``EventletDeprecationWarning``; that warning, and only it, is
silenced for our import.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from ..core.errors import MissingDependencyError
from ..core.options import TransportOptions
from ..io import tls
from ..io.sockets import SocketStream, run
from .threads import Hub

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)
    try:
        import eventlet
        import eventlet.green.socket
        import eventlet.green.ssl
        import eventlet.hubs
        import eventlet.patcher
    except ModuleNotFoundError as missing:
        if missing.name != "eventlet":
            raise
        raise MissingDependencyError("eventlet", "eventlet", "the 'eventlet+' transport") from None

_thread = eventlet.patcher.original("_thread")  # the real ones, patched process or not
_os = eventlet.patcher.original("os")  # (a green os.read would switch: clear() runs locked)
_select = eventlet.patcher.original("select").select
_os_sleep = eventlet.patcher.original("time").sleep
_threading = eventlet.patcher.original("threading")
_SHARED_POLLERS = ("eventlet.hubs.epolls", "eventlet.hubs.kqueue")
_hub_pid = [os.getpid()]  # the process whose hub this module last checked (fork)


class _Expired(Exception):
    pass


class PipeWake:
    """An event for one waiter, ``set()`` from any thread (it writes a byte to a pipe)."""

    __slots__ = ("_flag", "_home", "_read", "_write")

    def __init__(self, home: int) -> None:
        self._home = home
        self._flag = False
        self._read, self._write = _os.pipe()
        _os.set_blocking(self._read, False)
        _os.set_blocking(self._write, False)

    def set(self) -> None:
        self._flag = True
        with contextlib.suppress(OSError):  # full: a byte is waiting already
            _os.write(self._write, b"!")

    def clear(self) -> None:
        self._flag = False
        with contextlib.suppress(OSError):
            while _os.read(self._read, 512):
                pass

    def wait(self, timeout: float | None) -> bool:
        if not self._flag:
            if _thread.get_ident() == self._home:
                with contextlib.suppress(_Expired):
                    eventlet.hubs.trampoline(
                        self._read, read=True, timeout=timeout, timeout_exc=_Expired
                    )
            else:
                _select([self._read], [], [], timeout)
        return self._flag

    def __del__(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                _os.close(fd)


class _Helper:
    """One real thread per process that runs what the hub offloads, in order (a thread per
    call cost more than the file I/O it ran)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.jobs: deque[tuple[Callable[..., Any], tuple[Any, ...], list[Any], PipeWake]] = deque()
        self.ready = _threading.Condition(_threading.Lock())
        self.running = False

    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], box: list[Any], done: PipeWake
    ) -> None:
        with self.ready:
            self.jobs.append((fn, args, box, done))
            if not self.running:
                _thread.start_new_thread(self._run, ())
                self.running = True
            self.ready.notify()

    def _run(self) -> None:
        while True:
            with self.ready:
                while not self.jobs:
                    self.ready.wait()
                fn, args, box, done = self.jobs.popleft()
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # handed to the offloading worker, which decides
                box.append((False, exc))
            done.set()


_helpers: list[_Helper] = []


def _helper() -> _Helper:
    """This process's helper (a forked child's is its own: the parent's thread is not here)."""
    if not _helpers or _helpers[0].pid != os.getpid():
        _helpers[:] = [_Helper()]
    return _helpers[0]


class _Doorbell:
    """Runs on the home hub the calls other threads hand it (eventlet's hub may be driven
    from its own thread only)."""

    def __init__(self, home: int) -> None:
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._wake = PipeWake(home)
        eventlet.spawn_n(self._serve)

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        self._calls.append((function, args))
        self._wake.set()

    def _serve(self) -> None:
        while True:
            self._wake.wait(None)
            self._wake.clear()
            while self._calls:
                function, args = self._calls.popleft()
                function(*args)


class Eventlet(Hub):
    name = "eventlet"
    inline = False
    run = staticmethod(run)  # flush/close and the exit drain: waits yield to the hub

    def __init__(self) -> None:
        self._bind()

    def _bind(self) -> None:
        self.home = _thread.get_ident()
        self._doorbell = _Doorbell(self.home)
        self._spare_wakes: list[PipeWake] = []  # offload's, for the hub's thread

    def attach(self, pump: Any) -> None:
        """The pump this runtime serves (nothing to watch)."""

    def patched(self) -> bool:
        return False  # eventlet's own APIs throughout: patching changes nothing here

    def lock(self) -> Any:
        return _thread.allocate_lock()

    def wake(self) -> PipeWake:
        return PipeWake(self.home)

    def spawn(self, work: Callable[[], Generator[Any, Any, Any]], name: str) -> bool:
        if _thread.get_ident() == self.home:
            eventlet.spawn_n(run_work, work)
        else:
            self._doorbell.call(eventlet.spawn_n, run_work, work)
        return True

    def stream(self) -> SocketStream:
        return SocketStream(create_connection=eventlet.green.socket.create_connection)

    def tls(self, options: TransportOptions) -> Any:
        return _green(tls.ssl_context(options))

    def proxy_tls(self) -> Any:
        return _green(tls.proxy_context())

    def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking work (a large encode, file I/O) on a real thread while the hub runs on;
        on a caller's thread (off the hub already) right there."""
        if _thread.get_ident() != self.home:
            return fn(*args)
        spare = self._spare_wakes
        done = spare.pop() if spare else PipeWake(self.home)  # (a pipe each costs 4 calls)
        done.clear()
        box: list[Any] = []
        try:
            _helper().submit(fn, args, box, done)
        except RuntimeError:  # no new thread at interpreter exit (Python 3.12.0-3.12.2)
            return fn(*args)
        while not done.wait(None):
            pass
        spare.append(done)
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def sleep(self, seconds: float) -> None:
        if _thread.get_ident() == self.home:
            eventlet.sleep(seconds)
        else:
            _os_sleep(seconds)

    def after_fork(self) -> None:
        if _hub_pid[0] != os.getpid():  # the first pump of this child: check the hub once
            _hub_pid[0] = os.getpid()
            hub = eventlet.hubs.get_hub()
            if type(hub).__module__ in _SHARED_POLLERS:
                eventlet.hubs.use_hub(type(hub))  # the parent's epoll: the child's own instead
        self._bind()  # home is the forking thread now

    def at_exit(self, pump: Any) -> None:
        """Interpreter exit: close within the shutdown timeout, on the exiting thread."""
        if pump.engine.stopped:
            return
        if _thread.get_ident() != self.home and self.home not in sys._current_frames():
            pump.rebuild()  # nobody runs the home hub any more: workers on this thread's
        run(pump.close(time.monotonic() + pump.options.shutdown_timeout))


def run_work(work: Callable[[], Generator[Any, Any, Any]]) -> None:
    run(work())


class _GreenContext(eventlet.green.ssl.GreenSSLContext):  # type: ignore[misc]
    """Eventlet's context, whose socket is closed when its handshake fails (eventlet's own
    leaves it to the garbage collector, which warns ``ResourceWarning``)."""

    __slots__ = ()

    def wrap_socket(self, sock: Any, **kwargs: Any) -> Any:
        wrapped = super().wrap_socket(sock, do_handshake_on_connect=False, **kwargs)
        try:
            wrapped.do_handshake()
        except BaseException:
            wrapped.close()
            raise
        return wrapped


def _green(context: Any) -> Any:
    """The same context as an eventlet one: its class only changes how it wraps sockets."""
    context.__class__ = _GreenContext
    return context
