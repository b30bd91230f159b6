"""Scenarios: the disk spool (``spool_dir``): kept across a close with the server down and
sent by the next start, drained live when the server comes back, bounded with the oldest
evicted as ``cache_overflow``, damaged files set aside, two transports on one folder."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from ...core import spool as _spool
from ...core.envelope import Envelope
from .._record import Respond
from ..sink import Sink
from ._base import Make, Traits, event, free_port, sink_events

pytestmark = pytest.mark.network


def _queue(folder: Path) -> list[str]:
    """The envelopes waiting on disk, as record ids (oldest first)."""
    queue = folder / "queue"
    found = []
    for name in sorted(os.listdir(queue)) if queue.exists() else []:
        try:
            data = (queue / name).read_bytes()
        except FileNotFoundError:  # delivered and removed since it was listed
            continue
        parsed = _spool.parse_file(data)
        found += [_spool.record_id(name, index) for index, _, _ in parsed.live()]
    return found


def _wait(condition: Any, timeout: float = 10.0, poke: Any = None) -> bool:
    """Until ``condition()``; ``poke``: a blocking transport, which sends (and reads its
    spool back) only when called, so it is flushed between looks."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        if poke is not None:
            poke.flush(0.2)
        else:
            time.sleep(0.02)
    return True


def _idle(transport: Any) -> bool:
    stats = transport.stats()
    return bool(stats["queued"] == 0 and not stats["in_flight"])


def _down(port: int) -> str:
    return f"http://public@127.0.0.1:{port}/42"


def test_spool_keeps_what_a_down_server_did_not_take_for_the_next_start(
    make: Make, tmp_path: Path, traits: Traits
) -> None:
    port = free_port()
    first = make(_down(port), spool_dir=str(tmp_path))
    for i in range(10):
        first.capture_envelope(event(f"kept{i}"))
    first.close(1.0)
    stats = first.stats()
    assert stats["lost"] == {} and stats["events"]["lost"] == 0, stats
    assert stats["spooled"] == 10, stats
    assert len(_queue(tmp_path)) == 10
    with Sink(port=port) as sink:
        second = make(sink.dsn, spool_dir=str(tmp_path))  # nothing captured: it replays
        poke = second if traits.blocking else None
        assert _wait(lambda: len(sink_events(sink)) >= 10, poke=poke), sink_events(sink)
        assert second.flush(5)
        second.close(2.0)
        assert sorted(sink_events(sink)) == sorted(f"kept{i}" for i in range(10))  # once each
        stats = second.stats()
        assert stats["events"]["delivered"] == 10 and stats["spooled"] == 0, stats
    assert _queue(tmp_path) == []


def test_spool_drains_when_the_server_comes_back(
    make: Make, tmp_path: Path, traits: Traits
) -> None:
    port = free_port()
    transport = make(_down(port), spool_dir=str(tmp_path))
    poke = transport if traits.blocking else None
    for i in range(10):
        transport.capture_envelope(event(f"outage{i}"))
    # every retry fails: each envelope ends parked on disk, none counted lost
    assert _wait(lambda: _idle(transport), poke=poke)
    assert transport.stats()["lost"] == {}
    assert len(_queue(tmp_path)) == 10
    with Sink(port=port) as sink:
        assert _wait(lambda: len(sink_events(sink)) >= 10, 15.0, poke), sink_events(sink)
        assert _wait(lambda: _queue(tmp_path) == [], poke=poke)
        stats = transport.stats()
        assert stats["events"] == {"accepted": 10, "delivered": 10, "lost": 0}, stats
        assert stats["spool"]["replayed"] >= 10
        assert sorted(sink_events(sink)) == sorted(f"outage{i}" for i in range(10))


def _record_size(envelope: Envelope) -> int:
    return len(_spool.encode_record(_spool.stored_envelope(envelope).serialize()))


def test_spool_bound_evicts_the_oldest_as_cache_overflow(
    make: Make, tmp_path: Path, traits: Traits
) -> None:
    port = free_port()
    envelopes = [event(f"bound{i:02d}") for i in range(12)]
    size = _record_size(envelopes[0])
    assert all(_record_size(envelope) == size for envelope in envelopes)
    # one connection: at most one file is in flight, and a file in flight is never evicted
    transport = make(_down(port), spool_dir=str(tmp_path), spool_bytes=3 * size, max_connections=1)
    for envelope in envelopes:
        transport.capture_envelope(envelope)
    transport.close(1.0)
    stats = transport.stats()
    assert stats["lost"] == {"cache_overflow": {"error": 9}}, stats
    assert stats["spooled"] == 3
    assert len(_queue(tmp_path)) == 3
    on_disk = sum(path.stat().st_size for path in (tmp_path / "queue").iterdir())
    assert on_disk <= 3 * size
    with Sink(port=port) as sink:
        again = make(sink.dsn, spool_dir=str(tmp_path))
        poke = again if traits.blocking else None
        assert _wait(lambda: len(sink_events(sink)) >= 3, poke=poke), sink_events(sink)
        again.close(2.0)
        kept = sorted(sink_events(sink))
    # the oldest went first: the newest is kept, and at most one older one that was in
    # flight when a newer one came
    assert len(set(kept)) == 3 and kept[-1] == "bound11", kept
    assert sum(name < "bound08" for name in kept) <= 1, kept


