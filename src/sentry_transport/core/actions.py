"""What the engine hands a driver and takes back: jobs, attempts, actions, results.

    Send(attempts) | Wait(until) | IDLE | STOP      what a worker does now
    result: Response | exception | None | REQUEUE  what happened to one attempt

``should_grow`` is the one rule for starting another worker (and its connection).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .client_reports import Counts
from .envelope import Envelope, Item
from .http11 import Response
from .request import Request

UNHEALTHY_AFTER_FAILURES = 3
MAX_BATCH = 32  # jobs one worker takes in one round when there is a backlog
# Connections beyond BASE_CONNECTIONS pay off only when the server's latency, not the
# client's CPU, is what limits: grow past it only while round trips are slow AND the process
# is not busy on the CPU (then the time a round trip takes is spent waiting for the GIL, and
# more threads would only wait longer).
BASE_CONNECTIONS = 2
SLOW_ROUND_TRIP = 0.002
CPU_BOUND = 0.75  # CPU seconds the process used per second, lately (see sending.py)


def goes_on(result: Result) -> bool:
    """Whether a worker sends the rest of its batch after this result: only after a 2xx.
    After anything else the rest go back (REQUEUE) to be decided afresh: a 429's limits then
    apply to them, a network error's backoff to the attempt that failed."""
    return isinstance(result, Response) and 200 <= result.status < 300


def should_grow(
    workers: int, idle: int, backlog: int, round_trip: float, cpu_busy: float, limit: int
) -> bool:
    """Whether a driver should start one more worker (with its connection) now."""
    if backlog <= 0 or idle > 0 or workers >= limit:
        return False
    return workers < BASE_CONNECTIONS or (round_trip > SLOW_ROUND_TRIP and cpu_busy < CPU_BOUND)


@dataclass(eq=False, slots=True)
class Job:
    seq: int
    envelope: Envelope
    size: int
    internal: bool = False  # a client-report-only envelope made by the engine
    attempts: int = 0
    first_try: float | None = None
    spool: str | None = None  # its file in the disk spool, once written


@dataclass(eq=False, slots=True)
class Attempt:
    """One request to be: decided under the lock, encoded outside it, then reported."""

    job: Job
    items: list[Item]  # the job's items in this request, rate limits applied
    report: Counts = field(default_factory=dict)  # client-report counts riding along
    request: Request | None = None  # set by encode()
    dropped: list[tuple[str, list[Item]]] = field(default_factory=list)  # by encode()
    error: str | None = None  # set by encode() when it failed on a bug
    over: bool = False  # abandoned at close: its result no longer counts


@dataclass(frozen=True, slots=True)
class Send:
    attempts: list[Attempt]


@dataclass(frozen=True, slots=True)
class Wait:
    until: float  # nothing to do before this time (a retry or a client report is due)


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


IDLE = _Marker("IDLE")  # nothing queued, nothing due: wait to be woken
STOP = _Marker("STOP")  # the transport is closed: the worker ends
REQUEUE = _Marker("REQUEUE")  # a result: the attempt was given back unsent
Action = Send | Wait | _Marker
Result = Response | BaseException | _Marker | None


@dataclass(eq=False)
class Flush:
    """What a flush (or close) waits for: a mark, then one more round for a client report."""

    mark: int
    report_round: bool = True
