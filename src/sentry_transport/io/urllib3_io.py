"""Whole HTTP clients as the pump's connection: the urllib3 pieces (requests builds on them).

The pump drives a connection with ``response = yield from conn.exchange(request, deadline)``.
The core's ``HttpConnection`` yields socket calls; urllib3 and requests take a whole request
instead, so ``ClientConnection.exchange`` yields ONE call, ``(self._post, request,
deadline)``, which the runtime's runner executes on the worker's thread: the library sends
the POST and reads the answer, and ``_post`` hands it back as a ``core.http11.Response``
with the real status and headers (so 429 and ``X-Sentry-Rate-Limits`` count) and at most
64 KiB of body. What the library raises becomes what the engine retries: an ``OSError``
subclass with the library's message (``HttpProtocolError`` for an answer that is not HTTP).

The library must not decide anything the engine decides: no retries of its own (a failed
POST is raised at once: ``Retry(total=False)``), no redirects, no proxies or CA bundles read
from the environment (``core/proxy.select`` and ``io/tls.ssl_context`` decide), and no
warning per request when the user turned verification off (``verify_ssl=0``). A kept-alive
connection the server closed while it was idle is replaced by urllib3 before use (nothing
was sent on it); one the server closes as it is used (reset, or closed before any answer)
is tried once more on a new connection within the same deadline, as the core's
``HttpConnection`` does, and by us, never by the library.

Our pools are urllib3's with a ``Tracker``: it learns which library connection each of our
connections is using, so that ``abort()`` can shut that socket down from another thread
(close), and it holds every library connection made, so that a forked child closes its
copies of the parent's sockets (``forget``) without touching the parent's, and without
taking a pool's lock, which a parent's thread may have held when the process forked.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Generator
from typing import Any

from ..core.connection import RESEND_ERRORS
from ..core.errors import MissingDependencyError
from ..core.http11 import MAX_KEPT_BODY, Response
from ..core.proxy import Proxy
from ..core.request import Request

try:
    import urllib3
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.response import BaseHTTPResponse
    from urllib3.util import Retry, Timeout
except ImportError:  # pragma: no cover - exercised in a subprocess without the library
    raise MissingDependencyError("urllib3", "urllib3", "the 'urllib3+' transport") from None

from .client_errors import LIBRARY_ERRORS as LIBRARY_ERRORS
from .client_errors import network_error as network_error

Io = Generator[tuple[Any, ...], Any, Any]
NO_RETRIES = Retry(total=False, redirect=False)  # the library raises the first failure
monotonic = time.monotonic


# -- sockets of library connections -----------------------------------------------------------


def _raw_socket(sock: Any) -> socket.socket | None:
    """The OS socket under a library connection's ``sock`` (TLS in TLS wraps one more)."""
    while sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)
    return sock


def shutdown(conn: Any) -> None:
    """From any thread: make a request in progress on ``conn`` fail at once."""
    sock = _raw_socket(getattr(conn, "sock", None))
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the fd's, not SSLSocket's


def forget_socket(conn: Any) -> None:
    """In a forked child: close this process's copy of ``conn``'s socket; the parent's stays
    open (no shutdown, no TLS close_notify). The pool then sees a dropped connection."""
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    conn.sock = None
    raw = _raw_socket(sock)
    if raw is not None:
        with contextlib.suppress(OSError):
            os.close(raw.detach())


def forget_idle(manager: Any) -> None:
    """In a forked child: ``forget_socket`` for the idle connections of a pool manager we did
    not build (a user's requests Session), reading urllib3's containers without their locks."""
    container = getattr(getattr(manager, "pools", None), "_container", None) or {}
    for pool in list(container.values()):
        queue = getattr(getattr(pool, "pool", None), "queue", None) or ()
        for conn in list(queue):
            if conn is not None:
                forget_socket(conn)


class Tracker:
    """Ties library connections to ours: which one each of ours is using (set on the
    worker's thread when the pool hands it out), and every one made (for a fork)."""

    def __init__(self) -> None:
        self.local = threading.local()  # looked up now: green after a monkey-patch rebuild
        self.made: weakref.WeakSet[Any] = weakref.WeakSet()

    def handed_out(self, conn: Any) -> None:
        owner: ClientConnection | None = getattr(self.local, "owner", None)
        if owner is not None:
            owner.bind(conn)

    def forget_all(self) -> None:
        for conn in list(self.made):
            forget_socket(conn)


class _Pool(HTTPConnectionPool):
    tracker: Tracker | None = None  # set by the manager that made the pool

    def _new_conn(self) -> Any:
        conn = super()._new_conn()
        if self.tracker is not None:
            self.tracker.made.add(conn)
        return conn

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        if self.tracker is not None:
            self.tracker.handed_out(conn)
        return conn


class _HttpsPool(_Pool, HTTPSConnectionPool):
    def _validate_conn(self, conn: Any) -> None:
        context = self.conn_kw.get("ssl_context")
        if context is not None and context.verify_mode == ssl.CERT_NONE:
            # verify_ssl=0 is the user's explicit choice: connect, but no warning per request
            if conn.is_closed:
                conn.connect()
            return
        super()._validate_conn(conn)


_POOLS = {"http": _Pool, "https": _HttpsPool}


def _tracked(pool: Any, tracker: Tracker) -> Any:
    if isinstance(pool, _Pool):
        pool.tracker = tracker
    return pool


