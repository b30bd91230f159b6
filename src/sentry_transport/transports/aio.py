"""The asyncio transport: delivery on the running event loop, with no threads of its own.

Worker coroutines (up to ``max_connections``, started on demand) each own one keep-alive
connection made with asyncio streams and speak HTTP/1.1 through the sans-I/O codec.
``capture_envelope`` works from the loop or from any thread (it hops onto the loop with
``call_soon_threadsafe``). A job of 16 KiB or more (exact, or estimated for JSON not yet
encoded) is encoded and compressed in the loop's default executor, so a large event never
stalls the loop; a smaller one costs less on the loop than the hop to a thread would.

``await aflush(t)`` / ``await aclose(t)`` on the loop; ``flush(t)`` / ``close(t)`` from other
threads. Called on the loop's own thread, the sync forms cannot wait: ``flush`` answers
whether everything is already done and ``close`` stops accepting and drains in the background.
The loop is the running one when the transport is made, else the first one it is used on.
In a forked child the transport starts empty and never touches the parent's sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections import deque
from typing import Any

from .._blocking import NETWORK_ERRORS
from .._tls import ssl_context
from .._transport import EngineTransport
from ..core import proxy as _proxy
from ..core.dsn import Dsn
from ..core.engine import Attempt, Flush, Job
from ..core.envelope import Envelope
from ..core.errors import ConfigurationError
from ..core.http11 import Response, ResponseParser, StaleConnection
from ..core.request import Request

INLINE_PREPARE_BYTES = 16 * 1024  # smaller jobs are encoded and compressed on the loop


class AsyncioTransport(EngineTransport):
    name = "asyncio"

    def __init__(
        self, dsn: str | Dsn, *, loop: asyncio.AbstractEventLoop | None = None, **options: Any
    ) -> None:
        super().__init__(dsn, **options)
        self._context = ssl_context(self.options) if self.dsn.scheme == "https" else None
        if (
            self.dsn.scheme == "https"
            and not hasattr(asyncio.StreamWriter, "start_tls")
            and _proxy.select(self.dsn, os.environ) is not None
        ):
            raise ConfigurationError("https through a proxy needs Python 3.11+ with asyncio")
        if loop is None:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
        self._loop = loop
        self._generation = 0  # bumped in a forked child: older workers stop, account nothing
        self._fresh_state()

    def _fresh_state(self) -> None:
        self._workers: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()  # idle workers
        self._progress: list[asyncio.Future[None]] = []  # aflush/aclose waiting
        self._connections: set[_Connection] = set()
        self._stopping = False

    def _after_fork(self) -> None:
        """In a forked child: drop the parent's queue and sockets; never send its envelopes."""
        super()._after_fork()
        self._generation += 1
        for conn in self._connections:
            conn.forget()  # the child's copy of the socket only; the parent's loop untouched
        self._fresh_state()
        if self._loop is not _running_loop():
            self._loop = None  # its thread did not survive the fork: bind to the next loop

    # -- caller side (any thread) -------------------------------------------------------------

    def capture_envelope(self, envelope: Envelope) -> None:
        with self._lock:
            if not self.engine.submit(envelope, self.clock()):
                return
        self._kick()

    def _kick(self) -> None:
        loop = self._bind()
        if loop is None:
            return  # no loop yet: the first use on a loop sends what is queued
        if _running_loop() is loop:
            self._wake_one()
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_one)

    def _bind(self) -> asyncio.AbstractEventLoop | None:
        if self._loop is None or self._loop.is_closed():
            running = _running_loop()
            if running is not None:
                self._loop = running
        return self._loop

    async def aflush(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + self._timeout(timeout)
        self._bind()
        with self._lock:
            flush = self.engine.begin_flush()
        return await self._wait(flush, deadline)

    async def aclose(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + self._timeout(timeout)
        self._bind()
        with self._lock:
            if self._stopping:
                return
            self.engine.close()
            flush = self.engine.begin_flush()
        await self._wait(flush, deadline)
        with self._lock:
            self.engine.abandon()
        self._stopping = True
        for conn in list(self._connections):
            conn.abort()
        while self._waiters:
            _resolve(self._waiters.popleft())
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=max(0.0, deadline - time.monotonic()))

    def flush(self, timeout: float | None = None) -> bool:
        loop = self._loop
        if loop is None or loop.is_closed() or _running_loop() is loop:
            with self._lock:  # no loop to wait on, or it is ours: answer without waiting
                return self.engine.flushed(self.engine.begin_flush())
        seconds = self._timeout(timeout)
        future = asyncio.run_coroutine_threadsafe(self.aflush(seconds), loop)
        try:
            return future.result(seconds + 1.0)
        except Exception:
            future.cancel()
            return False

    def close(self, timeout: float | None = None) -> None:
        loop = self._loop
        seconds = self._timeout(timeout)
        if loop is None or loop.is_closed() or not loop.is_running():
            with self._lock:
                self.engine.close()
                self.engine.abandon()
            self._stopping = True
            return
        if _running_loop() is loop:
            with self._lock:
                self.engine.close()
            task = loop.create_task(self.aclose(seconds))
            self._closing.add(task)  # a reference until done; not a worker aclose waits for
            task.add_done_callback(self._closing.discard)
            return
        future = asyncio.run_coroutine_threadsafe(self.aclose(seconds), loop)
        with contextlib.suppress(Exception):
            future.result(seconds + 1.0)

    # -- on the loop --------------------------------------------------------------------------

    def _wake_one(self) -> None:
        if self._stopping:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        if len(self._workers) < self.options.max_connections:
            with self._lock:
                if self.engine.pending == 0:
                    return
            assert self._loop is not None
            task = self._loop.create_task(self._run())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _wait(self, flush: Flush, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self.engine.flushed(flush):
                    return True
            self._wake_one()  # there is work (a report may just have been queued)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            future: asyncio.Future[None] = loop.create_future()
            self._progress.append(future)
            handle = loop.call_later(remaining, _resolve, future)
            try:
                await future
            finally:
                handle.cancel()

    def _progressed(self) -> None:
        waiting, self._progress = self._progress, []
        for future in waiting:
            _resolve(future)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        conn = _Connection(self.dsn, self._context)
        generation = self._generation
        self._connections.add(conn)
        try:
            while not self._stopping and generation == self._generation:
                with self._lock:
                    now = self.clock()
                    found = self.engine.next(now)
                if isinstance(found, Job):
                    await self._deliver(conn, found, generation)
                    self._progressed()
                    continue
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
                handle = None if found is None else loop.call_later(found - now, _resolve, waiter)
                try:
                    await waiter
                finally:
                    if handle is not None:
                        handle.cancel()
        finally:
            self._connections.discard(conn)
            conn.abort()

    async def _deliver(self, conn: _Connection, job: Job, generation: int) -> None:
        engine = self.engine
        try:
            attempt: Attempt | None
            if job.size < INLINE_PREPARE_BYTES:  # exact, or the engine's sampled estimate
                attempt = engine.prepare(job, self.clock())
            else:
                loop = asyncio.get_running_loop()
                attempt = await loop.run_in_executor(None, engine.prepare, job, self.clock())
        except Exception as exc:  # a bug must cost the job, not the worker
            with self._lock:
                engine.fail(job, exc)
            return
        if attempt is None:
            with self._lock:
                engine.finish(job)
            return
        try:
            response = await conn.request(attempt.request)
        except (*NETWORK_ERRORS, asyncio.TimeoutError) as exc:
            if generation == self._generation:
                with self._lock:
                    engine.on_error(attempt, exc, self.clock())
            return
        if generation == self._generation:
            with self._lock:
                engine.on_response(attempt, response.status, response.headers, self.clock())


_ORPHANS: list[asyncio.StreamWriter] = []  # a forked child's inherited streams, never finalized


class _Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams (through a proxy if set)."""

    def __init__(self, dsn: Dsn, context: ssl.SSLContext | None) -> None:
        self.dsn = dsn
        self.context = context
        self.timeout = dsn.options.timeout
        self.proxy = _proxy.select(dsn, os.environ)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, request: Request) -> Response:
        reused = self._writer is not None
        try:
            return await self._exchange(request)
        except (ConnectionResetError, BrokenPipeError, StaleConnection):
            self.abort()
            if not reused:
                raise
            return await self._exchange(request)

    async def _exchange(self, request: Request) -> Response:
        deadline = time.monotonic() + self.timeout
        if self._writer is None:
            await asyncio.wait_for(self._connect(), self.timeout)
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        try:
            writer.write(_proxy.request_head(request, self.dsn, self.proxy))
            writer.write(request.body)
            await asyncio.wait_for(writer.drain(), max(0.001, deadline - time.monotonic()))
            response = await _read_response(reader, deadline, stale_check=True)
        except BaseException:
            self.abort()
            raise
        if not response.keep_alive:
            self.abort()
        return response

    async def _connect(self) -> None:
        dsn, proxy = self.dsn, self.proxy
        if proxy is None:
            tls = self.context if dsn.scheme == "https" else None
            reader, writer = await asyncio.open_connection(
                dsn.hostname,
                dsn.effective_port,
                ssl=tls,
                server_hostname=dsn.hostname if tls else None,
            )
        else:
            proxy_tls = ssl.create_default_context() if proxy.scheme == "https" else None
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port, ssl=proxy_tls)
            if dsn.scheme == "https":
                await self._tunnel(reader, writer, proxy)
                assert self.context is not None  # 3.10 has no start_tls: refused in __init__
                await writer.start_tls(self.context, server_hostname=dsn.hostname)  # type: ignore[attr-defined,unused-ignore]
        self._reader, self._writer = reader, writer

    async def _tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proxy: _proxy.Proxy
    ) -> None:
        writer.write(_proxy.tunnel_head(self.dsn, proxy))
        await writer.drain()
        response = await _read_response(reader, time.monotonic() + self.timeout, no_body=True)
        if not 200 <= response.status < 300:
            writer.close()
        _proxy.check_tunnel(self.dsn, response)

    def abort(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    def forget(self) -> None:
        """In a forked child: close this process's descriptor without asyncio's help.

        ``abort()`` would unregister the socket from the loop's epoll instance, which the
        child shares with its parent: the parent's loop would stop hearing its own answers.
        The stream objects are kept forever so that their finalizers never close the number
        again (it may be reused by then).
        """
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                os.close(sock.fileno())
        _ORPHANS.append(writer)


async def _read_response(
    reader: asyncio.StreamReader, deadline: float, no_body: bool = False, stale_check: bool = False
) -> Response:
    parser = ResponseParser(no_body=no_body)
    first = True
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for the server's answer")
        data = await asyncio.wait_for(reader.read(65536), remaining)
        if not data:
            if first and stale_check:
                raise StaleConnection("the server closed the connection before answering")
            return parser.eof()
        first = False
        response = parser.feed(data)
        if response is not None:
            return response


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = ["AsyncioTransport"]
