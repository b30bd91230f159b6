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
import socket
import time
from collections.abc import Callable, Generator
from typing import Any

_RECV = 65536
_SLACK = 0.02  # seconds a call may overrun its deadline rather than reset the timeout


class SocketStream:
    def __init__(
        self,
        create_connection: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._create = create_connection
        self._clock = clock
        self._sock: Any = None
        self._timeout = 0.0  # the socket's timeout as last set

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
        create = self._create or socket.create_connection
        sock = create((host, port), self._remaining(deadline))
        self._timeout = sock.gettimeout() or 0.0
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                self._arm(sock, deadline)
                sock = tls.wrap_socket(sock, server_hostname=server_hostname)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def start_tls(self, tls: Any, server_hostname: str, deadline: float) -> None:
        sock = self._live()
        self._arm(sock, deadline)
        self._sock = tls.wrap_socket(sock, server_hostname=server_hostname)

    def send(self, data: bytes, deadline: float) -> None:
        sock = self._live()
        self._arm(sock, deadline)
        sock.sendall(data)

    def recv(self, deadline: float) -> bytes:
        sock = self._live()
        self._arm(sock, deadline)
        data: bytes = sock.recv(_RECV)
        return data

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
