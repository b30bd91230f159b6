"""Twisted streams for the core's HTTP connection, and the runner for the pump's generators on
a reactor.

``TwistedStream`` implements the connection's calls (see ``core/connection.py``) over a TCP
connection made by the reactor (``HostnameEndpoint`` for a name: IPv4 and IPv6; an address
is connected to directly, without a name lookup in the reactor's thread pool). A call
answers at once when it can (data already received; a write the transport takes without
pushing back) and with a Deferred otherwise. Deadlines are absolute ``time.monotonic()``
times; a call still waiting at its deadline fails with TimeoutError.

TLS is the standard library's: the SSL context our options build (``io/tls.py``) runs over a
pair of memory BIOs between the connection and the caller, so certificate checks, ``ca_certs``,
client certificates and the errors they raise are those of every other transport, and no
pyOpenSSL is needed. ``start_tls`` (after a proxy's CONNECT) puts such a layer over what is
there, so a tunnel through an https:// proxy is TLS in TLS.

How the peer ended the connection decides what the HTTP connection does next: after a clean
close ``recv`` returns b"" (once what came before is read) and ``send`` raises
BrokenPipeError; after a reset both raise ConnectionResetError. Either one before the first
byte of an answer marks a stale keep-alive socket, which the connection tries once more on
a new one.

``close()`` is orderly, as a blocking socket's: what was written still goes out (a TLS
alert after a failed handshake), then a FIN; the Deferred it returns fires when the socket is
closed (within ``_LINGER``, else it is aborted). ``abort()`` drops the connection at once, from
any thread (it hops to the reactor). Every other call is made on the reactor's thread, but
``forget()``: in a forked child, it closes the child's copy of the socket without telling the
reactor, whose epoll set the child shares with its parent.

``drive(generator)`` runs a generator of ``(callable, *args)`` calls whose results are
Deferreds or plain values, and returns a Deferred of the generator's return value. It is the
algorithm of ``io.sockets.run`` (and ``io.aio.arun``) with each result waited for by
``yield`` under ``inlineCallbacks``, which sends plain values straight back and does not
recurse on Deferreds that have already fired.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ..core.errors import MissingDependencyError

try:
    from twisted.internet import error as twisted_errors
    from twisted.internet.abstract import isIPAddress, isIPv6Address
    from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
    from twisted.internet.endpoints import (
        HostnameEndpoint,
        TCP4ClientEndpoint,
        TCP6ClientEndpoint,
    )
    from twisted.internet.interfaces import IAddress
    from twisted.internet.protocol import Factory, Protocol, connectionDone
    from twisted.python.failure import Failure
except ImportError:  # pragma: no cover - exercised without twisted installed
    raise MissingDependencyError("twisted", "twisted", "the 'twisted+' transport") from None

Steps = Generator[tuple[Any, ...], Any, Any]
_TCP6: Any = TCP6ClientEndpoint  # (its __init__ has no annotations)
if TYPE_CHECKING:
    _FactoryBase = Factory[Any]
else:  # older twisted's Factory is not generic at run time
    _FactoryBase = Factory

_RECV = 65536  # plaintext read from a TLS layer at a time
_CHUNK = 65536  # plaintext encrypted at a time: the transport may push back in between
_LINGER = 0.25  # seconds a closing connection has to send what it was given (a TLS alert)
_ORPHANS: list[Any] = []  # a forked child's inherited connections: never finalized


@inlineCallbacks
def drive(generator: Steps) -> Generator[Any, Any, Any]:
    """Execute a generator of calls returning Deferreds (or values) to its end; the Deferred
    this returns fires with the generator's return value."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = generator.send(value) if error is None else generator.throw(error)
        except StopIteration as stop:
            return stop.value
        error = value = None
        try:
            value = yield op[0](*op[1:])
        except BaseException as exc:  # handed to the generator, which decides
            error = exc


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    return remaining


