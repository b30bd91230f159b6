"""Threads: workers are daemon threads over blocking sockets (the default runtime).

Also what a gevent- or eventlet-patched process gets: the thread, event and socket objects are
looked up when made, so after patching they are green. ``patched()`` tells the pump that the
process was patched after the runtime was made, so that it rebuilds (see pump.py).
"""

from __future__ import annotations

import _thread
import socket
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from ..core import jsonenc
from ..core.engine import Attempt
from ..core.envelope import Envelope
from ..core.options import TransportOptions
from ..io import tls
from ..io.sockets import SocketStream, run

INLINE_ENCODE_BYTES = 16 * 1024  # loops and hubs: less work than this is encoded on the loop
# A job this small whose JSON is encoded already (by its measuring) is only joined into a
# request, not compressed (the default compression_threshold): no slow work to move off a loop.
READY_JOB_BYTES = 2048


def encodes_inline(attempts: list[Attempt]) -> bool:
    """Whether a loop or hub encodes these attempts itself rather than in a thread: the slow
    work they hold (JSON still to encode, bodies to compress) is under INLINE_ENCODE_BYTES.
    A batch of small events measured already holds none: joining each into a request costs
    a few us, less than the hop to a thread and back (with a compression_threshold below
    READY_JOB_BYTES their compression is done on the loop too, a few us each)."""
    work = 0
    for attempt in attempts:
        size = attempt.job.size
        if size >= READY_JOB_BYTES or not all(item.payload_is_encoded for item in attempt.items):
            work += size
            if work >= INLINE_ENCODE_BYTES:
                return False
    return True


def encoded_size(envelope: Envelope) -> int:
    """Bytes an envelope holds: its JSON is encoded here, which sending needs anyway. What
    cannot be encoded is counted by its estimate and left for the engine to count as lost
    when it prepares the request."""
    size = 0
    for item in envelope.items:
        try:
            size += len(item.payload)
        except (TypeError, ValueError, RecursionError):
            size += item.size_hint()
    return size


LOOP_ENCODE_BUDGET = 256 * 1024  # JSON bytes one drain encodes on a loop with orjson, at most
# ... and with the standard library's JSON, over 10x slower (`bench/compression.py`: 0.87 ms
# against 0.06 for a 128 KB event): a drain holds the loop for about 0.4 ms at most (or for
# one envelope, however large: the encoder cannot be stopped half-way).
LOOP_STDLIB_BUDGET = 64 * 1024
# JSON bytes a thread runtime's drain encodes before what it measured goes to the engine:
# the rest waits for the next drain (a peer's, while this worker sends). Without it, a drain
# of 256 large events encoded ~150 ms of JSON while no worker had anything to compress (the
# standard library's JSON holds the GIL; zlib does not).
DRAIN_BYTES = 256 * 1024


class LoopSizes:
    """``measure``/``measure_all`` for a loop's or hub's runtime: by encoding, on the loop,
    with either encoder. A capture measures its own envelope (``encoded_size``); a worker
    measures what the inbox held, the first envelopes up to the loop's budget of JSON
    (``budgeted_sizes``), the rest going back to the inbox for the next drain, as a thread
    runtime's ``DRAIN_BYTES`` do. The JSON is encoded once: sending reuses it.

    Not in a thread, not estimated, even with the standard library's JSON: its encoder
    holds the GIL from start to end, so a thread encoding it stalls the loop as long as the
    loop encoding it would (`bench/loop_stall.py`: a 5.6 MB event's JSON, 100-120 ms to
    encode, held the loop for 115 ms from the executor, 100 ms on the loop; zlib of it in
    the executor, 1.4 ms), and the hop and the estimate cost more than they freed: 48-56 us
    of client CPU per small event without orjson, against 25-30 on the loop. Estimating
    first cost more than encoding (27 us for a 1 KB event against 14; 108 against 70 with
    orjson for 100 KB), and the encode came all the same. Compression, which zlib does
    without the GIL, still goes to a thread when a batch holds enough of it
    (``encodes_inline``); a flush that drains on the loop gives it a turn between drains
    (``pump.LOOP_TURN``)."""

    cooperative = True  # (see runtime/__init__.py)
    measure = staticmethod(encoded_size)  # the caller's own envelope

    @staticmethod
    def measure_all(envelopes: list[Envelope]) -> list[int]:
        return budgeted_sizes(envelopes)


def loop_budget() -> int:
    """JSON bytes one drain encodes on a loop (see ``LOOP_STDLIB_BUDGET``)."""
    return LOOP_ENCODE_BUDGET if jsonenc.accelerator is not None else LOOP_STDLIB_BUDGET


def budgeted_sizes(envelopes: list[Envelope]) -> list[int]:
    """Sizes on a loop: ``encoded_prefix`` up to ``loop_budget()``."""
    return encoded_prefix(envelopes, loop_budget())


