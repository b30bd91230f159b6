"""The disk spool's file operations: the only module that touches ``spool_dir``.

Layout (every folder owner-only, 0700; every file 0600):

    <spool_dir>/queue/      files of records, one per write round (core/spool.py: format)
    <spool_dir>/tmp/        lock files and markers being made (renamed into place when whole)
    <spool_dir>/set-aside/  damaged or foreign files, kept for a look (the newest 64)
    <spool_dir>/owners/     <token>.lock: held (flock) by the living process of that token

``SpoolDir.apply(work)`` runs one ``SpoolWork`` and says what happened (``SpoolOutcome``);
it never raises for a file's sake: what fails is reported, counted and set aside. It runs
on the spool's worker, off any event loop (``runtime.offload``).

Durability and atomicity: a write round's records go straight into one new file in queue/
under its owner's name (one create and one write for the round; no rename), answers append
done markers to it, and it is deleted when every record is done. Only its owner reads it
while the owner lives, and only after writing it; what a crash cut short is read by the
next owner as what it is (each record's length and checksum say so): the records before the
cut stand, the cut one is counted set aside. No half record is ever read as whole. A crash
of the process at any point (SIGKILL included) keeps every record written before it, because
the kernel has it. ``spool_fsync=1`` adds an fsync of each file and of the folder, for power
loss too, at a disk flush per write round.

Several processes: a file belongs to the token in its name (spool_owners.py says whether
that owner lives); a process takes a dead owner's files by renaming them to its own token,
which succeeds for one process only.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

from ..core import spool as _spool
from ..core.envelope import Envelope
from ..core.errors import ConfigurationError, EnvelopeError
from ..core.spool import ParsedFile, SpoolOutcome, SpoolWork
from . import spool_owners as owners

FOLDERS = ("queue", "tmp", "set-aside", "owners")
READ_LIMIT = 256 * 1024 * 1024  # a file bigger than this is not ours to read
STALE_TMP = 600.0  # seconds after which a file in tmp/ is a dead process's leftover


@dataclass(slots=True)
class _File:
    size: int  # bytes on disk (records and done markers)
    live: set[int]  # records not done


def new_token() -> str:
    return os.urandom(8).hex()


class SpoolDir:
    def __init__(self, path: str, bound: int, fsync: bool = False, project: str = "") -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.bound = bound
        self.fsync = fsync
        self.token = new_token()
        self.queue = os.path.join(self.path, "queue")
        self.tmp = os.path.join(self.path, "tmp")
        self.aside = os.path.join(self.path, "set-aside")
        self.files: dict[str, _File] = {}  # our files
        self.total = 0  # bytes of every record in queue/ (ours and the living others')
        self.seq = 0
        self.lock_fd: int | None = None
        try:
            for folder in (self.path, *(os.path.join(self.path, f) for f in FOLDERS)):
                os.makedirs(folder, mode=0o700, exist_ok=True)
            self._claim_for(project)
            self._lock()  # (the folder is counted by the first round's scan, off any loop)
        except OSError as exc:
            self.close()
            raise ConfigurationError(f"spool_dir {self.path!r} cannot be used: {exc}") from None

    def _claim_for(self, project: str) -> None:
        """The folder holds one project's envelopes: say which on first use, refuse another
        (its envelopes would be sent to the wrong project)."""
        if not project:
            return
        marker = os.path.join(self.path, "project")
        try:
            with open(marker, encoding="utf-8") as file:
                holds = file.read().strip()
        except FileNotFoundError:
            making = os.path.join(self.tmp, f"project-{self.token}")
            with open(os.open(making, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(project + "\n")
            os.replace(making, marker)  # (two first users write the same text)
            return
        if holds != project:
            raise ConfigurationError(
                f"spool_dir {self.path!r} holds envelopes for {holds!r}, not for {project!r}: "
                "give each project a spool_dir of its own"
            )

    def _lock(self) -> None:
        self.lock_fd = owners.hold(self.path, self.token)

    def close(self) -> None:
        """Let go of the lock (the files stay for whoever comes next)."""
        fd, self.lock_fd = self.lock_fd, None
        if fd is not None:
            owners.release(self.path, self.token, fd)

    def forget(self) -> None:
        """In a forked child: the lock (shared with the parent) stays the parent's."""
        fd, self.lock_fd = self.lock_fd, None
        if fd is not None:
            owners.release(self.path, self.token, fd, unlink=False)

    # -- one round ----------------------------------------------------------------------------

    def apply(self, work: SpoolWork) -> SpoolOutcome:
        out = SpoolOutcome()
        try:
            if work.scan:
                self._scan(out)
            self._remove(work.remove)
            self._write(work.write, out, work.protected)
            self._read(work.reload, out)
            if work.more and out.claimed:  # a start: what was found goes out at once
                found, out.claimed = out.claimed[: work.more], out.claimed[work.more :]
                self._read([ident for ident, _ in found], out, claimed=True)
        except Exception as exc:  # the folder itself (or a bug): the rest is sent from memory
            out.error = f"{self.path}: {type(exc).__name__}: {exc}"
            done = {id(job) for job, _, _ in out.written} | {id(j) for j, _ in out.unwritten}
            done |= {id(job) for job in out.overflow}
            out.unwritten += [(job, str(exc)) for job in work.write if id(job) not in done]
        return out

    # -- writing ------------------------------------------------------------------------------

    def _write(self, jobs: list[Any], out: SpoolOutcome, protected: frozenset[str]) -> None:
        """The round's envelopes into files of at most ``segment_bytes`` of records each."""
        batch: list[tuple[Any, bytes]] = []
        batch_bytes = 0
        limit = _spool.segment_bytes(self.bound)
        for job in jobs:
            if job.spool is not None:  # written by a round whose end was cut off (a cancel)
                out.written.append((job, job.spool, job.size))
                continue
            try:
                body = _spool.stored_envelope(job.envelope).serialize()
            except (TypeError, ValueError, RecursionError) as exc:  # the encoder counts it
                out.unwritten.append((job, f"cannot encode: {exc}"))
                continue
            record = _spool.encode_record(body)
            if batch and batch_bytes + len(record) > limit:
                self._write_file(batch, out, protected)
                batch, batch_bytes = [], 0
            batch.append((job, record))
            batch_bytes += len(record)
        if batch:
            self._write_file(batch, out, protected)

    def _write_file(
        self, batch: list[tuple[Any, bytes]], out: SpoolOutcome, protected: frozenset[str]
    ) -> None:
        size = sum(len(record) for _, record in batch)
        if self.total + size > self.bound and not self._make_room(size, out, protected):
            while batch and self.total + size > self.bound:  # the newest do not fit
                job, record = batch.pop()
                size -= len(record)
                out.overflow.append(job)
            if not batch:
                return
        self.seq += 1
        name = _spool.file_name(time.time_ns(), self.token, self.seq)
        path = os.path.join(self.queue, name)
        data = b"".join(record for _, record in batch)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if self.fsync:
                self._sync_folder(self.queue)
        except OSError as exc:  # a full disk, say: these are sent from memory
            with contextlib.suppress(OSError):
                os.unlink(path)
            out.unwritten += [(job, f"cannot write: {exc}") for job, _ in batch]
            return
        self.files[name] = _File(len(data), set(range(len(batch))))
        self.total += len(data)
        for index, (job, record) in enumerate(batch):
            ident = _spool.record_id(name, index)
            job.spool = ident  # (the engine learns it from the outcome; a repeat, from here)
            out.written.append((job, ident, len(record)))

    def _make_room(self, size: int, out: SpoolOutcome, protected: frozenset[str]) -> bool:
        """Evict whole files, oldest first, none with a record in flight, until ``size`` more
        bytes fit under the bound (core's ``evictions`` chooses)."""
        entries = [(name, state.size) for name, state in sorted(self.files.items())]
        busy = {_spool.split_id(ident)[0] for ident in protected}
        names, fits = _spool.evictions(entries, self.total, self.bound, size, frozenset(busy))
        if not fits:
            return False
        for name in names:
            state = self.files.pop(name)
            envelopes = self._envelopes(name)
            for index in sorted(state.live):
                out.evicted.append((_spool.record_id(name, index), envelopes.get(index)))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.queue, name))
            self.total -= state.size
        return True

    def _sync_folder(self, folder: str) -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- done, read back ----------------------------------------------------------------------

    def _remove(self, idents: list[str]) -> None:
        """Mark records done: a file with none left goes, else it gets done markers."""
        by_file: dict[str, list[int]] = {}
        for ident in idents:
            name, index = _spool.split_id(ident)
            by_file.setdefault(name, []).append(index)
        for name, indices in by_file.items():
            state = self.files.get(name)
            if state is None:
                continue
            state.live.difference_update(indices)
            path = os.path.join(self.queue, name)
            if not state.live:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                del self.files[name]
                self.total -= state.size
                continue
            marker = _spool.encode_done(indices)
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                try:
                    os.write(fd, marker)
                finally:
                    os.close(fd)
                state.size += len(marker)
                self.total += len(marker)

    def _parse(self, name: str) -> ParsedFile:
        path = os.path.join(self.queue, name)
        if os.path.getsize(path) > READ_LIMIT:
            return ParsedFile([], set(), "too large to be ours", True)
        with open(path, "rb") as file:
            return _spool.parse_file(file.read())

    def _envelopes(self, name: str) -> dict[int, Envelope]:
        """A file's records as envelopes, for counting what an evicted file held."""
        try:
            parsed = self._parse(name)
        except OSError:
            return {}
        found = {}
        for index, _, body in parsed.records:
            with contextlib.suppress(EnvelopeError):
                found[index] = Envelope.deserialize(body)
        return found

    def _read(self, idents: list[str], out: SpoolOutcome, claimed: bool = False) -> None:
        by_file: dict[str, list[int]] = {}
        for ident in idents:
            name, index = _spool.split_id(ident)
            by_file.setdefault(name, []).append(index)
        for name, indices in by_file.items():
            try:
                parsed = self._parse(name)
            except FileNotFoundError:
                self._forget(name)
                out.missing += [_spool.record_id(name, i) for i in indices]
                continue
            records = {index: (size, body) for index, size, body in parsed.records}
            for index in indices:
                ident = _spool.record_id(name, index)
                if index not in records or index in parsed.done:
                    out.set_aside.append((ident, parsed.damage or "no longer in its file"))
                    self._done_with(name, index)
                    continue
                size, body = records[index]
                try:
                    envelope = Envelope.deserialize(body)
                except EnvelopeError as exc:
                    out.set_aside.append((ident, f"not an envelope: {exc}"))
                    self._done_with(name, index)
                    continue
                out.loaded.append((ident, size, envelope, claimed))

    def _done_with(self, name: str, index: int) -> None:
        """A record that cannot be sent (unreadable): when it was its file's last, the file
        goes to set-aside/ for a look."""
        state = self.files.get(name)
        if state is None:
            return
        state.live.discard(index)
        if not state.live:
            self._forget(name)
            self._move_aside(name)

    def _forget(self, name: str) -> None:
        state = self.files.pop(name, None)
        if state is not None:
            self.total -= state.size

    def _move_aside(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(os.path.join(self.queue, name), os.path.join(self.aside, name))
        with contextlib.suppress(OSError):
            kept = sorted(os.listdir(self.aside))
            for old in kept[: max(0, len(kept) - _spool.SET_ASIDE_KEEP)]:
                os.unlink(os.path.join(self.aside, old))

    # -- scanning: totals, dead owners, strays ------------------------------------------------

    def _scan(self, out: SpoolOutcome) -> None:
        """Count the folder afresh; take the files of owners that are gone; set aside what
        is not a spool file; clear leftovers in tmp/."""
        total = 0
        dead: dict[str, int] = {}  # token -> its lock, ours while the scan takes its files
        listing: list[tuple[str, int]] = []
        with os.scandir(self.queue) as entries:
            for entry in entries:
                try:
                    listing.append((entry.name, entry.stat().st_size))
                except OSError:
                    continue
        try:
            for name, size in sorted(listing):
                parsed_name = _spool.parse_name(name)
                if parsed_name is None:
                    self._move_aside(name)
                    out.set_aside.append((name, "not a spool file's name"))
                    continue
                token = parsed_name[1]
                if token != self.token and token not in dead:
                    lock = owners.take_if_dead(self.path, token)
                    if lock is not None:
                        dead[token] = lock
                if token == self.token or token not in dead:  # ours, or a living owner's
                    total += self.files[name].size if name in self.files else size
                    continue
                total += self._take(name, out)
            self._clear_tmp()
        finally:
            for token, fd in dead.items():
                owners.release(self.path, token, fd)
        self.total = total

    def _take(self, name: str, out: SpoolOutcome) -> int:
        """A dead owner's file: ours now (renamed: one process only succeeds), its records
        not done reported as claimed. Returns the bytes it keeps in the folder."""
        self.seq += 1
        new = _spool.renamed(name, self.token, self.seq)
        try:
            os.rename(os.path.join(self.queue, name), os.path.join(self.queue, new))
            parsed = self._parse(new)
        except FileNotFoundError:  # another process took it first
            return 0
        if parsed.foreign or not parsed.records:
            self._move_aside(new)
            out.set_aside.append((new, parsed.damage or "no records"))
            return 0
        if parsed.damage is not None:  # a torn last append: what came before stands
            out.set_aside.append(
                (new, f"damaged after record {len(parsed.records)}: {parsed.damage}")
            )
        live = parsed.live()
        size = os.path.getsize(os.path.join(self.queue, new))
        if not live:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.queue, new))
            return 0
        self.files[new] = _File(size, {index for index, _, _ in live})
        out.claimed += [(_spool.record_id(new, index), taken) for index, taken, _ in live]
        return size

    def _clear_tmp(self) -> None:
        """What a process that died while making its lock or marker left (those take
        milliseconds; anything older than STALE_TMP is nobody's)."""
        old = time.time() - STALE_TMP
        with contextlib.suppress(OSError), os.scandir(self.tmp) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < old:
                        os.unlink(entry.path)
