"""A blocking HTTP/1.1 connection (stdlib sockets + the sans-I/O codec), and the one
function every thread-based driver uses to deliver a job.

One ``Connection`` is one keep-alive socket to the server (through a proxy if the options or
the environment say so: CONNECT for https, absolute-form for http). A request that finds its
reused socket closed by the server before any answer byte is sent again once on a new socket.
``abort()`` may be called from another thread to break a request in progress.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable

from .core import proxy as _proxy
from .core.dsn import Dsn
from .core.engine import Engine, Job
from .core.errors import HttpProtocolError
from .core.http11 import Response, ResponseParser, StaleConnection
from .core.request import Request

NETWORK_ERRORS = (OSError, HttpProtocolError)  # ssl.SSLError and socket.timeout are OSErrors
_RECV = 65536


class Connection:
    def __init__(self, dsn: Dsn, context: ssl.SSLContext | None) -> None:
        self.dsn = dsn
        self.context = context
        self.timeout = dsn.options.timeout
        self.proxy = _proxy.select(dsn, os.environ)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # guards _sock against abort() from another thread

    def request(self, request: Request) -> Response:
        reused = self._sock is not None
        try:
            return self._exchange(request)
        except (ConnectionResetError, BrokenPipeError, StaleConnection):
            self.close()
            if not reused:
                raise
            return self._exchange(request)  # the server closed an idle keep-alive socket

    def _exchange(self, request: Request) -> Response:
        sock = self._sock or self._connect()
        head = _proxy.request_head(request, self.dsn, self.proxy)
        try:
            sock.settimeout(self.timeout)
            if len(request.body) < 16384:
                sock.sendall(head + request.body)
            else:
                sock.sendall(head)
                sock.sendall(request.body)
            response = _read_response(sock, time.monotonic() + self.timeout, stale_check=True)
        except BaseException:
            self.close()
            raise
        if not response.keep_alive:
            self.close()
        return response

    def _connect(self) -> socket.socket:
        dsn = self.dsn
        proxy = self.proxy
        if proxy is None:
            sock = socket.create_connection((dsn.hostname, dsn.effective_port), self.timeout)
        else:
            sock = socket.create_connection((proxy.host, proxy.port), self.timeout)
            if proxy.scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=proxy.host)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if proxy is not None and dsn.scheme == "https":
                self._tunnel(sock, proxy)
            if dsn.scheme == "https":
                assert self.context is not None
                sock.settimeout(self.timeout)
                sock = self.context.wrap_socket(sock, server_hostname=dsn.hostname)
        except BaseException:
            sock.close()
            raise
        with self._lock:
            self._sock = sock
        return sock

    def _tunnel(self, sock: socket.socket, proxy: _proxy.Proxy) -> None:
        sock.settimeout(self.timeout)
        sock.sendall(_proxy.tunnel_head(self.dsn, proxy))
        response = _read_response(sock, time.monotonic() + self.timeout, no_body=True)
        _proxy.check_tunnel(self.dsn, response)

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def abort(self) -> None:
        """Break a request in progress (from another thread): its read fails at once."""
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _read_response(
    sock: socket.socket, deadline: float, no_body: bool = False, stale_check: bool = False
) -> Response:
    parser = ResponseParser(no_body=no_body)
    first = True
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for the server's answer")
        sock.settimeout(remaining)
        data = sock.recv(_RECV)
        if not data:
            if first and stale_check:
                raise StaleConnection("the server closed the connection before answering")
            return parser.eof()
        first = False
        response = parser.feed(data)
        if response is not None:
            return response


def deliver(
    engine: Engine, lock: threading.Lock, conn: Connection, job: Job, clock: Callable[[], float]
) -> None:
    """Send one job and tell the engine how it went; never raises for a job's sake."""
    try:
        attempt = engine.prepare(job, clock())
    except Exception as exc:  # a bug must cost the job, not the worker
        with lock:
            engine.fail(job, exc)
        return
    if attempt is None:
        with lock:
            engine.finish(job)
        return
    try:
        response = conn.request(attempt.request)
    except NETWORK_ERRORS as exc:
        with lock:
            engine.on_error(attempt, exc, clock())
        return
    with lock:
        engine.on_response(attempt, response.status, response.headers, clock())
