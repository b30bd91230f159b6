"""The disk spool's rules: record format, file names, eviction, replay pacing (no I/O here).

A spool file in ``<spool_dir>/queue/`` holds the envelopes one write round took (at most
``segment_bytes(bound)`` of them, so that eviction stays fine-grained), each a record:

    b"STSPOOL 1 <body length> <crc32 of body, 8 hex>\\n" <body>

where the body is the envelope as captured, minus ``sent_at`` (stamped at send time, never
stored), then, appended as its envelopes are answered, done markers ``b"STDONE 1 <i>\\n"``
(the i-th record of the file needs sending no more). A file whose every record is done is
deleted. ``parse_file`` reads one back: records and done markers up to the first damage (a
crash cut the last append short: what came before stands); a file that does not start with a
record of our version is foreign. An envelope's id in the spool is ``<file>#<i>``.

File names sort by age: ``<created ns, 20 digits>-<owner token>-<seq>.env``. The owner token
names the process that holds the file (its lock file says whether it still lives); a living
process claims a dead owner's files by renaming them to its own token, which only one
process can do for a given file.

``SpoolState`` is the engine's view of its own files: which are written and in memory,
which are parked on disk (their retries ran out, or the transport closed with the server
down), what to remove, and when to read parked ones back (``work``), all as values.
"""

from __future__ import annotations

import re
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .actions import Job
from .envelope import Envelope
from .errors import ProtocolError

VERSION = 1
SUFFIX = ".env"
DEFAULT_SPOOL_BYTES = 64 * 1024 * 1024
WRITE_BATCH = 256  # envelopes written per round of the spool's worker
REPLAY_BATCH = 64  # parked envelopes read back per round
SCAN_EVERY = 5.0  # seconds between looks for dead owners' files
REPLAY_BACKOFF = 1.0  # first pause before parked envelopes are tried again (doubles)
REPLAY_BACKOFF_MAX = 60.0
SET_ASIDE_KEEP = 64  # damaged or foreign files kept for inspection; older ones are deleted

_MAGIC = b"STSPOOL"
_DONE = b"STDONE"
SEGMENT_MAX = 4 * 1024 * 1024  # bytes of records per file, at most (one larger record: alone)
_NAME = re.compile(r"^(\d{20})-([0-9a-f]{16})-(\d{8})\.env$")


class SpoolRecordError(ProtocolError):
    """A spool file that is not a whole record of a version we read. ``foreign``: a record
    of another version (or no record at all), rather than a damaged one of ours."""

    def __init__(self, message: str, foreign: bool = False) -> None:
        self.foreign = foreign
        super().__init__(message)


def project_of(host: str, path_prefix: str, project_id: str) -> str:
    """Whose envelopes a spool folder holds: one project of one server (the port, scheme
    and key may change between runs; the project may not)."""
    return f"{host}{path_prefix}/{project_id}"


def stored_envelope(envelope: Envelope) -> Envelope:
    """What is stored of an envelope: everything but ``sent_at``."""
    if "sent_at" not in envelope.headers:
        return envelope
    headers = {k: v for k, v in envelope.headers.items() if k != "sent_at"}
    return Envelope(headers, envelope.items)


def encode_record(body: bytes) -> bytes:
    head = b"%s %d %d %08x\n" % (_MAGIC, VERSION, len(body), zlib.crc32(body))
    return head + body


def decode_record(data: bytes) -> bytes:
    """The body of a whole record; SpoolRecordError when it is not one."""
    end = data.find(b"\n", 0, 64)
    if end < 0:
        raise SpoolRecordError("no record header", foreign=not data.startswith(_MAGIC))
    fields = data[:end].split(b" ")
    if not fields or fields[0] != _MAGIC:
        raise SpoolRecordError("not a spool record", foreign=True)
    if len(fields) < 2 or fields[1] != b"%d" % VERSION:
        version = fields[1].decode("ascii", "replace") if len(fields) > 1 else "?"
        raise SpoolRecordError(f"record version {version}, not {VERSION}", foreign=True)
    try:
        length, crc = int(fields[2]), int(fields[3], 16)
    except (IndexError, ValueError):
        raise SpoolRecordError("bad record header") from None
    body = data[end + 1 :]
    if len(body) != length:
        raise SpoolRecordError(f"truncated: {len(body)} of {length} bytes")
    if zlib.crc32(body) != crc:
        raise SpoolRecordError("checksum mismatch")
    return body


