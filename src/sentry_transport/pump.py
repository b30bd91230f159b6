"""The pump's lifecycle: flush and close, fork, monkey-patching, interpreter exit.

Written once for every runtime, as generators the runtime's runner executes (see pump.py):

- ``settle(deadline)``: until everything captured before the call is delivered or counted
  lost. ``close(deadline)``: stop accepting, settle, then ``stop()``: count what is queued
  and in flight, abort the connections; the books are final when it returns.
- ``after_fork()``: a child starts empty and closes its copies of the parent's sockets only.
- ``rebuild()``: the process was monkey-patched after the pump was made (or an asyncio loop
  was replaced): fresh locks, wakes, contexts and workers; what is queued stays.
- at interpreter exit each open pump drains within its ``shutdown_timeout``, the way its
  runtime can (``runtime.at_exit``).
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from typing import Any

from . import delivery
from .core.dsn import Dsn
from .core.engine import MAX_BATCH, REQUEUE, Flush, Send, Wait
from .core.envelope import Envelope
from .core.errors import ConfigurationError
from .sending import Steps
from .workers import Workers

# A loop's or hub's turn between a flush's drains: above 0, since gevent may run a greenlet
# that sleeps 0 again before its loop has run its timers and I/O.
LOOP_TURN = 0.0001

wall = time.time
monotonic = time.monotonic


class Pump(Workers):
    """A transport's delivery: the workers (workers.py) and their lifecycle."""

    def __init__(self, dsn: Dsn, runtime: Any) -> None:
        super().__init__(dsn, runtime)
        _LIVE.add(self)
        if self.spool is not None:  # at once: what an earlier process left is sent without
            self.spool.kick()  # waiting for a capture, and a dead one's is looked for

    def capture(self, envelope: Envelope) -> None:
        if _NO_FORK_HOOK and self.pid != os.getpid():  # forked, and no hook told us
            self.after_fork()
        elif self.runtime.patched():
            self.rebuild()
        super().capture(envelope)

    # -- flush and close ----------------------------------------------------------------------

    def settle(self, deadline: float, closing: bool = False) -> Steps:
        """Until everything captured before the call is delivered or counted lost (True), or
        the deadline (False). ``closing``: stop accepting first."""
        flush: Flush | None = None
        wake = self.runtime.wake()
        # What the inbox held at the call, measured outside the lock as a worker does (the
        # rest, and what a worker is draining meanwhile, is admitted under the lock below)
        left = len(self.inbox)
        while left > 0:
            if self.draining or self.inline or monotonic() >= deadline:
                break
            moved = yield from self._drain()
            if not moved:
                break
            left -= moved
            if left > 0 and self.runtime.cooperative:
                # each drain encoded its JSON on the loop (see threads.LoopSizes): its turn
                yield (self.runtime.sleep, LOOP_TURN)
        if self.inline and self.spool is not None:  # no worker of its own: a round here
            with self.lock:
                self.admit_inbox()
            yield from self.spool.round()
        while True:
            wake_worker = None
            spawn = False
            with self.lock:
                engine = self.engine
                if flush is None and not self.draining:
                    self.admit_inbox()  # what was captured before this call
                    if closing:
                        engine.close()
                    flush = engine.begin_flush()
                if flush is not None and engine.flushed(flush):
                    return True
                if not self.inline:
                    wake.clear()
                    self.watchers.append(wake)
                    if engine.ready:
                        if self.idle:
                            wake_worker = self.idle.pop()
                        else:
                            spawn = self._may_start(first=True)
            remaining = deadline - monotonic()
            if remaining <= 0:
                return False
            if self.inline:  # one request at a time; a capture's may be in progress
                if not self.io_lock.acquire(timeout=remaining):
                    return False
                try:
                    done = yield from self._inline_round(flush, deadline)
                finally:
                    self.io_lock.release()
                if done:
                    return True
                continue
            if wake_worker is not None:
                wake_worker.set()
            elif spawn:
                self._spawn()
            if self.spool is not None:
                self.spool.kick()  # what the flush admitted is written before it is sent
            yield (wake.wait, remaining)

    def _inline_round(self, flush: Flush | None, deadline: float) -> Steps:
        """One round on the caller's thread: send what is due, else sleep until it is."""
        if self.spool is not None:
            with self.lock:
                self.admit_inbox()
            yield from self.spool.round()
        with self.lock:
            self.admit_inbox()
            action = self.engine.next_action(wall(), MAX_BATCH)
            if not isinstance(action, Send):
                if flush is not None and self.engine.flushed(flush):
                    return True
                if self.engine.ready:  # the flush queued its client report: send it now
                    return False
        if isinstance(action, Send):
            yield from self._send(self._inline(), action.attempts, deadline)
            return False
        pause = action.until - wall() if isinstance(action, Wait) else 0.01
        yield (self.runtime.sleep, max(0.0, min(pause, deadline - monotonic())))
        return False

    def admit_inbox(self) -> None:
        """Under the lock: submit what the inbox holds (sizes estimated, not encoded)."""
        now = wall()
        while self.inbox:
            self.engine.submit(self.inbox.popleft(), now)

    def close(self, deadline: float) -> Steps:
        """Stop accepting, drain until the deadline, then end what is left: count it, abort
        the connections. When this returns the books are final and nothing more is sent."""
        if self.engine.stopped:
            return
        yield from self.settle(deadline, closing=True)
        if self.spool is not None:
            yield from self.spool.final(deadline)  # on disk: what waits; removed: what is done
            yield (self.runtime.offload, self.spool.dir.close)  # (file I/O: off the loop)
        self.stop()

    def stop(self) -> None:
        with self.lock:
            self.engine.close()
            self.admit_inbox()
            self.engine.abandon()
            wakes, self.idle = self.idle, []
            watchers, self.watchers = self.watchers, []
            connections = list(self.connections)
            delivery.log_close(self)
        for conn in connections:
            conn.abort()
        if self.inline_conn is not None:
            self.inline_conn.stream.close_now()  # no worker of its own to close it
        for wake in wakes + watchers:
            wake.set()
        if self.spool is not None:
            self.spool.wake.set()  # its worker sees the engine stopped and ends
            self.spool.dir.close()  # our files are anyone's now (done already by close())
        _LIVE.discard(self)

    # -- fork and monkey-patching -------------------------------------------------------------

    def after_fork(self) -> None:
        """In a forked child: start empty. The parent's queue is the parent's to send, and
        its sockets are closed here without touching the parent's loop or connection."""
        self.generation += 1
        for conn in self.connections:
            conn.stream.forget()
        self.engine.reset()
        self.runtime.after_fork()
        if self.spool is not None:  # the parent's files stay the parent's; the child's own
            self.spool.dir.forget()
            self.spool = None
            try:
                self.spool = self._spool_worker()
            except ConfigurationError as exc:  # (in a fork hook: nobody to raise it to)
                delivery.log.warning("sentry_transport: no disk spool in this child: %s", exc)
        self._fresh()

    def rebuild(self) -> None:
        """The process was monkey-patched (gevent, eventlet) after this was made: new locks,
        wakes, TLS contexts and workers from the patched modules; what is queued stays, and
        what was in flight on the old workers is sent again."""
        self.generation += 1
        with self.lock:
            inbox, connections = list(self.inbox), list(self.connections)
            flying = self.engine.flying()
            self.engine.on_results([(attempt, REQUEUE) for attempt in flying], wall())
        for conn in connections:
            conn.abort()
        self.runtime = type(self.runtime)()
        self.runtime.attach(self)
        self._contexts()
        self._fresh()
        self.inbox.extend(inbox)
        if self.spool is not None:
            self.spool.kick()

    def snapshot(self) -> dict[str, Any]:
        """The books, counting every envelope captured so far (a drain in progress on a
        worker is waited for, a second at the most)."""
        give_up = monotonic() + 1.0
        while True:
            with self.lock:
                if not self.draining or monotonic() > give_up:
                    self.admit_inbox()
                    snapshot = self.engine.snapshot(wall())
                    break
            time.sleep(0.001)
        snapshot["workers"] = self.workers
        return snapshot


_NO_FORK_HOOK = not hasattr(os, "register_at_fork")  # getpid() is a system call: once a hook
_LIVE: weakref.WeakSet[Pump] = weakref.WeakSet()  # open pumps: fork reset, exit drain


def _drain_at_exit() -> None:
    """A normal end of the program without close: each transport drains within its
    ``shutdown_timeout``, the way its runtime can (see each runtime's ``at_exit``)."""
    for pump in list(_LIVE):
        pump.runtime.at_exit(pump)


atexit.register(_drain_at_exit)


def _reset_in_child() -> None:
    for pump in list(_LIVE):
        pump.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
