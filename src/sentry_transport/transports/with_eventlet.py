"""The eventlet transport: delivery on green threads, whether or not the process is patched.

Eventlet is in maintenance mode upstream; this transport is kept small. Capture never blocks
and works from any green thread or OS thread. Workers are green threads on the hub of the
thread that made the transport (up to ``max_connections``), over eventlet's green sockets
and TLS; ``flush``/``close`` from a green thread yield to the hub, from another OS thread
they block that thread only. Fork and interpreter exit are handled by the pump (pump.py,
runtime/eventlet_runtime.py).
"""

from __future__ import annotations

from .._transport import EngineTransport
from ..runtime.eventlet_runtime import Eventlet  # a MissingDependencyError without eventlet


class EventletTransport(EngineTransport):
    name = "eventlet"
    runtime = Eventlet


__all__ = ["EventletTransport"]
