"""The tornado transport: delivery on the application's IOLoop (tornado >= 6 runs on asyncio).

It is the asyncio transport bound to the IOLoop's asyncio loop: the workers are tasks there,
over our own keep-alive HTTP/1.1 connections (tornado's simple HTTP client opens a
connection per request; ours keep them open and cost less per request). ``await
transport.aflush(t)`` / ``await transport.aclose(t)`` from tornado coroutines; ``flush`` and
``close`` from other threads, as for asyncio.

    from tornado.ioloop import IOLoop
    transport = TornadoTransport(dsn)              # on the loop: binds to IOLoop.current()
    transport = TornadoTransport(dsn, io_loop=loop)  # or to a given IOLoop
"""

from __future__ import annotations

from typing import Any

from ..core.dsn import Dsn
from ..core.errors import MissingDependencyError

try:
    from tornado.ioloop import IOLoop
except ImportError:  # pragma: no cover - exercised without tornado installed
    raise MissingDependencyError("tornado", "tornado", "the 'tornado+' transport") from None

from .aio import AsyncioTransport


class TornadoTransport(AsyncioTransport):
    """The asyncio transport on a tornado IOLoop (``io_loop=``, default: the current one).

    async def handler():
        transport.capture_event({"message": {"formatted": "hello"}})
        await transport.aflush(2.0)
    """

    name = "tornado"

    def __init__(self, dsn: str | Dsn, *, io_loop: IOLoop | None = None, **options: Any) -> None:
        if io_loop is None:
            io_loop = IOLoop.current(instance=False)
        loop = io_loop.asyncio_loop if io_loop is not None else None  # type: ignore[attr-defined]
        super().__init__(dsn, loop=loop, **options)


__all__ = ["TornadoTransport"]
