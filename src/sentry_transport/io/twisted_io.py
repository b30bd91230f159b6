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
from collections.abc import Callable, Generator
from typing import Any

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
    from twisted.python.failure import Failure
except ImportError:  # pragma: no cover - exercised without twisted installed
    raise MissingDependencyError("twisted", "twisted", "the 'twisted+' transport") from None

from .twisted_wire import _dial_error, _Dialer, _remaining, _Wire

Steps = Generator[tuple[Any, ...], Any, Any]
_TCP6: Any = TCP6ClientEndpoint  # (its __init__ has no annotations)
_RECV = 65536  # plaintext read from a TLS layer at a time
_CHUNK = 65536  # plaintext encrypted at a time: the transport may push back in between
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

    def unasked(self) -> str:
        """What came since the last read: nothing (""), bytes ("data"), or the end of the
        connection ("end"; under TLS also a record not yet known to be data)."""
        wire = self._wire
        if wire is None:
            return ""
        if any(layer.session.pending() for layer in self._layers):
            return "data"
        if wire.chunks:
            return "end" if self._layers else "data"
        return "end" if wire.ended else ""

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
