"""How many workers a transport runs: growth judged by the fastest recent round trip.

``Growth`` is a part of ``workers.Workers`` (a mixin, as ``sending.Sender``: the attributes
it uses are the workers'). The decision itself is the core's (``engine.should_grow``); here
are its inputs, read from the workers: the backlog, the idle workers, the process's CPU, and
how slow the server is, taken as the fastest of the recent round trips (waits for the GIL or
the CPU only ever add to one), or a request hanging in flight.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .core.engine import should_grow

if TYPE_CHECKING:
    from collections import deque

    from .core.engine import Engine
    from .core.envelope import Envelope
    from .core.options import TransportOptions
    from .core.pipelining import Pipelining

# While pipelining, connections grow to this many against a slow server, FAR_CONNECTIONS
# against a far one, each carrying up to pipeline_depth requests (32: 128 and 256 in flight).
# Throughput is in flight / round trip: 128 at 2-10 ms is 12,800/s or more, 256 at 100 ms
# 2,560/s. The count of connections is kept, whatever the depth: a server answers the
# requests pipelined on one connection one after the other (hyper, which Relay is built on,
# does), so against a server slow at its own work it is the connections that go faster.
PIPELINED_CONNECTIONS = 4
FAR_CONNECTIONS = 8
RTT_WINDOW = 32  # round trips per window of the fastest-round-trip estimate
HANGING = 0.05  # a request in flight this long says the server is slow before it answers
# Round trips measured before their fastest may say the server is slow (grow past
# BASE_CONNECTIONS): against a near server a busy process's first few can all have waited
# for the GIL or the CPU (seen: 4 of 3-13 ms against a sink answering in well under 1 ms).
SURE_SAMPLES = 8
# A far server: the fastest of at least FAR_SAMPLES round trips this slow, while the process
# used less than FAR_CPU of a core. Then the workers the backlog needs start at once, not one
# per round (see _timed). Against a near server round trips also read slow at times, waiting
# for the GIL (a switch interval is 5 ms) or for a loaded server, but not all of them, and
# the process is then mostly busy: the first answers on two sockets alone are not enough.
FAR = 0.01
FAR_SAMPLES = 2
FAR_CPU = 0.5


_SLOWEST = float("inf")  # a round trip no server is slower than (see _growth_due)

monotonic = time.monotonic


class Growth:
    # what it uses of Workers
    engine: Engine
    lock: Any
    workers: int
    idle: list[Any]
    inbox: deque[Envelope]
    connections: set[Any]
    inline: bool
    pipelining: Pipelining
    options: TransportOptions

    if TYPE_CHECKING:

        def _spawn(self) -> None: ...

    def _fresh_growth(self) -> None:
        self.round_trip = 0.0  # the fastest round trip of the last 32 to 64 (0: none yet)
        self._fastest = (float("inf"), float("inf"), 0)  # this window's, the last one's, n
        self.samples = 0  # round trips measured (counted up to RTT_WINDOW)
        # process CPU seconds per second lately (Sender._measure_cpu); taken as busy until
        # the first CPU_WINDOW is over, so that a loaded machine's slow first answers do not
        # start workers against a server that answers at once
        self.cpu_busy = 1.0
        self._cpu_mark = (monotonic(), time.process_time())  # when last measured, and CPU

    def _growth_due(self) -> bool:
        """Whether a new worker looks due, read without the lock (so that a capture takes the
        lock only when it is likely to start one; ``_may_start`` decides under the lock).
        How slow the server is, the dearest to read, is read only if a server as slow as
        can be would get a worker now (``should_grow`` only grows with the round trip)."""
        if self.engine.stopped:
            return False
        workers, idle, most = self.workers, len(self.idle), self._most_connections()
        backlog, busy = self.engine.ready + len(self.inbox), self.cpu_busy
        return should_grow(workers, idle, backlog, _SLOWEST, busy, most) and should_grow(
            workers, idle, backlog, self._slowest(), busy, most
        )

    def _most_connections(self) -> int:
        """``max_connections``; fewer while pipelining: PIPELINED_CONNECTIONS (far servers:
        FAR_CONNECTIONS)."""
        if self.pipelining.depth == 1:
            return self.options.max_connections
        connections = FAR_CONNECTIONS if self._far() else PIPELINED_CONNECTIONS
        return min(self.options.max_connections, connections)

    def _grow(self) -> None:
        with self.lock:
            spawn = self._may_start(first=False)
        if spawn:
            self._spawn()

    def _timed(self, seconds: float) -> None:
        """A round trip measured (as soon as its answer is read). Against a far server, start
        the workers the backlog can fill (a pipeline each) now: waiting for the next round,
        one worker per round, would cost a round trip per worker."""
        self._sample(seconds)
        if not self._far() or self.engine.stopped:
            return
        since, cpu = self._cpu_mark  # the process's CPU since it was last measured
        elapsed = monotonic() - since
        busy = (time.process_time() - cpu) / elapsed if elapsed > FAR / 2 else self.cpu_busy
        if busy >= FAR_CPU or self.inline:
            return
        depth, most = self.pipelining.depth, self._most_connections()
        with self.lock:
            backlog = self.engine.ready + len(self.inbox)
            count = 0
            while backlog > count * depth and should_grow(
                self.workers, len(self.idle), backlog, self.round_trip, busy, most
            ):
                self.workers += 1
                count += 1
        for _ in range(count):
            self._spawn()

    def _far(self) -> bool:
        """Whether the server is far: the fastest of FAR_SAMPLES round trips or more >= FAR."""
        return self.round_trip >= FAR and self.samples >= FAR_SAMPLES

    def _may_start(self, first: bool) -> bool:
        """Under the lock: count a new worker in if one should start now."""
        if self.inline or self.engine.stopped:
            return False
        if first:
            if self.workers or not (self.inbox or self.engine.pending):
                return False
        elif not self._growth_due():
            return False
        self.workers += 1
        return True

    def _slowest(self) -> float:
        """How slow the server is: the fastest recent round trip (waits for the GIL or the
        CPU only ever add to a round trip, so the fastest is the closest to the server's
        own time), or a request in flight far longer than that (a hanging server)."""
        now = monotonic()
        connections = tuple(self.connections)  # one C call: safe without the lock
        hanging = max([now - c.since for c in connections if c.since], default=0.0)
        measured = self.round_trip if self.samples >= SURE_SAMPLES else 0.0
        return max(measured, hanging if hanging > HANGING else 0.0)

    def _sample(self, seconds: float) -> None:
        current, last, count = self._fastest
        current = min(current, seconds)
        if count + 1 >= RTT_WINDOW:
            last, current, count = current, float("inf"), -1
        self._fastest = (current, last, count + 1)
        self.round_trip = min(current, last)
        if self.samples < RTT_WINDOW:
            self.samples += 1
