"""One HTTP/1.1 client connection, written once for every runtime.

The connection does no I/O itself: ``exchange(request, deadline)`` is a generator that yields
each I/O call it needs as a tuple ``(stream.method, *args)`` and is sent back the result (or
has the exception thrown in). A runner executes the calls: directly for blocking streams
(threads, gevent, eventlet), with ``await`` for asyncio streams, with callbacks for twisted.
So connecting, TLS, the proxy tunnel, the stale keep-alive resend and the response read exist
once, and a runtime only supplies a stream:

    connect(host, port, tls, server_hostname, deadline)   tls: an SSL context, or None
    start_tls(tls, server_hostname, deadline)              upgrade (after a CONNECT tunnel)
    send(data, deadline)                                   all of ``data``
    recv(deadline) -> bytes                                b"" at end of stream
    close()                                                drop the socket (never raises)

Deadlines are absolute times of the stream's own clock; a stream raises TimeoutError past
one. The resend after a stale keep-alive socket keeps the first try's deadline, so a flush
or close deadline holds through it.

A later version can write several requests before reading their answers in order
(pipelining): the generator shape, not the streams, is what would change.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from . import proxy as _proxy
from .dsn import Dsn
from .http11 import Response, ResponseParser, StaleConnection
from .request import Request

Op = tuple[Any, ...]  # (callable, *args)
Io = Generator[Op, Any, Any]

_SMALL_BODY = 16 * 1024  # smaller bodies go out in the same write as the head
RESEND_ERRORS = (ConnectionResetError, BrokenPipeError, StaleConnection)


class HttpConnection:
    """A keep-alive connection to the DSN's host (through ``proxy`` when given)."""

    def __init__(
        self,
        dsn: Dsn,
        stream: Any,
        *,
        proxy: _proxy.Proxy | None = None,
        tls: Any = None,
        proxy_tls: Any = None,
    ) -> None:
        self.dsn = dsn
        self.stream = stream
        self.proxy = proxy
        self.tls = tls  # for the origin (https DSNs)
        self.proxy_tls = proxy_tls  # for an https:// proxy
        self.open = False
        self.aborted = False  # set by abort(): no resend, no new socket
        self.since = 0.0  # when the request in progress began (the driver's clock), or 0

    def exchange(self, request: Request, deadline: float) -> Io:
        """Send one request and read its answer: ``response = yield from conn.exchange(...)``."""
        reused = self.open
        try:
            return (yield from self._exchange(request, deadline))
        except RESEND_ERRORS:
            if not reused or self.aborted:
                raise
            # The server closed an idle keep-alive socket: once more on a new one.
            return (yield from self._exchange(request, deadline))

    def abort(self) -> None:
        """From any thread: break what is in progress; this connection sends nothing more."""
        self.aborted = True
        self.open = False
        self.stream.abort()

    def _exchange(self, request: Request, deadline: float) -> Io:
        if self.aborted:
            raise ConnectionAbortedError("the transport is closed")
        stream = self.stream
        try:
            if not self.open:
                yield from self._connect(deadline)
            head = _proxy.request_head(request, self.dsn, self.proxy)
            if len(request.body) < _SMALL_BODY:
                yield (stream.send, head + request.body, deadline)
            else:
                yield (stream.send, head, deadline)
                yield (stream.send, request.body, deadline)
            response: Response = yield from self._read(deadline, stale_check=True)
        except GeneratorExit:
            raise
        except BaseException:
            self.open = False
            yield (stream.close,)
            raise
        if not response.keep_alive:
            self.open = False
            yield (stream.close,)
        return response

    def _connect(self, deadline: float) -> Io:
        dsn, proxy, stream = self.dsn, self.proxy, self.stream
        https = dsn.scheme == "https"
        if proxy is None:
            tls = self.tls if https else None
            yield (stream.connect, dsn.hostname, dsn.effective_port, tls, dsn.hostname, deadline)
        else:
            tls = self.proxy_tls if proxy.scheme == "https" else None
            yield (stream.connect, proxy.host, proxy.port, tls, proxy.host, deadline)
            if https:
                yield (stream.send, _proxy.tunnel_head(dsn, proxy), deadline)
                answer: Response = yield from self._read(deadline, no_body=True)
                _proxy.check_tunnel(dsn, answer)
                yield (stream.start_tls, self.tls, dsn.hostname, deadline)
        self.open = True

    def _read(self, deadline: float, no_body: bool = False, stale_check: bool = False) -> Io:
        parser = ResponseParser(no_body=no_body)
        recv = self.stream.recv
        first = True
        while True:
            data = yield (recv, deadline)
            if not data:
                if first and stale_check:
                    raise StaleConnection("the server closed the connection before answering")
                return parser.eof()
            first = False
            response = parser.feed(data)
            if response is not None:
                return response
