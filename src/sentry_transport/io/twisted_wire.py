"""The TCP side of the twisted stream (twisted_io.py): a Protocol that buffers what arrives
and fires the one pending wait, the mapping of Twisted's connection-lost reasons to the
exceptions our connection expects, and the factory that dials.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from ..core.errors import MissingDependencyError

try:
    from twisted.internet import error as twisted_errors
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IAddress
    from twisted.internet.protocol import Factory, Protocol, connectionDone
    from twisted.python.failure import Failure
except ImportError:  # pragma: no cover - exercised without twisted installed
    raise MissingDependencyError("twisted", "twisted", "the 'twisted+' transport") from None

if TYPE_CHECKING:
    _FactoryBase = Factory[Any]
else:  # older twisted's Factory is not generic at run time
    _FactoryBase = Factory

_LINGER = 0.25  # seconds a closing connection has to send what it was given (a TLS alert)


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
