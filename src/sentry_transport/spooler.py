"""The spool's worker: one per transport with ``spool_dir``, beside the sending workers.

It moves the inbox into the engine, asks it for a ``SpoolWork`` (writes, removals,
read-backs, a look for dead owners' files), runs it through ``runtime.offload`` (off the
event loop: a thread of the loop's pool; plainly on a thread runtime) and hands the outcome
back, then wakes a sending worker for what became sendable. A sending worker never waits on
the disk and the disk never waits on a slow server: a record is on disk a round after its
capture, whatever the network does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .io.spool_files import SpoolDir

if TYPE_CHECKING:
    from .sending import Steps
    from .workers import Workers

import time

wall = time.time


class SpoolWorker:
    def __init__(self, pump: Workers, directory: SpoolDir) -> None:
        self.pump = pump
        self.dir = directory
        self.fresh()

    def fresh(self) -> None:
        """New wake, nothing running (at start, after a fork or a rebuild)."""
        self.wake = self.pump.runtime.wake()
        self.running = False
        self.waiting = False

    def kick(self) -> None:
        """Something to write or remove (any thread): wake the worker, or start it."""
        if self.waiting:
            self.wake.set()
            return
        if self.running or self.pump.inline:
            return
        with self.pump.lock:
            start = not self.running and not self.pump.engine.stopped
            self.running = True
        if not start:
            return
        try:
            started = self.pump.runtime.spawn(self.loop, "sentry-transport-spool")
        except RuntimeError:  # no new threads at interpreter exit: close does a last round
            started = False
        if not started:
            self.running = False

    def never_started(self) -> None:
        self.running = False

    def loop(self) -> Steps:
        pump = self.pump
        generation = pump.generation
        wake = self.wake
        try:
            while generation == pump.generation:
                yield from pump._drain()
                did = yield from self.round()
                if did is None:
                    return  # stopped
                if did or pump.undrained():
                    continue
                with pump.lock:
                    wake.clear()
                    self.waiting = True  # a kick from here on sets the wake
                    engine = pump.engine
                    now = wall()
                    idle = not engine.spool_due(now, self._room())
                    until = engine.spool_wakes_at(now) if idle else now
                if idle and not pump.undrained():
                    yield (wake.wait, max(0.0, until - wall()))
                self.waiting = False
        finally:
            if generation == pump.generation:
                self.running = False
                self.waiting = False

    def _room(self) -> int:
        engine = self.pump.engine
        return engine.options.queue_size - engine.queued

    def round(self, final: bool = False) -> Steps:
        """One round; True if it did something, False if nothing was due, None if stopped.
        (Called with the lock free; ``spool_work`` marks the spool busy, so rounds of the
        worker and of a closing caller never overlap.)"""
        pump = self.pump
        with pump.lock:
            engine = pump.engine
            if engine.stopped:
                return None
            work = engine.spool_work(wall(), self._room(), final)
        if work is None:
            return False
        try:
            outcome = yield (pump.runtime.offload, self.dir.apply, work)
        except BaseException:  # cut off (cancelled at a loop's end, killed): hand it back
            with pump.lock:
                if pump.engine is engine:
                    engine.spool_returned(work)
            raise
        with pump.lock:
            if pump.engine is engine:
                engine.spooled(work, outcome, wall())
            ready = engine.ready
        if ready:
            pump._kick()
        return True

    def final(self, deadline: float) -> Steps:
        """At close: write what waits and remove what is done, once the worker's round in
        progress (if any) is over; bounded by ``deadline`` plus a second."""
        pump = self.pump
        give_up = time.monotonic() + max(0.0, deadline - time.monotonic()) + 1.0
        while True:
            with pump.lock:
                spool = pump.engine.spool
                busy = spool is not None and spool.busy
                left = spool is not None and bool(spool.unwritten or spool.removals)
            if not left and not busy:
                return
            if busy:
                if time.monotonic() > give_up:
                    return
                yield (pump.runtime.sleep, 0.005)
                continue
            yield from self.round(final=True)
