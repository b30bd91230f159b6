"""One HTTP/1.1 client connection, written once for every runtime.

The connection does no I/O itself: ``exchange(request, deadline)`` and ``pipeline(...)`` are
generators that yield each I/O call they need as a tuple ``(stream.method, *args)`` and are
sent back the result (or have the exception thrown in). A runner executes the calls:
directly for blocking streams (threads, gevent, eventlet), with ``await`` for asyncio
streams, with callbacks for twisted. So connecting, TLS, the proxy tunnel, the stale
keep-alive resend, pipelining and the response read exist once, and a runtime only supplies
a stream:

    connect(host, port, tls, server_hostname, deadline)   tls: an SSL context, or None
    start_tls(tls, server_hostname, deadline)              upgrade (after a CONNECT tunnel)
    send(data, deadline)                                   all of ``data``
    recv(deadline) -> bytes                                b"" at end of stream
    unasked() -> str                                       without waiting: "" if nothing came
                                                           since the last read, "data" if bytes
                                                           did, "end" if the stream ended (or
                                                           holds something of unknown meaning)
    close()                                                drop the socket (never raises)

Deadlines are absolute times of the stream's own clock (``clock``, handed in); a stream
raises TimeoutError past one. The resend after a stale keep-alive socket keeps the first
try's deadline, so a flush or close deadline holds through it.

Pipelining (``pipeline``): up to ``Pipelining.depth`` requests are written before their
answers are read, in order; bytes read past one answer are kept for the next. A socket sends
one request alone until a keep-alive answer came back on it or on another of the transport's
sockets (the same server: a new socket need not spend a round trip of its own finding out
what a sibling already showed), or a pipelined request was answered. A server that does not
pipeline is detected and the transport falls back to one request at a time
(``Pipelining.refuse``): it closed after its first answer with requests outstanding, or a
request written behind another got no answer in time or a malformed one. Requests left
unanswered when the server ended the socket after at least one answer on it (a ``Connection:
close`` answer, the end of the stream, a reset: a server that closes with requests unread
resets the connection) are written again on a new socket, as the same attempt; after any
other failure the request being answered gets the error and the rest are returned unanswered
(the worker gives them back to the engine).

Before a kept-alive socket with nothing in flight is written on, it is asked whether anything
came since its last answer (``unasked``): a stray answer would be read as the next request's,
so the socket is closed and a new one opened; a server that sent one is not trusted to
pipeline either. A socket the server has closed meanwhile is replaced the same way, without
the stale resend's failed write.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

from . import proxy as _proxy
from .dsn import Dsn
from .errors import ProtocolError
from .http11 import HeadMemo, Response, ResponseParser, StaleConnection, quick_response
from .pipelining import CLOSED_AFTER_ONE, PIPELINE_BYTES, STRAY, Pipelining
from .request import Request

Op = tuple[Any, ...]  # (callable, *args)
Io = Generator[Op, Any, Any]
Outcome = Response | BaseException  # a request's answer, or the error its exchange ended with

_SMALL_BODY = 16 * 1024  # smaller bodies go out in the same write as the head
RESEND_ERRORS = (ConnectionResetError, BrokenPipeError, StaleConnection)


class _Closed(Exception):
    """The server ended the socket cleanly after answering: the rest go on a new one."""


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
        pipelining: Pipelining | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.dsn = dsn
        self.stream = stream
        self.proxy = proxy
        self.tls = tls  # for the origin (https DSNs)
        self.proxy_tls = proxy_tls  # for an https:// proxy
        self.open = False
        self.aborted = False  # set by abort(): no resend, no new socket
        self.since = 0.0  # when the oldest request in progress began (the driver's clock), or 0
        self.pipelining = pipelining or Pipelining()
        self.clock = clock
        self.answers = 0  # answers read on this socket
        self._rest = b""  # bytes read past the last answer
        self._memo = HeadMemo()  # the last answer head read, parsed

    def exchange(self, request: Request, deadline: float) -> Io:
        """Send one request and read its answer: ``response = yield from conn.exchange(...)``."""
        if self.open:
            yield from self._check_idle()
        reused = self.open
        try:
            return (yield from self._exchange(request, deadline))
        except RESEND_ERRORS:
            if not reused or self.aborted:
                raise
            # The server closed an idle keep-alive socket: once more on a new one.
            return (yield from self._exchange(request, deadline))

    def pipeline(
        self,
        requests: Sequence[Request],
        timeout: float,
        deadline: float,
        proceed: Callable[[Response], bool],
        timed: Callable[[float], None] | None = None,
    ) -> Io:
        """Send ``requests`` in order, several in flight, reading the answers in order:
        ``outcomes = yield from conn.pipeline(...)``, one per request decided, in order: the
        ``Response``, or the error its exchange ended with (the last one then); requests past
        the outcomes got no answer. Once ``proceed`` refuses an answer, nothing more is
        written, but what is in flight is still read.
        ``timed`` is told the seconds of each answer to a request that went out alone as soon
        as it is read (the driver learns the server's latency before the rest are answered).
        ``timeout`` bounds connecting and each wait for an answer; ``deadline`` (0: none)
        bounds everything, the stale resend included."""
        outcomes: list[Outcome] = []
        if self.open:
            yield from self._check_idle()
        resend = self.open  # the stale keep-alive resend: for the first request, once
        first = self._until(self.clock() if self.clock else 0.0, timeout, deadline)
        while len(outcomes) < len(requests):
            try:
                yield from self._pipe(requests, outcomes, timeout, deadline, proceed, timed)
                break
            except _Closed:  # answered, then closed: the rest on a new socket
                resend = False
            except Exception as exc:
                if resend and not outcomes and isinstance(exc, RESEND_ERRORS):
                    resend = False
                    if not self.aborted:  # an idle keep-alive socket the server had closed:
                        deadline = first  # again on a new one, within the first deadline
                        continue
                outcomes.append(exc)
                break
        self.since = 0.0
        return outcomes

    def abort(self) -> None:
        """From any thread: break what is in progress; this connection sends nothing more."""
        self.aborted = True
        self.open = False
        self.stream.abort()

    def _check_idle(self) -> Io:
        """A kept-alive socket, nothing in flight: closed if anything came on it since its
        last answer (it would be taken for the next request's answer) or it has ended."""
        came = yield (self.stream.unasked,)
        if came:
            self.open = False
            yield (self.stream.close,)
            if came == "data":
                self.pipelining.refuse(STRAY)

    def _until(self, start: float, timeout: float, deadline: float) -> float:
        end = start + timeout
        return min(end, deadline) if deadline else end

    def _pipe(
        self,
        requests: Sequence[Request],
        outcomes: list[Outcome],
        timeout: float,
        deadline: float,
        proceed: Callable[[Response], bool],
        timed: Callable[[float], None] | None,
    ) -> Io:
        """One socket's part of a pipeline: write while the window allows, read in order."""
        clock = self.clock
        assert clock is not None, "pipelining needs the connection's clock"
        stream, shared = self.stream, self.pipelining
        start = len(outcomes)
        written: list[float] = []  # when requests[start + k] went out
        behind: list[bool] = []  # whether it went out behind another one in flight
        writing = True
        fresh = 0  # answers read on this socket in this call
        try:
            if self.aborted:
                raise ConnectionAbortedError("the transport is closed")
            if not self.open:
                yield from self._connect(self._until(clock(), timeout, deadline))
            last = clock()
            while True:
                done, sent = len(outcomes), start + len(written)
                window = shared.depth if (self.answers or shared.trusted) else 1
                flying = sent - done
                # Top up once half the window is answered: fewer, larger writes.
                if writing and sent < len(requests) and flying <= window // 2:
                    size = sum(len(requests[i].body) for i in range(done, sent))
                    end = sent
                    while end < len(requests) and end - done < window:
                        size += len(requests[end].body)
                        if end > done and size > PIPELINE_BYTES:
                            break
                        end += 1
                    if end > sent:
                        try:
                            yield from self._write(requests[sent:end], clock(), timeout, deadline)
                        except (BrokenPipeError, ConnectionResetError) as exc:
                            if flying:
                                writing = False  # read what is in flight; the rest go back
                            else:  # perhaps cut off by its own answer (a 413 for the body)
                                until = self._until(clock(), timeout, deadline)
                                early = yield from self._early_answer(until)
                                if early is None:
                                    raise exc from None
                                self.answers += 1
                                outcomes.append(early)
                                if len(outcomes) < len(requests) and proceed(early):
                                    raise _Closed from None  # the rest on a new socket
                                self.open = False
                                yield (stream.close,)
                                return
                        else:
                            now = clock()
                            for k in range(end - sent):
                                written.append(now)
                                behind.append(flying + k > 0)
                            if not flying:
                                self.since = now
                            sent = end
                if done == sent:
                    if self._rest:  # bytes nobody asked for: this socket is not to be trusted
                        self.open = False
                        yield (stream.close,)
                        shared.refuse(STRAY)
                    return
                i = done - start
                quick = quick_response(self._rest, self._memo) if self._rest else None
                try:
                    if quick is not None:  # the next answer came with an earlier one's bytes
                        response, self._rest = quick
                    else:
                        until = self._until(max(written[i], last), timeout, deadline)
                        response = yield from self._read(until, stale_check=True)
                except (StaleConnection, ConnectionResetError):
                    if not fresh:
                        raise
                    if self.answers == 1:
                        shared.refuse(CLOSED_AFTER_ONE)
                    raise _Closed from None
                except (TimeoutError, ProtocolError) as exc:
                    if behind[i]:
                        shared.refuse(f"a pipelined request got no good answer ({exc!r})")
                    raise
                last = clock()
                fresh += 1
                self.answers += 1
                if behind[i]:
                    shared.proven = True
                elif timed is not None:
                    timed(last - written[i])
                outcomes.append(response)
                if response.keep_alive:
                    shared.kept_alive = True
                self.since = written[i + 1] if i + 1 < len(written) else 0.0
                if writing and not proceed(response):
                    writing = False
                if not response.keep_alive:
                    if sent > len(outcomes) and self.answers == 1:
                        shared.refuse(CLOSED_AFTER_ONE)
                    if writing and len(outcomes) < len(requests):
                        raise _Closed
                    self.open = False
                    yield (stream.close,)
                    return
        except _Closed:
            self.open = False
            yield (stream.close,)
            raise
        except GeneratorExit:
            raise
        except BaseException:
            self.open = False
            yield (stream.close,)
            raise

    def _write(self, batch: Sequence[Request], now: float, timeout: float, deadline: float) -> Io:
        """Write requests back to back, small ones in one call."""
        send, until = self.stream.send, self._until(now, timeout, deadline)
        pending: list[bytes] = []
        for request in batch:
            pending.append(self._head(request))
            if len(request.body) < _SMALL_BODY:
                pending.append(request.body)
            else:
                yield (send, b"".join(pending), until)
                pending = []
                yield (send, request.body, until)
        if pending:
            yield (send, b"".join(pending), until)

    def _head(self, request: Request) -> bytes:
        if request.head and (self.proxy is None or self.dsn.scheme == "https"):
            return request.head  # origin-form, rendered by the encoder
        return _proxy.request_head(request, self.dsn, self.proxy)

    def _exchange(self, request: Request, deadline: float) -> Io:
        if self.aborted:
            raise ConnectionAbortedError("the transport is closed")
        stream = self.stream
        try:
            if not self.open:
                yield from self._connect(deadline)
            head = self._head(request)
            response: Response | None = None
            try:
                if len(request.body) < _SMALL_BODY:
                    yield (stream.send, head + request.body, deadline)
                else:
                    yield (stream.send, head, deadline)
                    yield (stream.send, request.body, deadline)
            except (BrokenPipeError, ConnectionResetError) as exc:
                response = yield from self._early_answer(deadline)
                if response is None:
                    raise exc from None
                self.open = False  # (closed below: the write was cut off)
            if response is None:
                response = yield from self._read(deadline, stale_check=True)
            self.answers += 1
        except GeneratorExit:
            raise
        except BaseException:
            self.open = False
            yield (stream.close,)
            raise
        if not response.keep_alive or self._rest or not self.open:
            self.open = False
            yield (stream.close,)
        return response

    def _early_answer(self, deadline: float) -> Io:
        """After a write the server cut off: the whole answer it sent before it did (a 413
        or a 400 for a body it would not read: RFC 9112 lets a server answer and close
        before the request is in), else None."""
        try:
            response: Response = yield from self._read(deadline)
        except (OSError, ProtocolError):
            return None
        return response

    def _connect(self, deadline: float) -> Io:
        dsn, proxy, stream = self.dsn, self.proxy, self.stream
        self._rest, self.answers = b"", 0
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
                self._rest = b""
                yield (stream.start_tls, self.tls, dsn.hostname, deadline)
        self.open = True

    def _read(self, deadline: float, no_body: bool = False, stale_check: bool = False) -> Io:
        """Read one answer, starting with the bytes kept from the last one."""
        recv = self.stream.recv
        data, self._rest = self._rest, b""
        if not data:
            data = yield (recv, deadline)
            if not data:
                if stale_check:
                    raise StaleConnection("the server closed the connection before answering")
                return ResponseParser(no_body=no_body).eof()  # raises: nothing at all
        if not no_body:
            quick = quick_response(data, self._memo)  # the usual: a whole small answer
            if quick is not None:
                response, self._rest = quick
                return response
        parser = ResponseParser(no_body=no_body)
        answer = parser.feed(data)
        while answer is None:
            data = yield (recv, deadline)
            if not data:
                return parser.eof()
            answer = parser.feed(data)
        self._rest = parser.rest()
        return answer
