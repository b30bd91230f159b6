"""The sync transport: sends in the caller's thread, blocking for one request.

``capture_envelope`` sends that envelope, and only it, on one keep-alive connection (with any
pending client report riding along), and returns when the server answered or the try failed.
A failed try stays queued for its retries, which ``flush``/``close`` send, sleeping for the
backoff but never past their deadline.
"""

from __future__ import annotations

from .._transport import EngineTransport
from ..runtime.threads import Inline


class SyncTransport(EngineTransport):
    """Sends on the caller's thread: ``capture_envelope`` makes one try and returns.

    transport = SyncTransport("https://key@o1.ingest.sentry.io/42", timeout=2)
    transport.capture_event({"message": {"formatted": "hello"}})  # one try, done
    transport.flush(2.0)  # the retries of failed tries, within the deadline
    """

    name = "sync"
    runtime = Inline
