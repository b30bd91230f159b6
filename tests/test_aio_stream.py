"""The asyncio stream: what a peer sent before it reset the connection is still read, an
idle connection says what came on it, and the error a connection ended with is not left for
asyncio to log."""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sentry_transport.io.aio import AsyncioStream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def reset(writer: asyncio.StreamWriter) -> None:
    """End the connection with a TCP reset (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def connected(handle: Handler) -> tuple[AsyncioStream, asyncio.base_events.Server]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stream = AsyncioStream()
    await stream.connect("127.0.0.1", port, None, "127.0.0.1", time.monotonic() + 5)
    return stream, server


async def until(check: Callable[[], Awaitable[Any]], want: Any) -> Any:
    """``await check()`` until it gives ``want``, for 2 s at most."""
    deadline = time.monotonic() + 2
    while (got := await check()) != want and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return got


def test_an_answer_sent_before_a_reset_is_read_first() -> None:
    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(10)
            writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            reset(writer)

        stream, server = await connected(handle)
        deadline = time.monotonic() + 5
        await stream.send(b"POST", deadline)
        await asyncio.sleep(0.3)  # the answer and the reset have both arrived
        assert stream._reader is not None and stream._reader.exception() is not None
        assert await stream.recv(deadline) == b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n"
        try:
            await stream.recv(deadline)
        except ConnectionResetError:
            pass
        else:
            raise AssertionError("the reset was not reported after the bytes")
        stream.abort()
        server.close()

    asyncio.run(main())


def test_unasked_says_nothing_then_data_then_the_end() -> None:
    async def main() -> None:
        go: asyncio.Queue[str] = asyncio.Queue()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await go.get() == "data":
                writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
                await go.get()
            writer.close()

        stream, server = await connected(handle)
        assert await stream.unasked() == ""
        await go.put("data")
        assert await until(stream.unasked, "data") == "data"
        await stream.recv(time.monotonic() + 5)  # read what came: then the end
        await go.put("end")
        assert await until(stream.unasked, "end") == "end"
        stream.abort()
        server.close()

    asyncio.run(main())


def test_the_error_a_connection_ended_with_is_not_logged_by_asyncio() -> None:
    # The protocol's closed future holds the reset too. Finalized without the protocol
    # reading it first (as can happen when the two are collected together), asyncio would
    # log "Future exception was never retrieved" for it.
    async def main() -> list[str]:
        logged: list[str] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: logged.append(context["message"]))

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(10)
            reset(writer)

        stream, server = await connected(handle)
        assert stream._writer is not None
        protocol: Any = stream._writer._protocol  # type: ignore[attr-defined]
        closed = protocol._closed
        await stream.send(b"POST", time.monotonic() + 5)
        for _ in range(200):  # (its error not read here)
            if closed.done():
                break
            await asyncio.sleep(0.01)
        assert closed.done()
        protocol._closed = loop.create_future()  # the protocol does not read the real one
        protocol._closed.set_result(None)
        stream.abort()
        del closed, protocol, stream
        gc.collect()
        await asyncio.sleep(0)
        server.close()
        return logged

    assert asyncio.run(main()) == []
