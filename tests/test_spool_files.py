"""The spool's file layer (io/spool_files.py) and the ``sentry-transport spool`` command:
permissions, atomic writes, owners, a folder that cannot be used, one project per folder."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from sentry_transport import _cli, make_transport
from sentry_transport.core import spool as sp
from sentry_transport.core.actions import Job
from sentry_transport.core.errors import ConfigurationError
from sentry_transport.core.spool import SpoolWork
from sentry_transport.io.spool_files import SpoolDir
from sentry_transport.io.spool_owners import owner_alive
from sentry_transport.io.spool_survey import survey
from sentry_transport.testing import Sink
from sentry_transport.testing.conformance._base import free_port
from test_core_engine import event

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions and flock")


def work(
    write: tuple[Job, ...] | list[Job] = (),
    remove: tuple[str, ...] | list[str] = (),
    scan: bool = False,
) -> SpoolWork:
    return SpoolWork(list(write), list(remove), [], scan, frozenset(), 0)


def test_folders_are_owner_only_and_records_whole(tmp_path: Path) -> None:
    folder = SpoolDir(str(tmp_path / "s"), 1 << 20, project="h/1")
    job = Job(1, event("x"), 100)
    out = folder.apply(work([job]))
    ((written, ident, size),) = out.written
    assert written is job
    name, index = sp.split_id(ident)
    assert index == 0
    for sub in ("", "queue", "tmp", "set-aside", "owners"):
        assert stat.S_IMODE((tmp_path / "s" / sub).stat().st_mode) == 0o700
    record = tmp_path / "s" / "queue" / name
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert record.stat().st_size == size
    parsed = sp.parse_file(record.read_bytes())
    assert [body for _, _, body in parsed.live()] == [job.envelope.serialize()]
    assert os.listdir(tmp_path / "s" / "tmp") == []  # (only locks and markers pass there)
    folder.apply(work(remove=[ident]))
    assert not record.exists()
    folder.close()


def test_a_folder_that_cannot_be_used_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigurationError, match="cannot be used"):
        SpoolDir(str(blocker / "spool"), 1 << 20)
    with pytest.raises(ConfigurationError, match="cannot be used"):
        make_transport("http://public@127.0.0.1:9/42", spool_dir=str(blocker))


def test_one_project_per_folder(tmp_path: Path) -> None:
    first = SpoolDir(str(tmp_path), 1 << 20, project="a.example/42")
    same = SpoolDir(str(tmp_path), 1 << 20, project="a.example/42")
    with pytest.raises(ConfigurationError, match="give each project a spool_dir"):
        SpoolDir(str(tmp_path), 1 << 20, project="a.example/43")
    first.close()
    same.close()
    # the port and the key may change between runs, the project may not
    make_transport("http://other@127.0.0.1:9/42", spool_dir=str(tmp_path / "t")).close(0)
    make_transport("http://public@127.0.0.1:19/42", spool_dir=str(tmp_path / "t")).close(0)
    with pytest.raises(ConfigurationError):
        make_transport("http://public@127.0.0.1:9/7", spool_dir=str(tmp_path / "t"))


def test_a_write_that_fails_is_reported_and_the_envelope_still_goes(tmp_path: Path) -> None:
    folder = SpoolDir(str(tmp_path), 1 << 20)
    os.rmdir(tmp_path / "queue")
    (tmp_path / "queue").write_text("in the way")  # every write now fails
    job = Job(1, event(), 100)
    out = folder.apply(work([job]))
    assert out.written == [] and [j for j, _ in out.unwritten] == [job]
    assert "cannot write" in out.unwritten[0][1]
    folder.close()


def test_owners_live_while_they_hold_their_lock(tmp_path: Path) -> None:
    alive = SpoolDir(str(tmp_path), 1 << 20)
    assert owner_alive(str(tmp_path), alive.token)
    out = alive.apply(work([Job(1, event(), 100)]))
    ((_, ident, _),) = out.written
    name = sp.split_id(ident)[0]
    other = SpoolDir(str(tmp_path), 1 << 20)
    assert other.apply(work(scan=True)).claimed == []  # a living owner's files stay its own
    stale = tmp_path / "tmp" / "deadbeefdeadbeef.lock"  # a lock a crash left half made
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    alive.forget()  # as if killed: the lock is gone with the process
    assert not owner_alive(str(tmp_path), alive.token)
    claimed = other.apply(work(scan=True)).claimed
    assert len(claimed) == 1
    taken = sp.parse_name(sp.split_id(claimed[0][0])[0])
    assert taken is not None and taken[1] == other.token
    assert taken[0] == sp.parse_name(name)[0]  # type: ignore[index]  # same age
    assert not stale.exists()
    assert not (tmp_path / "owners" / f"{alive.token}.lock").exists()
    other.close()


def test_fsync_on_still_writes(tmp_path: Path) -> None:
    folder = SpoolDir(str(tmp_path), 1 << 20, fsync=True)
    assert len(folder.apply(work([Job(1, event(), 100)])).written) == 1
    folder.close()


def test_the_spool_command_shows_sends_and_purges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Sink() as sink:
        down = make_transport(
            f"http://public@127.0.0.1:{free_port()}/42",
            spool_dir=str(tmp_path),
            retry_attempts=0,
        )
        for i in range(4):
            down.capture_event({"message": f"waiting {i}"})
        down.close(1.0)
        assert down.stats()["spooled"] == 4
        assert _cli.main(["spool", str(tmp_path)]) == 0
        shown = capsys.readouterr().out
        assert "envelopes waiting: 4" in shown and "items: event 4" in shown
        assert "oldest: " in shown
        assert _cli.main(["spool", str(tmp_path), "--send", sink.dsn, "--timeout", "20"]) == 0
        assert "delivered 4" in capsys.readouterr().out
        assert len(sink.envelopes) == 4
    assert survey(str(tmp_path))["envelopes"] == 0
    (tmp_path / "queue" / "stray").write_text("x")
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert _cli.main(["spool", str(tmp_path), "--purge"]) == 1
    assert (tmp_path / "queue" / "stray").exists()
    assert _cli.main(["spool", str(tmp_path), "--purge", "--yes"]) == 0
    assert os.listdir(tmp_path / "queue") == []
    assert _cli.main(["spool", str(tmp_path / "nothing")]) == 2
    assert "no spool at" in capsys.readouterr().err


def test_a_round_is_one_file_whose_records_are_marked_done_then_it_goes(tmp_path: Path) -> None:
    folder = SpoolDir(str(tmp_path), 1 << 20)
    jobs = [Job(i, event(f"m{i}"), 100) for i in range(5)]
    out = folder.apply(work(jobs))
    idents = [ident for _, ident, _ in out.written]
    assert len({sp.split_id(ident)[0] for ident in idents}) == 1  # one file for the round
    (name,) = os.listdir(tmp_path / "queue")
    folder.apply(work(remove=idents[:2]))
    parsed = sp.parse_file((tmp_path / "queue" / name).read_bytes())
    assert parsed.done == {0, 1} and [i for i, _, _ in parsed.live()] == [2, 3, 4]
    # a crash cut the next append short: the records and markers before it stand
    with open(tmp_path / "queue" / name, "ab") as file:
        file.write(b"STDONE 1 ")
    parsed = sp.parse_file((tmp_path / "queue" / name).read_bytes())
    assert parsed.damage and [i for i, _, _ in parsed.live()] == [2, 3, 4]
    folder.apply(work(remove=idents[2:]))
    assert os.listdir(tmp_path / "queue") == []
    folder.close()


def test_a_small_bound_keeps_files_small_and_evicts_whole_files_oldest_first(
    tmp_path: Path,
) -> None:
    size = len(sp.encode_record(event("m0").serialize()))
    folder = SpoolDir(str(tmp_path), 4 * size)  # a sixteenth of it is under one record
    first = folder.apply(work([Job(i, event(f"m{i}"), 100) for i in range(4)]))
    assert len(os.listdir(tmp_path / "queue")) == 4  # a record a file
    second = folder.apply(work([Job(9, event("m9"), 100)]))
    assert [ident for ident, _ in second.evicted] == [first.written[0][1]]
    evicted = second.evicted[0][1]
    assert evicted is not None and evicted.items[0].json["message"] == "m0"
    in_flight = frozenset({first.written[1][1]})
    third = SpoolWork([Job(10, event("m8"), 100)], [], [], False, in_flight, 0)
    out = folder.apply(third)
    assert [ident for ident, _ in out.evicted] == [first.written[2][1]]  # m1 is in flight
    folder.close()