class _Wire(Protocol):
    """One TCP connection: what has arrived, how it ended, and the transport's push-back
    (registered as its streaming producer, it is paused when the transport's write buffer
    is full and resumed when that has drained).

    One call of the stream waits on it at a time (``news``); data, the end of the
    connection, a resume or the deadline fires that wait.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.chunks: list[bytes] = []
        self.ended = False
        self.why: BaseException | None = None  # how it ended; None for a clean close
        self.paused = False
        self._waiter: Deferred[None] | None = None
        self._timer: Any = None
        self._gone: list[Deferred[None]] = []  # orderly closes waiting for the socket's end

    # -- from the transport -------------------------------------------------------------------

    def connectionMade(self) -> None:
        transport: Any = self.transport
        with contextlib.suppress(Exception):
            transport.setTcpNoDelay(True)
        transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.wake()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ended = True
        self.why = _ending(reason)
        self.wake()
        gone, self._gone = self._gone, []
        for closed in gone:
            closed.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.wake()

    def stopProducing(self) -> None:
        """The transport is going away: ``connectionLost`` tells the rest."""

    # -- for the stream -----------------------------------------------------------------------

    def news(self, deadline: float) -> Deferred[None]:
        """Fires at the next event on the connection; fails with TimeoutError at the deadline."""
        remaining = _remaining(deadline)
        waiter: Deferred[None] = Deferred()
        self._waiter = waiter
        self._timer = self.reactor.callLater(remaining, self._expire, waiter)
        return waiter

    def wake(self, error: BaseException | None = None) -> None:
        waiter, self._waiter = self._waiter, None
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if waiter is not None:
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)

    def end(self, orderly: bool) -> Deferred[None] | None:
        """Orderly: what was written still goes out, then a FIN (an abort if that has not
        happened within ``_LINGER``); the Deferred fires when the socket is closed. Else an
        abort: what is buffered is dropped and a reset sent, now."""
        transport: Any = self.transport
        if not orderly:
            transport.abortConnection()
            return None
        if self.ended:
            return None
        transport.unregisterProducer()  # (a registered producer would hold the close up)
        transport.loseConnection()
        self.reactor.callLater(_LINGER, self._linger_over)
        gone: Deferred[None] = Deferred()
        self._gone.append(gone)
        return gone

    def _linger_over(self) -> None:
        if not self.ended:
            transport: Any = self.transport
            transport.abortConnection()

    def _expire(self, waiter: Deferred[None]) -> None:
        if self._waiter is waiter:
            self._waiter = self._timer = None
            waiter.errback(TimeoutError("timed out"))

    def failure(self) -> BaseException | None:
        """How the connection ended, as a fresh error (no tracebacks pile up on one); None
        after a clean close."""
        why = self.why
        return None if why is None else type(why)(*why.args)


def _ending(reason: Failure) -> BaseException | None:
    """Twisted's reason for a lost connection as the error our connection acts on."""
    if isinstance(reason.value, twisted_errors.ConnectionDone):
        return None
    if isinstance(reason.value, twisted_errors.ConnectionAborted):
        return ConnectionAbortedError("the connection was aborted")
    return ConnectionResetError(f"the connection was lost: {reason.getErrorMessage()}")


def _dial_error(reason: Failure) -> BaseException:
    """Twisted's reason for a failed connect as an OSError (a network error to the engine)."""
    exc = reason.value
    if isinstance(exc, twisted_errors.TimeoutError):
        return TimeoutError(str(exc))
    if isinstance(exc, twisted_errors.ConnectError):
        if isinstance(exc.osError, int):  # the errno picks the subclass (refused, reset...)
            return OSError(exc.osError, str(exc))
        if isinstance(exc, twisted_errors.ConnectionRefusedError):
            return ConnectionRefusedError(str(exc))
        return ConnectionError(str(exc))
    assert exc is not None
    return exc  # OSError already (DNSLookupError is one), or a bug to be reported as one


class _Dialer(_FactoryBase):
    noisy = False  # no log lines per connection

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def buildProtocol(self, addr: IAddress | None) -> _Wire:
        return _Wire(self.reactor)  # one per attempt: happy eyeballs may make several


class _Tls:
    """One TLS layer: the stdlib's TLS over two memory BIOs."""

    __slots__ = ("eof", "incoming", "outgoing", "session")

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.session = context.wrap_bio(
            self.incoming, self.outgoing, server_hostname=server_hostname
        )
        self.eof = False

    def feed(self, data: bytes) -> None:
        if data:
            self.incoming.write(data)
        elif not self.eof:
            self.eof = True
            self.incoming.write_eof()