def _dead_owner_file(folder: Path, created: int, data: bytes) -> str:
    """A file as a process that died would have left it (its token has no lock file)."""
    (folder / "queue").mkdir(parents=True, exist_ok=True)
    name = _spool.file_name(created, "0123456789abcdef", created % 1000)
    (folder / "queue" / name).write_bytes(data)
    return name


def test_spool_sets_damaged_and_foreign_files_aside(
    make: Make, tmp_path: Path, traits: Traits
) -> None:
    good = [event(f"good{i}") for i in range(3)]
    base = time.time_ns()
    for i, envelope in enumerate(good):
        record = _spool.encode_record(_spool.stored_envelope(envelope).serialize())
        _dead_owner_file(tmp_path, base + i * 10, record)
    whole = _spool.encode_record(event("cut").serialize())
    _dead_owner_file(tmp_path, base + 1, whole[: len(whole) // 2])  # truncated by a crash
    _dead_owner_file(tmp_path, base + 2, b"\x00garbage\xff" * 20)
    _dead_owner_file(tmp_path, base + 3, whole.replace(b"STSPOOL 1 ", b"STSPOOL 9 ", 1))
    _dead_owner_file(tmp_path, base + 4, _spool.encode_record(b"not an envelope\n\n{"))
    (tmp_path / "queue" / "notes.txt").write_text("someone else's")
    with Sink() as sink:
        transport = make(sink.dsn, spool_dir=str(tmp_path))
        poke = transport if traits.blocking else None
        assert _wait(lambda: len(sink_events(sink)) >= 3, poke=poke), sink_events(sink)
        assert _wait(lambda: transport.stats()["spool"]["set_aside"] >= 5, poke=poke)
        transport.close(2.0)
        assert sorted(sink_events(sink)) == ["good0", "good1", "good2"]
    assert _queue(tmp_path) == []
    assert len(os.listdir(tmp_path / "set-aside")) == 5


def test_spool_two_live_transports_send_nothing_twice(
    make: Make, tmp_path: Path, traits: Traits
) -> None:
    port = free_port()
    first = make(_down(port), spool_dir=str(tmp_path))
    for i in range(10):
        first.capture_envelope(event(f"first{i}"))
    assert _wait(lambda: _idle(first), poke=first if traits.blocking else None)
    second = make(_down(port), spool_dir=str(tmp_path))  # sees the first's files, alive
    for i in range(10):
        second.capture_envelope(event(f"second{i}"))
    assert _wait(lambda: _idle(second), poke=second if traits.blocking else None)
    with Sink(port=port) as sink:

        def both() -> bool:
            if traits.blocking:
                first.flush(0.2)
                second.flush(0.2)
            return len(sink_events(sink)) >= 20

        assert _wait(both, timeout=15.0), sink_events(sink)
        first.close(2.0)
        second.close(2.0)
        names = sink_events(sink)
        assert sorted(names) == sorted(
            [f"first{i}" for i in range(10)] + [f"second{i}" for i in range(10)]
        )
        assert second.stats()["spool"]["claimed"] == 0  # never took a living owner's files
        assert first.stats()["events"]["delivered"] == 10
        assert second.stats()["events"]["delivered"] == 10
    assert _queue(tmp_path) == []


def test_spool_fork_child_spools_its_own_and_leaves_the_parents(
    make: Make, sink: Sink, tmp_path: Path
) -> None:
    """A pre-fork server's workers on one folder: nothing sent twice, nothing left."""
    sink.default = Respond(200, delay=0.2)
    transport = make(sink.dsn, spool_dir=str(tmp_path), max_connections=2)
    for i in range(6):
        transport.capture_envelope(event(f"parent{i}"))
    assert _wait(lambda: len(_queue(tmp_path)) >= 1)  # the parent's files are on disk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: its own files only
        code = 1
        try:
            for i in range(3):
                transport.capture_envelope(event(f"child{i}"))
            ok = transport.flush(10)
            stats = transport.stats()
            transport.close(2)
            fine = ok and stats["accepted"] == 3 and stats["delivered"] == 3
            code = 0 if fine and stats["spool"]["claimed"] == 0 else 2
        finally:
            os._exit(code)
    assert transport.flush(10)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert _wait(lambda: _queue(tmp_path) == [])
    expected = [f"parent{i}" for i in range(6)] + [f"child{i}" for i in range(3)]
    assert sorted(sink_events(sink)) == sorted(expected)  # each once
