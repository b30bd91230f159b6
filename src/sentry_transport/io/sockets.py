"""Blocking streams over the stdlib socket API, and the runner for blocking generators.

``SocketStream`` looks ``create_connection`` up when it connects, so a process patched by
gevent or eventlet gets green sockets; TLS comes from the context it is handed (a gevent or
eventlet context wraps green sockets). ``abort()`` may be called from any thread: it shuts the
socket down so that a read in progress fails at once.

``run(generator)`` executes the ``(callable, *args)`` calls a generator yields (see
``core/connection.py``), sending each result back or throwing its exception in.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable, Generator
from typing import Any

_RECV = 65536
# A plain (not TLS) stdlib socket on Linux is made blocking, with SO_RCVTIMEO/SO_SNDTIMEO
# for the deadline: a socket with a Python timeout polls before every recv and send, two
# system calls (and two hand-overs of the GIL) where one does. Green sockets (gevent,
# eventlet) and TLS sockets (which try the read before they poll) keep Python's timeouts,
# and so does the sync runtime, which reads on the caller's thread: a read interrupted by a
# signal is restarted by Python with the kernel's whole timeout again, so under a storm of
# signals only a worker's read (which close() aborts) may outlast its deadline.
_KERNEL_TIMEOUTS = sys.platform.startswith("linux")
_SLACK = 0.02  # seconds a call may overrun its deadline rather than reset the timeout


class SocketStream:
    def __init__(
        self,
        create_connection: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        kernel_timeouts: bool = True,
    ) -> None:
        self._create = create_connection
        self._clock = clock
        self._may_block = kernel_timeouts and _KERNEL_TIMEOUTS
        self._sock: Any = None
        self._timeout = 0.0  # the socket's timeout as last set
        self._kernel = False  # a blocking socket with the kernel's timeouts

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise TimeoutError("timed out")
        return remaining

    def _arm(self, sock: Any, deadline: float) -> None:
        """Make the socket's timeout end at the deadline. Setting it is a system call, so a
        timeout already within ``_SLACK`` of the deadline stays as it is."""
        remaining = self._remaining(deadline)
        if abs(self._timeout - remaining) > _SLACK:
            sock.settimeout(remaining)
            self._timeout = remaining

    def connect(
        self, host: str, port: int, tls: Any, server_hostname: str, deadline: float
    ) -> None:
        self.close()
        self._kernel = False
        create = self._create or socket.create_connection
        sock = create((host, port), self._remaining(deadline))
        self._timeout = sock.gettimeout() or 0.0
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                self._arm(sock, deadline)
                sock = tls.wrap_socket(sock, server_hostname=server_hostname)
            elif self._may_block and type(sock).__module__ == "socket":
                sock.settimeout(None)  # blocking, the kernel's timeouts (see _KERNEL_TIMEOUTS)
                self._kernel, self._timeout = True, -1.0  # (-1: armed at the first call)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def start_tls(self, tls: Any, server_hostname: str, deadline: float) -> None:
        sock = self._live()
        if self._kernel:  # back to Python's timeouts, under TLS
            self._kernel, self._timeout = False, -1.0
        self._arm(sock, deadline)
        self._sock = tls.wrap_socket(sock, server_hostname=server_hostname)

    def send(self, data: bytes, deadline: float) -> None:
        sock = self._live()
        if self._kernel:  # send() by send(): SO_SNDTIMEO bounds one call, not a sendall
            view, sent = memoryview(data), 0
            while sent < len(data):
                self._arm_kernel(sock, deadline)  # (TimeoutError once the deadline is past)
                try:
                    sent += sock.send(view[sent:])
                except BlockingIOError:  # the kernel's timeout, nothing more went out
                    raise TimeoutError("timed out") from None
            return
        self._arm(sock, deadline)
        sock.sendall(data)

    def recv(self, deadline: float) -> bytes:
        sock = self._live()
        if self._kernel:
            self._arm_kernel(sock, deadline)
            try:
                data: bytes = sock.recv(_RECV)
            except BlockingIOError:  # the kernel's timeout (SO_RCVTIMEO)
                raise TimeoutError("timed out") from None
            return data
        self._arm(sock, deadline)
        data = sock.recv(_RECV)
        return data

    def unasked(self) -> str:
        """Without waiting: "" if nothing came since the last read, "data" if bytes did,
        "end" if the peer ended the connection (or, under TLS, sent a record that is not
        known to be data: the socket is not to be reused either way)."""
        sock = self._sock
        if sock is None:
            return ""
        try:
            if self._kernel:  # a blocking socket: the flag makes this one call not wait
                return "data" if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) else "end"
            if getattr(sock, "pending", None) is not None:  # TLS (the stdlib's, or green)
                return self._tls_unasked(sock)
            if not _readable(sock):
                return ""
            return "data" if sock.recv(1, socket.MSG_PEEK) else "end"
        except (BlockingIOError, InterruptedError):
            return ""
        except (OSError, ValueError):  # reset, or a descriptor select() cannot take
            return "end"

    def _tls_unasked(self, sock: Any) -> str:
        """``unasked`` for a TLS socket: a record that came is read, without waiting (a TLS
        1.3 session ticket is consumed and means nothing; data or the end means the socket
        is done). The socket's timeout is set again at its next call."""
        if sock.pending():
            return "data"
        if not _readable(sock):
            return ""
        sock.settimeout(0.0)
        self._timeout = -1.0  # (armed again by the next call)
        try:
            return "data" if sock.recv(1) else "end"
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return ""  # a record that was not data

    def _arm_kernel(self, sock: Any, deadline: float) -> None:
        """``_arm`` for a blocking socket: the kernel's send and receive timeouts."""
        remaining = self._remaining(deadline)
        if abs(self._timeout - remaining) > _SLACK:
            seconds = int(remaining)
            value = struct.pack("ll", seconds, int((remaining - seconds) * 1e6) or 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            self._timeout = remaining

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    close_now = close  # the owner, done with it

    def abort(self) -> None:
        """From any thread: shut the socket down; a read in progress fails at once."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def forget(self) -> None:
        """In a forked child: close this process's copy of the socket; the parent's stays."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                os.close(sock.detach())

    def _live(self) -> Any:
        sock = self._sock
        if sock is None:
            raise ConnectionAbortedError("the connection is closed")
        return sock


def _readable(sock: Any) -> bool:
    """Whether a read on ``sock`` would not wait (data, or the end), asked without waiting."""
    poll = getattr(select, "poll", None)  # (gevent's patching takes poll away: then select)
    if poll is not None:
        poller = poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock.fileno()], [], [], 0)[0])


def run(generator: Generator[tuple[Any, ...], Any, Any]) -> Any:
    """Execute a generator of blocking calls to its end; its return value is ours."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = generator.send(value) if error is None else generator.throw(error)
        except StopIteration as stop:
            return stop.value
        error = value = None
        try:
            value = op[0](*op[1:])
        except BaseException as exc:  # handed to the generator, which decides
            error = exc