class TwistedStream:
    def __init__(self, reactor: Any, direct: Callable[[], bool]) -> None:
        self._reactor = reactor
        self._direct = direct  # may this thread touch the reactor's objects now?
        self._wire: _Wire | None = None
        self._layers: list[_Tls] = []  # TLS layers, innermost (next to the wire) first
        self._dialing: Deferred[Any] | None = None
        self._epoch = 0  # connects so far: an abort from another thread drops only its own

    # -- the connection's calls ---------------------------------------------------------------

    def connect(
        self, host: str, port: int, tls: Any, server_hostname: str, deadline: float
    ) -> Deferred[None]:
        self._drop(orderly=True)
        self._epoch += 1
        return drive(self._connect(host, port, tls, server_hostname, deadline))

    def start_tls(self, tls: Any, server_hostname: str, deadline: float) -> Deferred[None]:
        return drive(self._start_tls(tls, server_hostname, deadline))

    def send(self, data: bytes, deadline: float) -> Deferred[None] | None:
        _remaining(deadline)
        if not self._layers:
            return self._put(data, deadline)
        return drive(self._write(len(self._layers), data, deadline))

    def recv(self, deadline: float) -> Deferred[bytes] | bytes:
        _remaining(deadline)
        if not self._layers:
            return self._take(deadline)
        return drive(self._read(len(self._layers), deadline))

    def close(self) -> Deferred[None] | None:
        """What was sent still goes out; fires when the socket is closed (as a blocking
        socket's close returns once it is), so an error is reported after its TLS alert."""
        return self._drop(orderly=True)

    def close_now(self) -> None:
        """The owner, done with it: close without waiting."""
        self._drop(orderly=True)

    def abort(self) -> None:
        """From any thread: drop the connection; a call in progress fails at once."""
        if self._direct():
            self._drop(orderly=False)
        else:
            self._reactor.callFromThread(self._drop, False, self._epoch)

    def forget(self) -> None:
        """In a forked child: close this process's copy of the socket; the parent's stays.
        A connect in progress is left alone: cancelling it would unregister the parent's
        socket from the epoll set the two processes share."""
        wire, self._wire, self._layers, self._dialing = self._wire, None, [], None
        if wire is None:
            return
        _ORPHANS.append(wire)
        with contextlib.suppress(Exception):
            transport: Any = wire.transport
            os.close(transport.getHandle().detach())

    # -- connecting ---------------------------------------------------------------------------

    def _connect(
        self, host: str, port: int, tls: Any, server_hostname: str, deadline: float
    ) -> Steps:
        self._wire = yield (self._dial, host, port, deadline)
        if tls is not None:
            yield from self._start_tls(tls, server_hostname, deadline)

    def _dial(self, host: str, port: int, deadline: float) -> Deferred[_Wire]:
        remaining = _remaining(deadline)
        endpoint: Any
        if isIPAddress(host):  # no name to resolve: no hop to the thread pool
            endpoint = TCP4ClientEndpoint(self._reactor, host, port, timeout=remaining)
        elif isIPv6Address(host):
            endpoint = _TCP6(self._reactor, host, port, timeout=remaining)
        else:
            endpoint = HostnameEndpoint(self._reactor, host, port, timeout=remaining)
        factory: Any = _Dialer(self._reactor)  # (an IProtocolFactory; mypy sees no zope)
        dialing: Deferred[Any] = endpoint.connect(factory)
        self._dialing = dialing
        timer = self._reactor.callLater(remaining, dialing.cancel)

        def done(result: Any) -> Any:
            if self._dialing is dialing:
                self._dialing = None
            in_time = timer.active()
            if in_time:
                timer.cancel()
            if not isinstance(result, Failure):
                return result
            if isinstance(result.value, (CancelledError, twisted_errors.ConnectingCancelledError)):
                if in_time:  # cancelled by abort()
                    raise ConnectionAbortedError("the connection is closed")
                raise TimeoutError("timed out")
            raise _dial_error(result)

        return dialing.addBoth(done)

    def _start_tls(self, context: Any, server_hostname: str, deadline: float) -> Steps:
        self._live()
        depth = len(self._layers)  # the new layer sits over this many
        layer = _Tls(context, server_hostname)
        self._layers.append(layer)
        while True:
            try:
                layer.session.do_handshake()
            except ssl.SSLWantReadError:
                yield from self._push(depth, layer, deadline)
                layer.feed((yield from self._read(depth, deadline)))
                continue
            except ssl.SSLError:
                self._push_now(depth, layer)  # the alert, for the server's log
                raise
            yield from self._push(depth, layer, deadline)
            return

    # -- TLS layers: ``depth`` counts layers from the wire (0: the wire itself) ----------------

    def _read(self, depth: int, deadline: float) -> Steps:
        """Bytes from the layer at ``depth``; b"" at the end."""
        if depth == 0:
            return (yield (self._take, deadline))
        layer = self._layers[depth - 1]
        while True:
            try:
                data: bytes = layer.session.read(_RECV)
                return data
            except ssl.SSLWantReadError:
                if layer.eof:
                    return b""
                yield from self._push(depth - 1, layer, deadline)  # what reading produced
                layer.feed((yield from self._read(depth - 1, deadline)))
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # close_notify, or the end of the connection without one: the end, as a
                # stdlib TLS socket reports it (ragged ends suppressed)
                return b""

    def _write(self, depth: int, data: bytes, deadline: float) -> Steps:
        """All of ``data`` into the layer at ``depth``."""
        if depth == 0:
            yield (self._put, data, deadline)
            return
        layer = self._layers[depth - 1]
        view = memoryview(data)
        while view:
            try:
                view = view[layer.session.write(view[:_CHUNK]) :]
            except ssl.SSLWantReadError:  # renegotiation: the peer must speak first
                yield from self._push(depth - 1, layer, deadline)
                layer.feed((yield from self._read(depth - 1, deadline)))
                continue
            yield from self._push(depth - 1, layer, deadline)

    def _push(self, depth: int, layer: _Tls, deadline: float) -> Steps:
        """Move what ``layer`` has to send into the layer below it (at ``depth``)."""
        data = layer.outgoing.read()
        if data:
            yield from self._write(depth, data, deadline)

    def _push_now(self, depth: int, layer: _Tls) -> None:
        """After a TLS error: hand the alert to the wire if it is right below, not waiting."""
        data = layer.outgoing.read()
        wire = self._wire
        if data and depth == 0 and wire is not None and not wire.ended:
            transport: Any = wire.transport
            transport.write(data)

    # -- the wire -----------------------------------------------------------------------------

    def _take(self, deadline: float) -> Deferred[bytes] | bytes:
        """What has arrived, waiting for it if nothing has; b"" after a clean close."""
        wire = self._live()
        if wire.chunks:
            data = b"".join(wire.chunks)
            wire.chunks.clear()
            return data
        if wire.ended:
            error = wire.failure()
            if error is None:
                return b""
            raise error
        return wire.news(deadline).addCallback(lambda _: self._take(deadline))

    def _put(self, data: bytes, deadline: float) -> Deferred[None] | None:
        """Hand ``data`` to the transport; wait while it pushes back."""
        wire = self._live()
        if wire.ended:
            raise wire.failure() or BrokenPipeError("the server closed the connection")
        transport: Any = wire.transport
        transport.write(data)
        return self._drained(deadline)

    def _drained(self, deadline: float) -> Deferred[None] | None:
        wire = self._live()
        if wire.ended:
            raise wire.failure() or BrokenPipeError("the server closed the connection")
        if not wire.paused:
            return None
        return wire.news(deadline).addCallback(lambda _: self._drained(deadline))

    def _live(self) -> _Wire:
        wire = self._wire
        if wire is None:
            raise ConnectionAbortedError("the connection is closed")
        return wire

    def _drop(self, orderly: bool, epoch: int | None = None) -> Deferred[None] | None:
        """On the reactor: end the connection (or the connect in progress); calls waiting
        on it fail with ConnectionAbortedError."""
        if epoch is not None and epoch != self._epoch:
            return None  # abort() of an earlier connection, arriving after a new one began
        wire, self._wire, self._layers = self._wire, None, []
        dialing, self._dialing = self._dialing, None
        if dialing is not None:
            dialing.cancel()
        if wire is not None:
            wire.wake(ConnectionAbortedError("the connection is closed"))
            return wire.end(orderly)
        return None


__all__ = ["TwistedStream", "drive"]
