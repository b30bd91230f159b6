"""What a sink is told to do (behaviours), what it saw (``Received``), and the record keeping.

How it works: ``_Recorder`` is the sink without its HTTP part. Tests queue behaviours with
``script()``; each request takes the next one, or ``default``. The loop thread records a
request with ``_add`` once its body has been read and completes the record with
``_finish`` (its status, and its envelope if it was accepted) or corrects it with
``_unfinish``/``_update``. Records are immutable ``Received`` values replaced in a list under
``self._cond``, so readers get consistent copies and ``wait_for`` needs no polling. A
record remembers the generation it was added in, so one finished after ``clear()`` is
dropped instead of landing at a stale index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ..core.envelope import Envelope
from ._http import _Head
from ._server import _ServerThread

__all__ = ["Behaviour", "Close", "Hang", "Received", "Reset", "Respond"]


@dataclass(frozen=True)
class Respond:
    """Answer ``status`` after ``delay`` seconds; ``body`` None means a small JSON body.

    ``unasked``: bytes written on the connection ``unasked_after`` seconds after the answer,
    which no request asked for (a stray answer, as a broken server or proxy may send).
    ``early``: answer as soon as the request's head is read, without reading its body, then
    close the connection (as a server refusing a body too large does); the request is
    recorded without its body."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0
    unasked: bytes = b""
    unasked_after: float = 0.0
    early: bool = False

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError(f"Respond status must be a final status 200..599, not {self.status}")
        if self.delay < 0 or self.unasked_after < 0:
            raise ValueError("Respond delay and unasked_after must be >= 0")
        headers = dict(self.headers)
        for name, value in headers.items():
            if _UNSAFE.search(name) or _UNSAFE.search(value) or not name:
                raise ValueError(f"bad response header {name!r}: {value!r}")
        object.__setattr__(self, "headers", headers)


@dataclass(frozen=True)
class Reset:
    """Read ``after`` bytes of the request body, then abort the connection with a TCP RST."""

    after: int = 0


@dataclass(frozen=True)
class Hang:
    """Read the request, answer nothing for ``seconds`` (or until stop()), then close."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Close:
    """Read the request, then close the connection without answering."""


Behaviour: TypeAlias = Respond | Reset | Hang | Close

_UNSAFE = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True)
class Received:
    """One request as the sink saw it, and what it did about it."""

    method: str
    path: str  # without the query string (absolute-form targets are reduced to their path)
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes  # raw, as sent (only the first ``Reset.after`` bytes for a Reset)
    decoded: bytes | None  # after Content-Encoding; None if decoding failed
    envelope: Envelope | None  # None if the decoded body is not an envelope
    error: str | None  # why decoding or parsing failed, or what went wrong with the request
    status: int | None  # what the sink answered; None if it never answered
    behaviour: Behaviour
    target: str = ""  # the request target as sent
    query: str = ""
    connection: int = 0  # 1-based number of the TCP connection it arrived on
    time: float = 0.0  # time.monotonic() when its head had been read


class _Recorder(_ServerThread):
    """The script of behaviours and the records of requests and accepted envelopes."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(host, port, ssl_context)
        self.default: Behaviour = Respond(200)
        self._script: deque[Behaviour] = deque()
        self._requests: list[Received] = []
        self._envelopes: list[Envelope] = []
        self._generation = 0
        self._observer: Callable[[Received], None] | None = None  # called when finished
        self._keep = True  # False: record nothing (the command line, which only prints)

    @property
    def envelopes(self) -> list[Envelope]:
        """Envelopes of requests answered 2xx, in arrival order (a copy).

        An envelope is added just before its answer is written, so a client never sees the
        answer first; it is taken out again if the answer cannot be written, and never added
        if the client left before the answer (e.g. during a ``Respond.delay``).
        """
        with self._cond:
            return list(self._envelopes)

    @property
    def requests(self) -> list[Received]:
        """Every request received, in arrival order (a copy)."""
        with self._cond:
            return list(self._requests)

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours: each request takes the next one; then ``default`` applies."""
        for behaviour in behaviours:
            if not isinstance(behaviour, (Respond, Reset, Hang, Close)):
                raise TypeError(f"not a behaviour: {behaviour!r}")
        with self._cond:
            self._script.extend(behaviours)

    @property
    def pending(self) -> int:
        """How many scripted behaviours are still queued."""
        with self._cond:
            return len(self._script)

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` envelopes have been accepted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._envelopes) >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` requests have arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= count, timeout)

    def clear(self) -> None:
        """Forget recorded requests, envelopes and errors (the script and default stay)."""
        with self._cond:
            self._requests.clear()
            self._envelopes.clear()
            self._errors.clear()
            self._generation += 1

    # -- recording: the loop thread writes under the condition's lock ------------------------

    def _add(
        self,
        head: _Head,
        body: bytes,
        decoded: bytes | None,
        envelope: Envelope | None,
        error: str | None,
        behaviour: Behaviour,
        number: int,
        arrived: float,
    ) -> _Slot:
        record = Received(
            head.method,
            head.path,
            head.headers,
            body,
            decoded,
            envelope,
            error,
            None,
            behaviour,
            target=head.target,
            query=head.query,
            connection=number,
            time=arrived,
        )
        slot = _Slot(record, -1, -1)
        if self._keep:
            with self._cond:
                self._requests.append(record)
                slot.generation, slot.index = self._generation, len(self._requests) - 1
                self._cond.notify_all()
        return slot

    def _finish(self, slot: _Slot, status: int | None, envelope: Envelope | None = None) -> None:
        """Record the request's final status (and its envelope if it was accepted)."""
        if status is not None:
            slot.record = _with_status(slot.record, status)
        with self._cond:
            if slot.generation == self._generation:  # else: not kept, or cleared meanwhile
                self._requests[slot.index] = slot.record
                if envelope is not None:
                    self._envelopes.append(envelope)
                self._cond.notify_all()
        observer = self._observer
        if observer is not None:
            with contextlib.suppress(Exception):
                observer(slot.record)

    def _unfinish(self, slot: _Slot, envelope: Envelope | None, message: str) -> None:
        with self._cond:
            if slot.generation == self._generation and envelope is not None:
                for i in range(len(self._envelopes) - 1, -1, -1):
                    if self._envelopes[i] is envelope:
                        del self._envelopes[i]
                        break
        self._update(slot, status=None, error=message)

    def _update(self, slot: _Slot, **changes: Any) -> None:
        slot.record = dataclasses.replace(slot.record, **changes)
        with self._cond:
            if slot.generation == self._generation:
                self._requests[slot.index] = slot.record
                self._cond.notify_all()


@dataclass
class _Slot:
    """A request being served: its latest record and where it is kept in Sink._requests."""

    record: Received
    generation: int  # -1: not kept
    index: int


def _with_status(record: Received, status: int) -> Received:
    """``dataclasses.replace(record, status=status)``, without its per-call overhead."""
    copy = object.__new__(Received)
    copy.__dict__.update(record.__dict__, status=status)
    return copy