def encode_done(indices: Iterable[int]) -> bytes:
    return b"".join(b"%s %d %d\n" % (_DONE, VERSION, i) for i in indices)


def segment_bytes(bound: int) -> int:
    """Record bytes one file takes: a sixteenth of the bound (eviction goes a file at a
    time, so it never takes more than that at once), within 1 byte .. SEGMENT_MAX."""
    return max(1, min(SEGMENT_MAX, bound // 16))


def record_id(file: str, index: int) -> str:
    return f"{file}#{index}"


def split_id(ident: str) -> tuple[str, int]:
    file, _, index = ident.rpartition("#")
    return file, int(index)


@dataclass(slots=True)
class ParsedFile:
    records: list[tuple[int, int, bytes]]  # (index, record bytes, body), in file order
    done: set[int]
    damage: str | None = None  # what stopped the reading early (a torn append, garbage)
    foreign: bool = False  # not a file of ours at all (nothing of it is taken)

    def live(self) -> list[tuple[int, int, bytes]]:
        return [record for record in self.records if record[0] not in self.done]


def parse_file(data: bytes) -> ParsedFile:
    """Records and done markers of a spool file, up to the first damage."""
    parsed = ParsedFile([], set())
    pos, index, size = 0, 0, len(data)
    while pos < size:
        end = data.find(b"\n", pos, pos + 64)
        fields = data[pos:end].split(b" ") if end >= 0 else []
        kind = fields[0] if fields else b""
        if kind == _DONE and len(fields) == 3 and fields[1] == b"%d" % VERSION:
            try:
                parsed.done.add(int(fields[2]))
            except ValueError:
                parsed.damage = "bad done marker"
                break
            pos = end + 1
            continue
        if kind != _MAGIC:
            if pos == 0:
                parsed.foreign = True
                parsed.damage = "not a spool file" if data[:7] != _MAGIC else "no record header"
            else:
                parsed.damage = "cut short" if end < 0 else "garbage after the records"
            break
        try:
            body = decode_record(data[pos:] if end < 0 else data[pos : end + 1 + _length(fields)])
        except SpoolRecordError as exc:
            parsed.foreign = pos == 0 and exc.foreign
            parsed.damage = str(exc)
            break
        taken = end + 1 - pos + len(body)
        parsed.records.append((index, taken, body))
        index += 1
        pos += taken
    return parsed


def _length(fields: list[bytes]) -> int:
    try:
        return max(0, int(fields[2]))
    except (IndexError, ValueError):
        return 0


def file_name(created_ns: int, token: str, seq: int) -> str:
    return f"{created_ns:020d}-{token}-{seq % 100_000_000:08d}{SUFFIX}"


def parse_name(name: str) -> tuple[int, str, int] | None:
    """(created ns, owner token, seq) of a spool file's name; None for any other name."""
    match = _NAME.match(name)
    if match is None:
        return None
    return int(match[1]), match[2], int(match[3])


def renamed(name: str, token: str, seq: int) -> str:
    """A claimed file's new name: the same age, the new owner."""
    parsed = parse_name(name)
    assert parsed is not None
    return file_name(parsed[0], token, seq)


def evictions(
    entries: Iterable[tuple[str, int]],
    total: int,
    bound: int,
    incoming: int,
    protected: frozenset[str] = frozenset(),
) -> tuple[list[str], bool]:
    """Which files go so that ``incoming`` more bytes fit under ``bound``: the oldest first
    (``entries`` oldest first), never a protected one (in flight). Returns (names, fits);
    when it cannot fit even so, nothing is evicted for it."""
    if total + incoming <= bound:
        return [], True
    if incoming > bound:
        return [], False
    chosen: list[str] = []
    for name, size in entries:
        if name in protected:
            continue
        chosen.append(name)
        total -= size
        if total + incoming <= bound:
            return chosen, True
    return [], False


@dataclass(eq=False, slots=True)
class SpoolWork:
    """One round of the spool's worker: write these, remove those, read parked ones back,
    look for dead owners' files. ``protected``: names in flight (never evicted)."""

    write: list[Job]
    remove: list[str]
    reload: list[str]
    scan: bool
    protected: frozenset[str]
    more: int = 0  # dead owners' files the scan may read back at once, beyond ``reload``


@dataclass(eq=False, slots=True)
class SpoolOutcome:
    """What the file layer did with a ``SpoolWork``."""

    written: list[tuple[Job, str, int]] = field(default_factory=list)  # job, name, bytes
    unwritten: list[tuple[Job, str]] = field(default_factory=list)  # job, why not
    overflow: list[Job] = field(default_factory=list)  # did not fit: cache_overflow
    evicted: list[tuple[str, Envelope | None]] = field(default_factory=list)
    claimed: list[tuple[str, int]] = field(default_factory=list)  # dead owners', now ours
    loaded: list[tuple[str, int, Envelope, bool]] = field(default_factory=list)  # claimed?
    missing: list[str] = field(default_factory=list)  # gone from the disk before read
    set_aside: list[tuple[str, str]] = field(default_factory=list)  # name, why
    error: str | None = None  # the directory itself failed (permissions, disk)


class SpoolState:
    """The engine's view of its spooled files (single owner: the engine's)."""

    def __init__(self) -> None:
        self.unwritten: deque[Job] = deque()  # captured, not yet on disk
        self.parked: deque[tuple[str, int]] = deque()  # on disk, not in memory: name, bytes
        self.removals: list[str] = []  # done with: delete
        self.jobs: dict[str, Job] = {}  # file -> its job, while in memory
        self.sizes: dict[str, int] = {}  # every file of ours on disk -> bytes
        self.claimed: set[str] = set()  # a dead owner's files, not yet counted accepted here
        self.evicted: set[int] = set()  # seqs of jobs whose file went while they were in flight
        self.busy = False  # a SpoolWork is out
        self.writing = 0  # jobs in it, being written (still queued)
        self.next_scan = 0.0  # at the first look
        self.replay_after = 0.0
        self.backoff = REPLAY_BACKOFF
        self.counters = {
            "written": 0,
            "removed": 0,
            "replayed": 0,
            "claimed": 0,
            "evicted": 0,
            "set_aside": 0,
            "write_errors": 0,
        }

    @property
    def spooled(self) -> int:
        """Envelopes of ours on disk, waiting (in memory or parked)."""
        return len(self.sizes)

    def due(self, now: float, room: int, paused: bool) -> bool:
        """Whether the spool's worker has something to do now."""
        if self.busy:
            return False
        return bool(
            self.unwritten
            or self.removals
            or now >= self.next_scan
            or (self.parked and room > 0 and not paused and now >= self.replay_after)
        )

    def work(
        self, now: float, room: int, paused: bool, flying: Iterable[Job], final: bool = False
    ) -> SpoolWork:
        """Take a round's work (call when ``due``). ``room``: jobs the memory queue can
        take; ``paused``: a rate limit is active (spooled envelopes wait it out);
        ``final``: the transport is closing: write and remove, read nothing back."""
        self.busy = True
        write = [self.unwritten.popleft() for _ in range(min(WRITE_BATCH, len(self.unwritten)))]
        self.writing = len(write)
        remove, self.removals = self.removals, []
        reload: list[str] = []
        replay = not final and room > 0 and not paused and now >= self.replay_after
        if replay:
            for _ in range(min(REPLAY_BATCH, room, len(self.parked))):
                reload.append(self.parked.popleft()[0])
        scan = not final and now >= self.next_scan
        if scan:
            self.next_scan = now + SCAN_EVERY
        more = min(REPLAY_BATCH, room) - len(reload) if scan and replay else 0
        protected = frozenset(job.spool for job in flying if job.spool is not None)
        return SpoolWork(write, remove, reload, scan, protected, max(0, more))

    def wakes_at(self, now: float, paused_until: float | None) -> float:
        """When the spool's worker next has something to do by the clock alone."""
        when = self.next_scan
        if self.parked:
            replay = max(self.replay_after, paused_until or 0.0)
            when = min(when, replay)
        return max(when, now)

    def parked_again(self, name: str, size: int, now: float) -> None:
        """A job of ours gave up for now (network down, or closing): its file waits."""
        self.parked.append((name, size))
        if now >= self.replay_after:  # not already pausing: pause, longer each time in a row
            self.replay_after = now + self.backoff
            self.backoff = min(self.backoff * 2, REPLAY_BACKOFF_MAX)

    def recovered(self) -> None:
        """The server answered: parked envelopes may be tried again at once."""
        self.replay_after = 0.0
        self.backoff = REPLAY_BACKOFF
