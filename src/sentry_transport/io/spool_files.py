"""The disk spool's file operations: the only module that touches ``spool_dir``.

Layout (every folder owner-only, 0700; every file 0600):

    <spool_dir>/queue/      one record per envelope (core/spool.py: format, names, eviction)
    <spool_dir>/tmp/        lock files and markers being made (renamed into place when whole)
    <spool_dir>/set-aside/  damaged or foreign files, kept for a look (the newest 64)
    <spool_dir>/owners/     <token>.lock: held (flock) by the living process of that token

``SpoolDir.apply(work)`` runs one ``SpoolWork`` and says what happened (``SpoolOutcome``);
it never raises for a file's sake: what fails is reported, counted and set aside. It runs
on the spool's worker, off any event loop (``runtime.offload``).

Durability and atomicity: a record is written straight into queue/ under its owner's name
(no rename: a file costs one create, one write and, once answered, one unlink). Only its
owner reads it while the owner lives, and only after writing it; a file a crash cut short is
read by the next owner as what it is, damaged (the record's length and checksum say so), and
set aside: no half file is ever read as whole. A crash of the process at any point (SIGKILL
included) keeps every record written before it, because the kernel has it. ``spool_fsync=1``
adds an fsync of each file and of the folder, for power loss too, at a disk flush per
envelope.

Several processes: each holds an exclusive ``flock`` on its own lock file for as long as it
lives. A file belongs to the token in its name; a process takes a dead owner's files (one
whose lock it can take) by renaming them to its own token, which succeeds for one process
only. Where ``fcntl`` is missing (Windows), other owners are taken to be alive.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from ..core import spool as _spool
from ..core.envelope import Envelope
from ..core.errors import ConfigurationError, EnvelopeError
from ..core.spool import SpoolOutcome, SpoolRecordError, SpoolWork

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FOLDERS = ("queue", "tmp", "set-aside", "owners")
READ_LIMIT = 256 * 1024 * 1024  # a file bigger than this is not ours to read
STALE_TMP = 600.0  # seconds after which a file in tmp/ is a dead process's leftover


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
        self.owners = os.path.join(self.path, "owners")
        self.mine: dict[str, int] = {}  # our files -> bytes
        self.total = 0  # bytes of every record in queue/ (ours and the living others')
        self.seq = 0
        self.lock_fd: int | None = None
        try:
            for folder in (self.path, *(os.path.join(self.path, f) for f in FOLDERS)):
                os.makedirs(folder, mode=0o700, exist_ok=True)
            self._claim_for(project)
            self._lock()
            self._scan_totals()
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
        """Our lock file, locked before it is in owners/ (a scanner never sees it unheld)."""
        name = self.token + ".lock"
        making = os.path.join(self.tmp, name)
        self.lock_fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        if fcntl is not None:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, os.path.join(self.owners, name))

    def close(self) -> None:
        """Let go of the lock (the files stay for whoever comes next)."""
        fd, self.lock_fd = self.lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.owners, self.token + ".lock"))
            with contextlib.suppress(OSError):
                os.close(fd)

    def forget(self) -> None:
        """In a forked child: the lock (shared with the parent) stays the parent's."""
        fd, self.lock_fd = self.lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- one round ----------------------------------------------------------------------------

    def apply(self, work: SpoolWork) -> SpoolOutcome:
        out = SpoolOutcome()
        try:
            if work.scan:
                self._scan(out)
            for name in work.remove:
                self._remove(name)
            for job in work.write:
                self._write(job, out, work.protected)
            for name in work.reload:
                self._read(name, out)
            if work.more and out.claimed:  # a start: what was found goes out at once
                found, out.claimed = out.claimed[: work.more], out.claimed[work.more :]
                for name, _ in found:
                    self._read(name, out, claimed=True)
        except Exception as exc:  # the folder itself (or a bug): the rest is sent from memory
            out.error = f"{self.path}: {type(exc).__name__}: {exc}"
            done = {id(job) for job, _, _ in out.written} | {id(j) for j, _ in out.unwritten}
            done |= {id(job) for job in out.overflow}
            out.unwritten += [(job, str(exc)) for job in work.write if id(job) not in done]
        return out

    def _write(self, job: Any, out: SpoolOutcome, protected: frozenset[str]) -> None:
        if job.spool is not None:  # written by a round whose end was cut off (a cancel)
            out.written.append((job, job.spool, self.mine.get(job.spool, job.size)))
            return
        try:
            body = _spool.stored_envelope(job.envelope).serialize()
        except (TypeError, ValueError, RecursionError) as exc:  # the encoder will count it
            out.unwritten.append((job, f"cannot encode: {exc}"))
            return
        record = _spool.encode_record(body)
        size = len(record)
        if self.total + size > self.bound:
            entries = sorted(self.mine.items())
            names, fits = _spool.evictions(entries, self.total, self.bound, size, protected)
            if not fits:
                out.overflow.append(job)
                return
            for name in names:
                out.evicted.append((name, self._peek(name)))
                self._remove(name)
        self.seq += 1
        name = _spool.file_name(time.time_ns(), self.token, self.seq)
        path = os.path.join(self.queue, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(record)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if self.fsync:
                self._sync_folder(self.queue)
        except OSError as exc:  # a full disk, say: this one is sent from memory
            with contextlib.suppress(OSError):
                os.unlink(path)
            out.unwritten.append((job, f"cannot write: {exc}"))
            return
        self.mine[name] = size
        self.total += size
        job.spool = name  # (the engine learns it from the outcome; a repeated round, from here)
        out.written.append((job, name, size))

    def _sync_folder(self, folder: str) -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.queue, name))
        self.total -= self.mine.pop(name, 0)

    def _load(self, name: str) -> Envelope:
        """A record's envelope; SpoolRecordError / EnvelopeError when it is not one."""
        path = os.path.join(self.queue, name)
        if os.path.getsize(path) > READ_LIMIT:
            raise SpoolRecordError("too large to be ours", foreign=True)
        with open(path, "rb") as file:
            data = file.read()
        return Envelope.deserialize(_spool.decode_record(data))

    def _peek(self, name: str) -> Envelope | None:
        """An evicted file's envelope, for counting what it held (None if unreadable)."""
        try:
            return self._load(name)
        except (OSError, SpoolRecordError, EnvelopeError):
            return None

    def _read(self, name: str, out: SpoolOutcome, claimed: bool = False) -> None:
        try:
            envelope = self._load(name)
        except FileNotFoundError:
            self.total -= self.mine.pop(name, 0)
            out.missing.append(name)
            return
        except (SpoolRecordError, EnvelopeError) as exc:
            self._set_aside(name, str(exc), out)
            return
        out.loaded.append((name, self.mine.get(name, 0), envelope, claimed))

    def _set_aside(self, name: str, why: str, out: SpoolOutcome) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(os.path.join(self.queue, name), os.path.join(self.aside, name))
        self.total -= self.mine.pop(name, 0)
        out.set_aside.append((name, why))
        with contextlib.suppress(OSError):
            kept = sorted(os.listdir(self.aside))
            for old in kept[: max(0, len(kept) - _spool.SET_ASIDE_KEEP)]:
                os.unlink(os.path.join(self.aside, old))

    # -- scanning: totals, dead owners, strays ------------------------------------------------

    def _scan_totals(self) -> None:
        total = 0
        with os.scandir(self.queue) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    total += entry.stat().st_size
        self.total = total

    def _scan(self, out: SpoolOutcome) -> None:
        """Count the folder afresh; take the files of owners that are gone; set aside what
        is not a spool file's name; clear dead owners' half-written files."""
        total = 0
        dead: dict[str, int | None] = {}  # token -> its lock's fd while we hold it
        listing: list[tuple[str, int]] = []
        with os.scandir(self.queue) as entries:
            for entry in entries:
                try:
                    listing.append((entry.name, entry.stat().st_size))
                except OSError:
                    continue
        try:
            for name, size in sorted(listing):
                parsed = _spool.parse_name(name)
                if parsed is None:
                    self._set_aside(name, "not a spool file", out)
                    continue
                token = parsed[1]
                if token == self.token:
                    if name not in self.mine:  # ours, yet unknown: a stray of an earlier round
                        self.mine[name] = size
                    total += size
                    continue
                if token not in dead and self._alive(token, dead):
                    total += size
                    continue
                self.seq += 1
                new = _spool.renamed(name, self.token, self.seq)
                try:
                    os.rename(os.path.join(self.queue, name), os.path.join(self.queue, new))
                except FileNotFoundError:  # another process took it first
                    continue
                self.mine[new] = size
                total += size
                out.claimed.append((new, size))
            self._clear_tmp()
        finally:
            for token, fd in dead.items():
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.owners, token + ".lock"))
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        self.total = total

    def _alive(self, token: str, dead: dict[str, int | None]) -> bool:
        """Whether the owner of ``token`` still lives; when not, its lock is ours (in
        ``dead``) until the scan ends."""
        if fcntl is None:
            return True
        try:
            fd = os.open(os.path.join(self.owners, token + ".lock"), os.O_RDWR)
        except FileNotFoundError:
            dead[token] = None
            return False
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return True
        dead[token] = fd
        return False

    def _clear_tmp(self) -> None:
        """What a process that died while making its lock or marker left (those take
        milliseconds; anything older than STALE_TMP is nobody's)."""
        old = time.time() - STALE_TMP
        with contextlib.suppress(OSError), os.scandir(self.tmp) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < old:
                        os.unlink(entry.path)


