"""The urllib3 transport (``urllib3+``): background delivery like ``threaded+``, with urllib3
doing the HTTP.

Worker threads (up to ``max_connections``) share ONE urllib3 pool manager holding at most
``max_connections`` kept-alive connections; a worker never waits for a free one
(``io/urllib3_runtime.py``). Our options are mapped onto urllib3 (``io/urllib3_io.py``):
``timeout`` per request (connect and read within it), TLS from ``verify_ssl``/``ca_certs``/
``cert_file``/``key_file``, the proxy our rules chose (options, then HTTP(S)_PROXY/NO_PROXY
with ``trust_env``), no retries and no redirects in urllib3: the engine decides, reading the
real status and headers (429, ``X-Sentry-Rate-Limits``). Fork, monkey-patching and
interpreter exit are the pump's.
"""

from __future__ import annotations

from .._transport import EngineTransport
from ..io.urllib3_runtime import Urllib3Threads  # MissingDependencyError first


class Urllib3Transport(EngineTransport):
    """Background delivery on worker threads over one urllib3 pool manager.

    transport = Urllib3Transport("https://key@o1.ingest.sentry.io/42", max_connections=8)
    transport.capture_event({"message": {"formatted": "hello"}})
    transport.close(2.0)  # drain within 2 s; stats() is final
    """

    name = "urllib3"
    runtime = Urllib3Threads


__all__ = ["Urllib3Transport"]
