"""What a transport learns about pipelining to its server, shared by its connections.

A socket sends one request alone until a keep-alive answer came back on it or on another of
the transport's sockets, or a pipelined request was answered (``Pipelining.trusted``); then
it writes up to ``depth`` requests before reading their answers, and at most
``PIPELINE_BYTES`` of bodies beyond the first. A server or proxy that does not pipeline
(``refuse``, with one of the reasons below) gets one request at a time from then on. The
connection that uses it is ``connection.HttpConnection``.
"""

from __future__ import annotations

PIPELINE_BYTES = 256 * 1024  # body bytes in flight on one connection beyond its first request

# why pipelining stops (``Pipelining.refused``; a timeout or a malformed answer to a request
# written behind another says what it was)
CLOSED_AFTER_ONE = "the server closed the connection after one answer"
STRAY = "the server sent an answer no request asked for"


class Pipelining:
    """What a transport has learned about pipelining to its server; its connections share it.

    ``depth``: requests one connection may have in flight (1: one at a time). ``proven``: a
    request written behind another was answered. ``kept_alive``: a socket got a keep-alive
    answer. Either lets a new socket fill its window from its first write. ``refused``: why
    pipelining was turned off, or None.
    """

    __slots__ = ("depth", "kept_alive", "proven", "refused")

    def __init__(self, depth: int = 1) -> None:
        self.depth = max(1, depth)
        self.proven = False
        self.kept_alive = False
        self.refused: str | None = None

    @property
    def trusted(self) -> bool:
        return self.proven or self.kept_alive

    def refuse(self, why: str) -> None:
        if self.depth > 1:
            self.depth = 1
            self.refused = why
