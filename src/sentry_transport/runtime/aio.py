"""Asyncio: workers are tasks on one event loop, over asyncio streams; no threads of its own.

The loop is the one running when the transport is made, else the first one it is used on;
when that loop is closed and the transport is used again, the pump rebuilds on the next one
(``patched()`` says so). Wakes, spawns and encodes hop onto the loop from any thread. A batch
with ``INLINE_ENCODE_BYTES`` or more of JSON to encode or bodies to compress
(``threads.encodes_inline``) is encoded in the loop's default executor (its JSON was encoded
on the loop already, when its size was measured: see ``threads.LoopSizes``).

End of the loop: the first worker starts an async generator whose ``finally`` runs when the
loop shuts its async generators down (``asyncio.run`` does, after cancelling the tasks): it
closes the pump there, within ``shutdown_timeout``, so a program that never awaited
``aclose`` still delivers. Cancelled workers give their unsent attempts back (see pump.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

from ..core.engine import Attempt
from ..core.envelope import Envelope
from ..core.options import TransportOptions
from ..io import tls
from ..io.aio import AsyncioStream, arun
from .threads import Threads, budgeted_sizes, encoded_size, encodes_inline


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopWake:
    """An event for one waiter on the loop; ``set()`` from any thread."""

    __slots__ = ("_flag", "_future", "_runtime")

    def __init__(self, runtime: Asyncio) -> None:
        self._runtime = runtime
        self._flag = False
        self._future: asyncio.Future[bool] | None = None

    def set(self) -> None:
        loop = self._runtime.loop
        if loop is None or running_loop() is loop:
            self._set()
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        self._flag = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(True)

    def clear(self) -> None:
        self._flag = False

    async def wait(self, timeout: float | None) -> bool:
        if self._flag:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._future = future
        handle = None if timeout is None else loop.call_later(timeout, _expire, future)
        try:
            return await future
        finally:
            self._future = None
            if handle is not None:
                handle.cancel()


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class Asyncio:
    name = "asyncio"
    inline = False

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or running_loop()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.pump: Any = None
        self.private = False  # a loop of our own (a flush with no loop running): not the owner
        self._sentinel: AsyncGenerator[None, None] | None = None

    def attach(self, pump: Any) -> None:
        self.pump = pump

    def bind(self) -> asyncio.AbstractEventLoop | None:
        if self.loop is None:
            self.loop = running_loop()
        return self.loop

    def patched(self) -> bool:
        loop = self.loop
        return loop is not None and loop.is_closed()  # rebuild on the next loop

    @staticmethod
    def lock() -> Any:
        return threading.Lock()  # captures may come from any thread

    def wake(self) -> LoopWake:
        return LoopWake(self)

    def spawn(self, work: Callable[[], Generator[Any, Any, Any]], name: str) -> bool:
        loop = self.bind()
        if loop is None or loop.is_closed():
            return False
        if running_loop() is loop:
            self._start(work, name)
            return True
        try:
            loop.call_soon_threadsafe(self._start, work, name)
        except RuntimeError:
            return False
        return True

    def _start(self, work: Callable[[], Generator[Any, Any, Any]], name: str) -> None:
        assert self.loop is not None
        started: list[bool] = []
        task = self.loop.create_task(self._worker(work, started), name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda _: started or self.pump.never_started(work))

    async def _worker(
        self, work: Callable[[], Generator[Any, Any, Any]], started: list[bool]
    ) -> None:
        started.append(True)  # from here on the worker's own finally does its accounting
        steps = work()
        if self._sentinel is None and not self.private:
            self._sentinel = self._at_loop_end()
            await self._sentinel.__anext__()  # registered with the loop, waiting in its try
        await arun(steps)

    async def _at_loop_end(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            pump = self.pump
            if pump is not None and not pump.engine.stopped:
                deadline = time.monotonic() + pump.options.shutdown_timeout
                await arun(pump.close(deadline))

    def stream(self) -> AsyncioStream:
        return AsyncioStream()

    def tls(self, options: TransportOptions) -> Any:
        return tls.ssl_context(options)

    def proxy_tls(self) -> Any:
        return tls.proxy_context()

    @staticmethod
    async def encode(
        encode: Callable[[Attempt, float], None], attempts: list[Attempt], now: float
    ) -> None:
        if encodes_inline(attempts):
            Threads.encode(encode, attempts, now)  # cheaper than the hop to a thread
        else:
            await Asyncio.offload(Threads.encode, encode, attempts, now)

    @staticmethod
    async def offload(fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking work (a large encode, file I/O) in the loop's default executor."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, fn, *args)
        except RuntimeError:  # the executor is shut down (the very end of asyncio.run)
            return fn(*args)

    cooperative = True  # (see runtime/__init__.py)
    measure = staticmethod(encoded_size)  # the caller's own envelope (see LoopSizes)

    @staticmethod
    async def measure_all(envelopes: list[Envelope]) -> list[int]:
        """What the inbox held, as ``LoopSizes.measure_all`` measures it (on the loop)."""
        return budgeted_sizes(envelopes)

    @staticmethod
    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)

    def after_fork(self) -> None:
        if self.loop is not running_loop():
            self.loop = None  # its thread did not survive the fork: bind to the next loop
        self.tasks = set()
        self._sentinel = None

    def at_exit(self, pump: Any) -> None:
        """Interpreter exit with work left and the loop gone: send on a loop of our own."""
        if pump.engine.stopped or (self.loop is not None and self.loop.is_running()):
            return
        deadline = time.monotonic() + pump.options.shutdown_timeout
        run_privately(pump, lambda: arun(pump.close(deadline)))


def run_privately(pump: Any, make: Callable[[], Any]) -> Any:
    """Run a coroutine of the pump's on a fresh loop in this thread (no loop is running)."""
    if not isinstance(pump.runtime, Asyncio) or pump.runtime.loop is not None:
        pump.rebuild()
    pump.runtime.private = True

    async def main() -> Any:
        pump.runtime.bind()
        return await make()

    try:
        return asyncio.run(main())
    finally:
        pump.rebuild()  # the private loop is gone: the next use binds afresh