class _PoolManager(urllib3.PoolManager):
    def __init__(self, tracker: Tracker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tracker = tracker
        self.pool_classes_by_scheme = _POOLS

    def _new_pool(self, *args: Any, **kwargs: Any) -> Any:
        return _tracked(super()._new_pool(*args, **kwargs), self.tracker)


class _ProxyManager(urllib3.ProxyManager):
    def __init__(self, tracker: Tracker, proxy_url: str, **kwargs: Any) -> None:
        super().__init__(proxy_url, **kwargs)
        self.tracker = tracker
        self.pool_classes_by_scheme = _POOLS

    def _new_pool(self, *args: Any, **kwargs: Any) -> Any:
        return _tracked(super()._new_pool(*args, **kwargs), self.tracker)


def proxy_url(proxy: Proxy) -> str:
    """The proxy's URL without credentials (they go in our Proxy-Authorization header)."""
    host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
    return f"{proxy.scheme}://{host}:{proxy.port}"


def pool_manager(
    tracker: Tracker,
    *,
    proxy: Proxy | None,
    tls: ssl.SSLContext | None,
    proxy_tls: ssl.SSLContext | None,
    timeout: float,
    maxsize: int,
) -> urllib3.PoolManager:
    """A pool manager for one DSN's requests, from our options: ``tls`` for the origin (an
    https DSN), our proxy (``core/proxy.select``'s choice) with its credentials, no retries,
    ``maxsize`` kept-alive connections per host, never blocking for a free one."""
    kwargs: dict[str, Any] = {
        "num_pools": 4,
        "maxsize": maxsize,
        "block": False,
        "retries": NO_RETRIES,
        "timeout": Timeout(total=timeout),
    }
    if tls is not None:
        kwargs["ssl_context"] = tls
    if proxy is None:
        return _PoolManager(tracker, **kwargs)
    auth = proxy.authorization()
    return _ProxyManager(
        tracker,
        proxy_url(proxy),
        proxy_headers={"Proxy-Authorization": auth} if auth else None,
        proxy_ssl_context=proxy_tls,
        **kwargs,
    )


# -- the connection ---------------------------------------------------------------------------


def read_response(raw: BaseHTTPResponse) -> Response:
    """The answer as the engine reads it; at most ``MAX_KEPT_BODY`` bytes of its body are
    read (a longer one costs the connection, not the memory), then the connection goes back
    to its pool."""
    try:
        body = raw.read(MAX_KEPT_BODY + 1, decode_content=False)
        headers = tuple((str(name), str(value)) for name, value in raw.headers.items())
        complete = len(body) <= MAX_KEPT_BODY
        if not complete:
            raw.close()  # the rest is not worth reading: the connection goes
    except BaseException:
        raw.close()
        raise
    finally:
        raw.release_conn()
    connection = ",".join(v.lower() for k, v in headers if k.lower() == "connection")
    keep_alive = complete and "close" not in connection
    if raw.version == 10:
        keep_alive = keep_alive and "keep-alive" in connection
    return Response(raw.status, raw.reason or "", headers, body[:MAX_KEPT_BODY], keep_alive)


class ClientConnection:
    """The role of ``core.connection.HttpConnection`` for a library that is a whole HTTP
    client: ``exchange`` yields one call that does the POST (see the module's docstring).

    The pump also uses ``since`` (when the request in progress began), ``abort()`` (from any
    thread: break it, send nothing more) and ``stream.close_now()`` / ``stream.forget()``
    (the worker is done with it / a forked child must not use it); ``stream`` is the
    connection itself, and ``stream.abort()`` is ``abort()``.
    """

    def __init__(self, tracker: Tracker | None) -> None:
        self.tracker = tracker
        self.open = False  # the last answer left the connection open for the next request
        self.aborted = False
        self.since = 0.0
        self._active: Any = None  # the library's connection of the request in progress
        self._reused = False  # ... which was kept alive from an earlier request

    @property
    def stream(self) -> ClientConnection:
        return self

    def exchange(self, request: Request, deadline: float) -> Io:
        """Send one request, read its answer: ``response = yield from conn.exchange(...)``."""
        if self.aborted:
            raise ConnectionAbortedError("the transport is closed")
        self.open = False
        try:
            response: Response = yield (self._post, request, deadline)
        except RESEND_ERRORS:
            if not self._reused or self.aborted:
                raise
            # The server closed a kept-alive connection as we used it: once more on a new
            # one, within the first try's deadline (as the core's HttpConnection does).
            response = yield (self._post, request, deadline)
        self.open = response.keep_alive
        return response

    def _post(self, request: Request, deadline: float) -> Response:
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        if self.aborted:
            raise ConnectionAbortedError("the transport is closed")
        self._reused = False
        local = self.tracker.local if self.tracker is not None else None
        if local is not None:
            local.owner = self
        try:
            return self._send(request, Timeout(total=remaining))
        except LIBRARY_ERRORS as exc:
            raise network_error(exc) from exc
        finally:
            if local is not None:
                local.owner = None
            self._active = None

    def _send(self, request: Request, timeout: Timeout) -> Response:
        raise NotImplementedError

    def bind(self, conn: Any) -> None:
        """On the worker's thread: the pool handed out ``conn`` for our request."""
        self._active = conn  # set before looking at ``aborted``, which abort() sets first
        self._reused = conn.sock is not None  # kept alive (the pool dropped it if closed)
        if self.aborted:  # closed meanwhile: nothing goes out (urllib3 pools a None instead)
            self._active = None
            conn.close()
            raise ConnectionAbortedError("the transport is closed")

    def abort(self) -> None:
        """From any thread: break what is in progress; this connection sends nothing more."""
        self.aborted = True
        self.open = False
        conn = self._active
        if conn is not None:
            shutdown(conn)

    def close_now(self) -> None:
        """The owner is done with it."""

    def forget(self) -> None:
        """In a forked child: close this process's copy of the socket in use, if any."""
        conn, self._active = self._active, None
        if conn is not None:
            forget_socket(conn)
