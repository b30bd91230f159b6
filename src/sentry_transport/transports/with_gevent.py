"""The gevent transport: delivery on greenlets, whether or not the process is monkey-patched.

Capture never blocks and works from any greenlet or OS thread. Workers are greenlets on the
hub of the thread that made the transport (up to ``max_connections``, one keep-alive
connection each), over gevent's sockets and TLS; large envelopes are encoded and compressed
in the hub's threadpool. ``flush``/``close`` from a greenlet yield to the hub while they
wait; from another OS thread they block that thread only. Fork and interpreter exit are
handled by the pump (see pump.py and runtime/gevent_runtime.py).

Without monkey-patching, greenlets run while the application waits on gevent (its server,
``gevent.sleep``, a join) or in ``flush``/``close``, and at exit at the latest.
"""

from __future__ import annotations

from .._transport import EngineTransport
from ..runtime.gevent_runtime import Gevent  # a MissingDependencyError without gevent


class GeventTransport(EngineTransport):
    name = "gevent"
    runtime = Gevent


__all__ = ["GeventTransport"]
