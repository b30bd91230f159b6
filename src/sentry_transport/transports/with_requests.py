"""The requests transports: ``requests+`` sends on the caller's thread (like ``sync+``),
``threaded+requests+`` on worker threads (like ``threaded+``), with requests doing the HTTP.

Each connection has its own ``requests.Session``, kept alive (one per worker; one for the
blocking transport), built from our options alone (``io/requests_io.py``): ``timeout`` per
request, TLS from ``verify_ssl``/``ca_certs``/``cert_file``/``key_file``, the proxy our
rules chose (options, then HTTP(S)_PROXY/NO_PROXY with ``trust_env``), no retries, no
redirects, no cookies. The engine reads the real status and headers (429 and
``X-Sentry-Rate-Limits`` are honoured) and retries network errors itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._transport import EngineTransport
from ..core.dsn import Dsn
from ..io.requests_io import RequestsInline, RequestsThreads  # MissingDependencyError first

if TYPE_CHECKING:
    import requests


class _RequestsTransport(EngineTransport):
    runtime: type[RequestsThreads] = RequestsThreads

    def __init__(
        self, dsn: str | Dsn, *, session: requests.Session | None = None, **options: Any
    ) -> None:
        self.session = session
        super().__init__(dsn, **options)

    def _make_runtime(self) -> RequestsThreads:
        return self.runtime.using(self.session)()


class RequestsTransport(_RequestsTransport):
    """Sends on the caller's thread with requests: ``capture_envelope`` makes one try.

    transport = RequestsTransport("https://key@o1.ingest.sentry.io/42", timeout=2)
    transport.capture_event({"message": {"formatted": "hello"}})  # one try, done
    transport.flush(2.0)  # the retries of failed tries, within the deadline

    ``session=`` a ``requests.Session`` of yours (auth hooks, adapters, proxies, mounts) is
    used as given and never closed by us. Its own settings then replace our options
    ``verify_ssl``, ``ca_certs``, ``cert_file``/``key_file`` (its ``verify``/``cert``),
    ``http_proxy``/``https_proxy`` and ``trust_env`` (its ``proxies``/``trust_env``), and
    its adapters' pool sizes and retries (requests' default adapter retries nothing); our
    ``timeout``, compression, retry policy and rate limits still apply, and redirects are
    not followed. A request in progress on it cannot be broken off by ``close``: it ends
    within ``timeout``. It is shared by the workers of ``ThreadedRequestsTransport``.
    """

    name = "requests"
    runtime = RequestsInline


class ThreadedRequestsTransport(_RequestsTransport):
    """Background delivery on worker threads, each with a requests session of its own.

    transport = ThreadedRequestsTransport("https://key@o1.ingest.sentry.io/42")
    transport.capture_event({"message": {"formatted": "hello"}})  # returns at once
    transport.close(2.0)  # drain within 2 s; stats() is final

    ``session=``: as for ``RequestsTransport`` (one session then serves every worker).
    """

    name = "threaded+requests"
    runtime = RequestsThreads


__all__ = ["RequestsTransport", "ThreadedRequestsTransport"]
