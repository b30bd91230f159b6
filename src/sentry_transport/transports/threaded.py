"""The threaded transport (the default): background delivery that never blocks the caller.

Capture is a lock-free append; worker threads (up to ``max_connections``, each with one
keep-alive connection) encode, compress and send, taking and reporting several envelopes per
round when there is a backlog. Workers grow past two only while round trips are slow and the
process is not busy on the CPU. Fork, monkey-patching and interpreter exit are handled by the
pump (see pump.py).
"""

from __future__ import annotations

from .._transport import EngineTransport
from ..runtime.threads import Threads


class ThreadedTransport(EngineTransport):
    """Background delivery on worker threads (the default): capture never blocks.

    transport = ThreadedTransport("https://key@o1.ingest.sentry.io/42", max_connections=8)
    transport.capture_event({"message": {"formatted": "hello"}})
    transport.flush(2.0)  # True once everything captured so far is delivered or counted
    transport.close(2.0)  # stop, drain within 2 s, count the rest: stats() is final
    """

    name = "threaded"
    runtime = Threads
