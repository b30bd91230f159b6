"""requests as the pump's connection: one ``requests.Session`` per connection (per worker,
or the caller's one for the blocking transport), kept alive between requests.

A session we build takes everything from our options and nothing from the environment
(``trust_env`` off: ``core/proxy.select`` already read HTTP(S)_PROXY and NO_PROXY when the
``trust_env`` option allows it). Its adapter is requests' ``HTTPAdapter`` over our tracked
urllib3 pools (``io/urllib3_io``): TLS wholly from our SSL context (requests' ``verify``
and ``cert`` handling and its CA bundle are not used), our proxy with its credentials, no
retries, one connection. No redirects are followed, cookies are not kept.

A session given by the user is used as given: its adapters, auth, hooks, headers, proxies,
``verify``/``cert`` and ``trust_env`` decide, and our ``verify_ssl``, ``ca_certs``,
``cert_file``/``key_file``, ``http_proxy``/``https_proxy`` and ``trust_env`` options do
not apply to it (see ``RequestsTransport``). The session is shared by the workers; we never
close it.
"""

from __future__ import annotations

from http.cookiejar import DefaultCookiePolicy
from typing import Any, cast

from ..core.errors import MissingDependencyError
from ..core.http11 import MAX_KEPT_BODY, Response
from ..core.request import Request
from ..runtime.threads import Inline, Threads

try:
    import requests
    from requests.adapters import HTTPAdapter
    from requests.structures import CaseInsensitiveDict
except ImportError:  # pragma: no cover - exercised in a subprocess without the library
    raise MissingDependencyError("requests", "requests", "the 'requests+' transport") from None

from urllib3.response import BaseHTTPResponse
from urllib3.util import Timeout

from .urllib3_io import (
    NO_RETRIES,
    ClientConnection,
    Tracker,
    forget_idle,
    pool_manager,
    proxy_url,
    read_response,
)


class _Adapter(HTTPAdapter):
    """requests' adapter over our pools: our TLS context, our proxy, no retries."""

    def __init__(self, tracker: Tracker, pump: Any) -> None:
        self._tracker = tracker
        self._pump = pump
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=NO_RETRIES)

    def _manager(self, proxy: Any) -> Any:
        pump = self._pump
        return pool_manager(
            self._tracker,
            proxy=proxy,
            tls=pump.tls,
            proxy_tls=pump.proxy_tls,
            timeout=pump.options.timeout,
            maxsize=self._pool_maxsize,
        )

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections, self._pool_maxsize, self._pool_block = connections, maxsize, block
        self.poolmanager = self._manager(None)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """The session's proxies name only the one our options chose (``pump.proxy``)."""
        if proxy not in self.proxy_manager:
            self.proxy_manager[proxy] = self._manager(self._pump.proxy)
        return self.proxy_manager[proxy]

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Nothing: verification and the client certificate are in our SSL context."""

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, _ = super().build_connection_pool_key_attributes(request, verify, cert)
        return host_params, {}  # no cert_reqs/ca_certs/cert_file: they would change our context


def make_session(pump: Any, tracker: Tracker) -> requests.Session:
    """A session for one connection, from our options alone."""
    session = requests.Session()
    session.trust_env = False  # our options chose the proxy; no netrc, no CA bundle variables
    session.headers.clear()  # ours only: no python-requests User-Agent, Accept-Encoding, ...
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    session.proxies = {pump.dsn.scheme: proxy_url(pump.proxy)} if pump.proxy else {}
    adapter = _Adapter(tracker, pump)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _read(response: requests.Response) -> Response:
    raw = response.raw
    if isinstance(raw, BaseHTTPResponse):
        return read_response(raw)
    # a user's adapter that does not answer with urllib3 (a test double, a custom stack)
    body = response.content[:MAX_KEPT_BODY]
    response.close()
    headers = tuple((str(k), str(v)) for k, v in response.headers.items())
    return Response(response.status_code, response.reason or "", headers, body, True)


class RequestsConnection(ClientConnection):
    """One worker's session: ours (built on first use, closed when the worker ends) or the
    user's (used as given, never closed)."""

    def __init__(self, runtime: RequestsThreads, pump: Any) -> None:
        super().__init__(runtime.tracker)
        self._pump = pump
        self._given = runtime.session
        self._session = runtime.session

    def _send(self, request: Request, timeout: Timeout) -> Response:
        session = self._session
        if session is None:
            assert self.tracker is not None
            session = self._session = make_session(self._pump, self.tracker)
        if session is not self._given:
            # Our own session has no hooks, auth, cookies or environment to merge: hand the
            # prepared request straight to its adapter (Session.request would cost about
            # half the client CPU of a small envelope in that merging).
            prepared = requests.PreparedRequest()
            prepared.method = request.method
            prepared.url = request.url
            prepared.headers = CaseInsensitiveDict(request.headers)
            prepared.body = request.body
            prepared.hooks = {"response": []}
            adapter = session.get_adapter(request.url)
            response = adapter.send(
                prepared,
                stream=True,
                timeout=cast(Any, timeout),
                verify=True,
                cert=None,
                proxies=session.proxies,
            )
            return _read(response)
        response = session.request(
            request.method,
            request.url,
            data=request.body,
            headers=dict(request.headers),
            timeout=cast(Any, timeout),  # requests passes a urllib3 Timeout through as is
            allow_redirects=False,
            stream=True,  # the body is read here, bounded
        )
        return _read(response)

    def close_now(self) -> None:
        session, self._session = self._session, self._given
        if session is not None and session is not self._given:
            session.close()

    def forget(self) -> None:
        """In a forked child: our session's sockets are the runtime's to forget (every one
        it made); a user's session keeps working, without its idle parent's sockets."""
        super().forget()
        if self._given is not None:
            for adapter in list(self._given.adapters.values()):
                forget_idle(getattr(adapter, "poolmanager", None))
                for manager in list(getattr(adapter, "proxy_manager", {}).values()):
                    forget_idle(manager)
        self._session = self._given


class RequestsThreads(Threads):
    """Worker threads, each with a requests session (``threaded+requests+``)."""

    name = "threaded+requests"
    session: requests.Session | None = None  # a user's session: see ``using``

    def __init__(self) -> None:
        super().__init__()
        self.tracker = Tracker()

    @classmethod
    def using(cls, session: requests.Session | None) -> type[RequestsThreads]:
        """This runtime bound to a user's session. A class, not an instance: the pump
        makes a new runtime as ``type(runtime)()`` when the process was monkey-patched."""
        if session is None:
            return cls
        return type(cls.__name__, (cls,), {"session": session})

    def connection(self, pump: Any) -> RequestsConnection:
        """A new worker's connection (what ``workers.Workers._connection`` would ask for)."""
        return RequestsConnection(self, pump)

    def after_fork(self) -> None:
        """In a forked child: close our copies of the parent's sockets, start afresh."""
        self.tracker.forget_all()
        self.tracker = Tracker()


class RequestsInline(RequestsThreads, Inline):
    """No workers: the caller's thread sends, with one session (``requests+``)."""

    name = "requests"
    inline = True
