"""The engine's part of the disk spool (a mixin of ``Engine``): still no I/O.

With ``spool_dir`` set, a submitted job waits in ``spool.unwritten`` until the spool's worker
has written it (``spool_work`` hands out the writes, removals and read-backs as one value;
``spooled`` takes the file layer's ``SpoolOutcome`` back), and only then is it sent. A job
whose retries ran out on network errors, or that is still waiting when the transport closes,
is parked: its file stays, it is not counted lost, and it is read back later (after a
backoff, never while a rate limit is active) or by the next process on the directory.
"""

from __future__ import annotations

import heapq

from .actions import Job
from .envelope import Envelope
from .parts import EngineParts
from .spool import SpoolOutcome, SpoolWork


class Spooling(EngineParts):
    def spool_work(self, now: float, room: int, final: bool = False) -> SpoolWork | None:
        """The spool's next round, if it has one now (one round at a time)."""
        spool = self.spool
        if spool is None or self.stopped:
            return None
        paused = self.limits.next_lift(now) is not None
        if final:
            if spool.busy or not (spool.unwritten or spool.removals):
                return None
        elif not spool.due(now, room, paused):
            return None
        return spool.work(now, room, paused, (a.job for a in self._flying.values()), final)

    def spool_due(self, now: float, room: int) -> bool:
        spool = self.spool
        paused = self.limits.next_lift(now) is not None
        return spool is not None and not self.stopped and spool.due(now, room, paused)

    def spool_wakes_at(self, now: float) -> float:
        assert self.spool is not None
        return self.spool.wakes_at(now, self.limits.next_lift(now))

    def spooled(self, work: SpoolWork, outcome: SpoolOutcome, now: float) -> None:
        """Take back what the file layer did: written jobs become sendable, and so on."""
        spool = self.spool
        assert spool is not None
        spool.busy = False
        spool.writing = 0
        counters = spool.counters
        counters["removed"] += len(work.remove)
        for job, name, size in outcome.written:
            job.spool = name
            spool.jobs[name] = job
            spool.sizes[name] = size
            counters["written"] += 1
        if self.stopped:  # closed while this round ran: the books are final without it
            self._after_stop(outcome)
            return
        written = {id(job) for job, _, _ in outcome.written}
        for job in work.write:  # in capture order, whether written or not
            if id(job) in written:
                self._ready.append(job)
        for job, why in outcome.unwritten:  # sent from memory all the same
            counters["write_errors"] += 1
            self.stats.last_error = f"spool: {why}"
            self._ready.append(job)
        for job in outcome.overflow:
            self.queued_bytes -= job.size
            self.books.lose("cache_overflow", job.envelope.items)
            self._finish(job)
        for name, envelope in outcome.evicted:
            self._evicted(name, envelope)
        for name, size in outcome.claimed:
            spool.parked.append((name, size))
            spool.sizes[name] = size
            spool.claimed.add(name)
            counters["claimed"] += 1
        for name in outcome.missing:
            spool.sizes.pop(name, None)
            spool.claimed.discard(name)
        for name, why in outcome.set_aside:
            spool.sizes.pop(name, None)
            spool.claimed.discard(name)
            counters["set_aside"] += 1
            self.stats.last_error = f"spool: set aside {name}: {why}"
        for name, size, envelope, claimed in outcome.loaded:
            if claimed or name in spool.claimed:  # another process accepted it: counted here
                counters["claimed"] += claimed
                spool.claimed.discard(name)
                self.stats.accept(envelope.items)
            job = Job(self._next_seq(), envelope, size, spool=name)
            spool.jobs[name] = job
            spool.sizes[name] = size
            self._ready.append(job)
            self.queued_bytes += size
            counters["replayed"] += 1
        if outcome.error is not None:
            counters["write_errors"] += 1
            self.stats.last_error = f"spool: {outcome.error}"

    def spool_returned(self, work: SpoolWork) -> None:
        """A round cut off before its outcome came back (its task cancelled at a loop's end):
        its work is handed out again. The file layer may have done some of it: writes are
        not repeated (a written job knows its file), removals and reads may be."""
        spool = self.spool
        assert spool is not None
        spool.busy = False
        spool.writing = 0
        if self.stopped:
            for job in work.write:
                if job.spool is not None:  # on disk: it waits there
                    spool.sizes[job.spool] = job.size
                    self._finish(job, keep_file=True)
                else:
                    self.books.lose("queue_overflow", job.envelope.items)
                    self._finish(job)
            return
        spool.unwritten.extendleft(reversed(work.write))
        spool.removals[:0] = work.remove
        spool.parked.extendleft((name, spool.sizes.get(name, 0)) for name in reversed(work.reload))

    def _after_stop(self, outcome: SpoolOutcome) -> None:
        """A round that ended after ``abandon``: what it wrote waits on disk (not lost), what
        it could not write is lost like the rest of the queue; nothing read back is taken."""
        for job, _, _ in outcome.written:
            self._finish(job, keep_file=True)
        for job, _ in outcome.unwritten:
            self.books.lose("queue_overflow", job.envelope.items)
            self._finish(job)
        for job in outcome.overflow:
            self.books.lose("cache_overflow", job.envelope.items)
            self._finish(job)

    def _evicted(self, name: str, envelope: Envelope | None) -> None:
        """The spool was full and this file went first: cache_overflow, counted once."""
        spool = self.spool
        assert spool is not None
        spool.counters["evicted"] += 1
        spool.sizes.pop(name, None)
        job = spool.jobs.pop(name, None)
        if job is None:  # parked
            for i, (parked, _) in enumerate(spool.parked):
                if parked == name:
                    del spool.parked[i]
                    break
            if envelope is not None and name not in spool.claimed:
                self.books.lose("cache_overflow", envelope.items)
            spool.claimed.discard(name)
            return
        job.spool = None
        if job.seq in self._flying:  # on its way: delivered, or else lost as cache_overflow
            spool.evicted.add(job.seq)
            return
        if job in self._ready:
            self._ready.remove(job)
        else:
            self._delayed = [entry for entry in self._delayed if entry[2] is not job]
            heapq.heapify(self._delayed)
        self.queued_bytes -= job.size
        self.books.lose("cache_overflow", job.envelope.items)
        self._finish(job)

    def _park(self, job: Job, now: float) -> bool:
        """Instead of counting a job lost to the network: leave it in the spool, if it is
        there. True when parked (or counted lost to the spool's bound: its file went)."""
        spool = self.spool
        name = job.spool
        if spool is None:
            return False
        if job.seq in spool.evicted:
            spool.evicted.discard(job.seq)
            self.books.lose("cache_overflow", job.envelope.items)
            self._finish(job)
            return True
        if name is None:
            return False
        spool.jobs.pop(name, None)
        job.spool = None  # this job is over; its file is not
        spool.parked_again(name, spool.sizes.get(name, job.size), now)
        self._finish(job)
        return True

    def _release(self, job: Job) -> None:
        """A job is over (delivered, or lost for good): its file goes."""
        spool = self.spool
        if spool is not None and job.spool is not None:
            spool.jobs.pop(job.spool, None)
            spool.sizes.pop(job.spool, None)  # no longer waiting
            spool.removals.append(job.spool)
            job.spool = None
