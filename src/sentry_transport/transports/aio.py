"""The asyncio transport: delivery on the application's event loop, with no threads of its own.

``capture_envelope`` works from the loop or from any thread. ``await aflush(t)`` and
``await aclose(t)`` on the loop; ``flush(t)`` and ``close(t)`` from other threads. On the
loop's own thread the sync forms cannot wait: ``flush`` answers whether everything is already
done and ``close`` stops accepting and finishes in the background. With no loop running at
all (a transport made at import time and used from a plain script), ``flush``/``close`` send
on a loop of their own, and the first such capture logs a warning that says so. When the
owning loop ends (``asyncio.run`` returning) without ``aclose``, the transport closes itself
there within ``shutdown_timeout``; at interpreter exit, what is left is sent the same way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .._transport import EngineTransport
from ..core.dsn import Dsn
from ..core.envelope import Envelope
from ..core.errors import ConfigurationError
from ..io.aio import arun
from ..runtime.aio import Asyncio, run_privately, running_loop

log = logging.getLogger("sentry_transport")


class AsyncioTransport(EngineTransport):
    """Delivery on an asyncio event loop, with no threads of its own.

        async def main():
            transport = AsyncioTransport("https://key@o1.ingest.sentry.io/42")
            transport.capture_event({"message": {"formatted": "hello"}})  # any thread
            await transport.aflush(2.0)
            await transport.aclose(2.0)

    ``loop=`` binds it to a given loop (default: the running one, else the first it is used
    on). ``flush``/``close`` work from other threads; on the loop's thread they cannot wait.
    """

    name = "asyncio"
    runtime = Asyncio

    def __init__(
        self, dsn: str | Dsn, *, loop: asyncio.AbstractEventLoop | None = None, **options: Any
    ) -> None:
        self._loop_arg = loop
        self._warned = False
        super().__init__(dsn, **options)
        if (
            self.dsn.scheme == "https"
            and not hasattr(asyncio.StreamWriter, "start_tls")
            and self._pump.proxy is not None
        ):
            raise ConfigurationError("https through a proxy needs Python 3.11+ with asyncio")

    def _make_runtime(self) -> Asyncio:
        return Asyncio(self._loop_arg)

    def capture_envelope(self, envelope: Envelope) -> None:
        super().capture_envelope(envelope)
        if not self._warned and self._pump.runtime.bind() is None:
            self._warned = True
            log.warning(
                "AsyncioTransport: captured with no event loop running; envelopes wait until "
                "a loop runs, flush()/close() (which send on a loop of their own), or exit"
            )

    async def aflush(self, timeout: float | None = None) -> bool:
        """On the loop: wait at most ``timeout`` s for everything captured so far; True if done."""
        return bool(await self._on_loop(lambda pump, deadline: pump.settle(deadline), timeout))

    async def aclose(self, timeout: float | None = None) -> None:
        """On the loop: stop accepting, drain within ``timeout`` s, count the rest lost."""
        await self._on_loop(lambda pump, deadline: pump.close(deadline), timeout)

    async def _on_loop(self, steps: Any, timeout: float | None) -> Any:
        pump, deadline = self._pump, self._deadline(timeout)
        if pump.runtime.patched():
            pump.rebuild()
        loop = pump.runtime.bind()
        if loop is not running_loop() and loop is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(arun(steps(pump, deadline)), loop)
            return await asyncio.wrap_future(future)
        return await arun(steps(pump, deadline))

    def flush(self, timeout: float | None = None) -> bool:
        return bool(self._blocking(lambda: self.aflush(timeout), timeout, on_loop=self._done))

    def close(self, timeout: float | None = None) -> None:
        self._blocking(lambda: self.aclose(timeout), timeout, on_loop=self._close_later)

    def _blocking(self, make: Any, timeout: float | None, on_loop: Any) -> Any:
        pump = self._pump
        loop = pump.runtime.loop
        if loop is not None and running_loop() is loop:
            return on_loop(timeout)  # our own loop's thread: we must not block it
        if loop is None or loop.is_closed() or not loop.is_running():
            if running_loop() is not None:  # another loop runs in this thread: not ours
                return on_loop(timeout)
            return run_privately(pump, make)
        future = asyncio.run_coroutine_threadsafe(make(), loop)
        try:
            return future.result(
                self.options.shutdown_timeout if timeout is None else timeout + 1.0
            )
        except Exception:
            future.cancel()
            return False

    def _done(self, timeout: float | None) -> bool:
        with self._pump.lock:
            engine = self._pump.engine
            return not self._pump.inbox and engine.flushed(engine.begin_flush())

    def _close_later(self, timeout: float | None) -> None:
        pump = self._pump
        with pump.lock:
            pump.admit_inbox()
            pump.engine.close()  # stops accepting now; the rest finishes in the background
        loop = running_loop()
        assert loop is not None
        task = loop.create_task(self.aclose(timeout))
        pump.runtime.tasks.add(task)  # referenced until done
        task.add_done_callback(pump.runtime.tasks.discard)


__all__ = ["AsyncioTransport"]