# -- looking from outside (the command line) --------------------------------------------------


def owner_alive(folder: str, token: str) -> bool:
    """Whether the process of ``token`` holds its lock (asked without keeping it)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(os.path.join(folder, "owners", token + ".lock"), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def survey(path: str) -> dict[str, Any]:
    """What waits in a spool: envelopes, bytes, the oldest, items by type (read-only)."""
    folder = os.path.abspath(os.path.expanduser(path))
    queue = os.path.join(folder, "queue")
    if not os.path.isdir(queue):
        raise ConfigurationError(f"no spool at {folder!r} (it has no queue/ folder)")
    envelopes = total = unreadable = 0
    oldest: int | None = None
    items: dict[str, int] = {}
    owners: dict[str, int] = {}
    for name in sorted(os.listdir(queue)):
        parsed = _spool.parse_name(name)
        path_of = os.path.join(queue, name)
        try:
            size = os.path.getsize(path_of)
            with open(path_of, "rb") as file:
                envelope = Envelope.deserialize(_spool.decode_record(file.read(READ_LIMIT)))
        except FileNotFoundError:
            continue
        except (OSError, SpoolRecordError, EnvelopeError):
            unreadable += 1
            continue
        envelopes += 1
        total += size
        if parsed is not None:
            oldest = parsed[0] if oldest is None else min(oldest, parsed[0])
            owners[parsed[1]] = owners.get(parsed[1], 0) + 1
        for item in envelope.items:
            items[item.type] = items.get(item.type, 0) + 1
    aside = os.path.join(folder, "set-aside")
    live = {token: n for token, n in owners.items() if owner_alive(folder, token)}
    return {
        "path": folder,
        "envelopes": envelopes,
        "bytes": total,
        "oldest_ns": oldest,
        "items": dict(sorted(items.items())),
        "unreadable": unreadable,
        "set_aside": len(os.listdir(aside)) if os.path.isdir(aside) else 0,
        "held_by_running_processes": sum(live.values()),
    }


def purge(path: str) -> int:
    """Delete every record and set-aside file of a spool; returns how many went."""
    folder = os.path.abspath(os.path.expanduser(path))
    removed = 0
    for sub in ("queue", "set-aside"):
        where = os.path.join(folder, sub)
        if not os.path.isdir(where):
            continue
        for name in os.listdir(where):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(where, name))
                removed += 1
    return removed
