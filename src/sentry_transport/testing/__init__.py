"""A local Sentry-compatible server (``Sink``), an HTTP proxy (``Proxy``) and a pytest fixture.

    with Sink() as sink:
        transport = make_transport(sink.dsn)
        transport.capture_envelope(envelope)
        transport.flush(5)
        assert sink.wait_for(1)
        assert sink.envelopes[0].event_id == envelope.event_id

Script failures with ``sink.script(Respond(429, {"Retry-After": "1"}), Reset(), Hang(2))``:
each request takes the next behaviour, then ``sink.default`` applies. Run a sink in the
foreground with ``python -m sentry_transport.testing [--port P] [--latency S] [--quiet]``;
``--lean`` runs ``lean.LeanServer`` instead, for benchmarks: the same routes, key and limits,
but bodies are counted and skipped, never decoded or recorded.

How it is built: each server runs an asyncio event loop in its own daemon thread
(``_server``) and reads requests with a small HTTP/1.1 reader (``_http``). The sink
(``sink``) decodes and parses each body (``_decoding``), records it (``_record``) and
answers as scripted; the proxy (``proxy``) tunnels or forwards to 127.0.0.1. This package
is also the pytest plugin named by the ``pytest11`` entry point: with pytest installed it
carries the ``sentry_sink`` fixture from ``plugin``.
"""

from __future__ import annotations

from . import plugin as _plugin
from ._cli import main
from ._decoding import MAX_DECOMPRESSED
from ._http import MAX_BODY, MAX_HEAD
from ._record import Behaviour, Close, Hang, Received, Reset, Respond
from .proxy import Proxy
from .sink import Sink

if _plugin.HAVE_PYTEST:
    from .plugin import (  # noqa: F401 -- found here by pytest's plugin loader
        pytest_configure,
        sentry_sink,
    )

__all__ = [
    "MAX_BODY",
    "MAX_DECOMPRESSED",
    "MAX_HEAD",
    "Behaviour",
    "Close",
    "Hang",
    "Proxy",
    "Received",
    "Reset",
    "Respond",
    "Sink",
    "main",
]