def encoded_prefix(envelopes: list[Envelope], budget: int) -> list[int]:
    """``encoded_size`` of the first envelopes, until their JSON reaches ``budget`` bytes
    (one at least): a drain hands these to the engine, the rest wait for the next drain."""
    sizes: list[int] = []
    total = 0
    for envelope in envelopes:
        size = encoded_size(envelope)
        sizes.append(size)
        total += size
        if total >= budget:
            break
    return sizes


class Hub(LoopSizes):
    """What a hub's runtime (gevent, eventlet) does alike: sizes as ``LoopSizes`` has them,
    and batches of ``INLINE_ENCODE_BYTES`` or more of slow work encoded through its ``offload``
    (off the hub), the others right there (cheaper than the hop; see ``encodes_inline``)."""

    offload: Callable[..., Any]

    def encode(
        self, encode: Callable[[Attempt, float], None], attempts: list[Attempt], now: float
    ) -> None:
        if encodes_inline(attempts):
            Threads.encode(encode, attempts, now)
        else:
            self.offload(Threads.encode, encode, attempts, now)


class ThreadWake:
    """``threading.Event``'s ``set``/``clear``/``wait``/``is_set`` for OS threads, on one raw
    lock (the gate, held while the wake is clear): ``set`` is one C call where ``Event.set``
    takes its Condition's lock and then releases the waiter's. A capture that wakes an idle
    worker pays for it (here 15 against 32 us median with a thread waiting, most of either
    the kernel's wake-up). A set and a clear racing may leave the gate open while clear:
    the next ``wait`` then returns False at once, as if it had timed out, and its caller
    looks again (every caller does: the workers, the flush, the spool)."""

    __slots__ = ("_flag", "_gate")

    def __init__(self) -> None:
        self._flag = False
        self._gate = _thread.allocate_lock()
        self._gate.acquire()

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        _open(self._gate)

    def clear(self) -> None:
        self._flag = False
        self._gate.acquire(False)

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        limit = -1 if timeout is None else min(max(0.0, timeout), threading.TIMEOUT_MAX)
        if self._gate.acquire(True, limit):
            _open(self._gate)  # still set for the next wait, as an Event stays set
        return self._flag


def _open(gate: Any) -> None:
    try:  # noqa: SIM105 -- (contextlib.suppress costs a context manager on the hot path)
        gate.release()
    except RuntimeError:  # open already (set twice)
        pass


class Threads:
    name = "threads"
    inline = False  # workers of its own (the sync runtime sends on the caller's thread)
    cooperative = False  # a worker's or a flush's long work holds only its own thread
    run = staticmethod(run)  # how a blocking caller runs the pump's generators

    def __init__(self) -> None:
        self._made_socket, self._made_lock = socket.socket, threading.Lock  # (patched since?)

    def attach(self, pump: Any) -> None:
        """The pump this runtime serves (event-loop runtimes watch their loop for it)."""

    def patched(self) -> bool:
        return socket.socket is not self._made_socket or threading.Lock is not self._made_lock

    def lock(self) -> Any:
        return threading.Lock()

    def wake(self) -> ThreadWake | threading.Event:
        """A ThreadWake; a (green) Event once gevent or eventlet patched threading."""
        if threading.Lock is _thread.allocate_lock:
            return ThreadWake()
        return threading.Event()

    def spawn(self, work: Callable[[], Generator[Any, Any, Any]], name: str) -> bool:
        """Start a worker thread. ``_thread`` directly: ``Thread.start()`` waits until the
        new thread runs, which a capture that grows the pool would wait for (tens of ms on a
        loaded machine). Workers need nothing of ``threading.Thread``."""
        _thread.start_new_thread(run, (work(),))
        return True

    def stream(self) -> SocketStream:
        return SocketStream()

    def tls(self, options: TransportOptions) -> Any:
        return tls.ssl_context(options)

    def proxy_tls(self) -> Any:
        return tls.proxy_context()

    @staticmethod
    def encode(
        encode: Callable[[Attempt, float], None], attempts: list[Attempt], now: float
    ) -> None:
        for attempt in attempts:
            encode(attempt, now)

    sleep = staticmethod(time.sleep)

    @staticmethod
    def offload(fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work (file I/O) off the loop: a thread runtime runs it right here."""
        return fn(*args)

    measure = staticmethod(encoded_size)  # (a worker, or the caller for its own envelope)

    @staticmethod
    def measure_all(envelopes: list[Envelope]) -> list[int]:
        """``encoded_prefix`` up to ``DRAIN_BYTES``: the drain hands these to the engine
        while the rest waits for the next."""
        return encoded_prefix(envelopes, DRAIN_BYTES)

    def after_fork(self) -> None:
        """Nothing to drop: a child has no threads but the one that forked."""

    def at_exit(self, pump: Any) -> None:
        """Interpreter exit: close within the shutdown timeout, on the exiting thread."""
        run(pump.close(time.monotonic() + pump.options.shutdown_timeout))


class Inline(Threads):
    """The sync runtime: no workers; the pump sends on the caller's thread."""

    name = "inline"
    inline = True

    def stream(self) -> SocketStream:
        return SocketStream(kernel_timeouts=False)  # (see io/sockets.py: _KERNEL_TIMEOUTS)
