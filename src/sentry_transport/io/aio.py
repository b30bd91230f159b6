"""Asyncio streams for the core's HTTP connection, and the runner for asyncio generators.

``AsyncioStream`` implements the connection's calls as coroutines over
``asyncio.open_connection``; ``start_tls`` needs Python 3.11 (https through a proxy).
``abort()`` drops the transport at once. ``forget()`` is for a forked child: it closes the
child's copy of the descriptor without telling the loop, whose epoll the child shares with
its parent (unregistering it would deafen the parent's loop).

``arun(generator)`` awaits each ``(callable, *args)`` call a generator yields.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Generator
from typing import Any

_ORPHANS: list[Any] = []  # a forked child's inherited streams: never finalized


class AsyncioStream:
    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(
        self, host: str, port: int, tls: Any, server_hostname: str, deadline: float
    ) -> None:
        self.abort()
        opening = asyncio.open_connection(
            host, port, ssl=tls, server_hostname=server_hostname if tls is not None else None
        )
        reader, writer = await asyncio.wait_for(opening, _remaining(deadline))
        _read_when_closed(writer)
        self._reader, self._writer = reader, writer

    async def start_tls(self, tls: Any, server_hostname: str, deadline: float) -> None:
        writer = self._live()
        upgrade = writer.start_tls(tls, server_hostname=server_hostname)  # type: ignore[attr-defined,unused-ignore]
        await asyncio.wait_for(upgrade, _remaining(deadline))

    async def send(self, data: bytes, deadline: float) -> None:
        writer = self._live()
        writer.write(data)
        if writer.transport.get_write_buffer_size():  # else all went to the kernel already
            await _within(writer.drain(), deadline)

    async def recv(self, deadline: float) -> bytes:
        self._live()
        reader = self._reader
        assert reader is not None
        buffered = getattr(reader, "_buffer", None)
        if buffered and reader.exception() is not None:
            # A reset after the peer's last bytes: StreamReader would raise at once and drop
            # them, where a socket gives them first (an answer sent before the reset).
            data = bytes(buffered[:65536])
            del buffered[:65536]
            return data
        data = await _within(reader.read(65536), deadline)
        return bytes(data)

    async def unasked(self) -> str:
        """What came since the last read: nothing (""), bytes ("data": the loop has read
        them into the reader already) or the end of the connection ("end")."""
        reader = self._reader
        if reader is None:
            return ""
        if getattr(reader, "_buffer", None):  # (StreamReader keeps no public count)
            return "data"
        if reader.at_eof() or reader.exception() is not None:
            return "end"
        return ""

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.transport.abort()

    def close_now(self) -> None:
        """The owner, done with it (no await needed)."""
        self.abort()

    def forget(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                os.close(sock.fileno())
        _ORPHANS.append(writer)

    def _live(self) -> asyncio.StreamWriter:
        if self._writer is None:
            raise ConnectionAbortedError("the connection is closed")
        return self._writer


def _read_when_closed(writer: asyncio.StreamWriter) -> None:
    """asyncio sets the error a connection ended with (a reset, a broken pipe) on its
    protocol's "closed" future as well, which only ``wait_closed()`` would read. The protocol
    reads it when it is finalized, but collected together with the future it may be the
    second: the future then logs "Future exception was never retrieved" at ERROR, with a
    traceback, for an error the connection has already handled. It is read here as it is set."""
    closed = getattr(getattr(writer, "_protocol", None), "_closed", None)
    if isinstance(closed, asyncio.Future):
        closed.add_done_callback(_read_error)


def _read_error(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


_TIMEOUT: Any = getattr(asyncio, "timeout", None)  # Python 3.11+


async def _within(awaitable: Any, deadline: float) -> Any:
    """``await awaitable``, or TimeoutError at the deadline: with ``asyncio.timeout`` where
    there is one (a timer on the task), since ``wait_for`` makes a task of its own per call
    (Python 3.11), which costs more than the read it waits for."""
    remaining = _remaining(deadline)
    if _TIMEOUT is None:
        return await asyncio.wait_for(awaitable, remaining)
    async with _TIMEOUT(remaining):
        return await awaitable


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    return remaining


async def arun(generator: Generator[tuple[Any, ...], Any, Any]) -> Any:
    """Execute a generator of awaitable calls to its end; its return value is ours."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = generator.send(value) if error is None else generator.throw(error)
        except StopIteration as stop:
            return stop.value
        error = value = None
        try:
            value = await op[0](*op[1:])
        except BaseException as exc:  # handed to the generator, which decides
            error = exc
