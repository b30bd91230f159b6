"""The disk spool's core: the record format, file names, eviction and the engine's spool
decisions, with bytes and a fake clock (the file layer is played by hand here)."""

from __future__ import annotations

import pytest

from sentry_transport.core import spool as sp
from sentry_transport.core.engine import REQUEUE, Engine, Job, Send
from sentry_transport.core.envelope import Envelope
from sentry_transport.core.spool import SpoolOutcome, SpoolRecordError, SpoolWork
from test_core_engine import T0, event, ledger, lost, make, response

# -- the record ------------------------------------------------------------------------------


def test_a_record_round_trips_and_holds_no_sent_at() -> None:
    envelope = Envelope({**event("x").headers, "sent_at": "2026-01-01T00:00:00Z"}, event().items)
    body = sp.stored_envelope(envelope).serialize()
    assert b"sent_at" not in body
    record = sp.encode_record(body)
    assert record.startswith(b"STSPOOL 1 ")
    assert sp.decode_record(record) == body
    assert Envelope.deserialize(sp.decode_record(record)).items[0].json["message"] == "boom"


@pytest.mark.parametrize(
    ("damage", "foreign"),
    [
        (lambda r: r[: len(r) - 3], False),  # truncated by a crash
        (lambda r: r + b"more", False),
        (lambda r: r[:-1] + bytes([r[-1] ^ 1]), False),  # a flipped bit
        (lambda r: r.replace(b"STSPOOL 1 ", b"STSPOOL 2 ", 1), True),  # another version
        (lambda r: b"\x00\x01garbage" * 10, True),
        (lambda r: b"", True),
        (lambda r: r.split(b"\n", 1)[0], False),  # a header and nothing after it
        (lambda r: b"STSPOOL 1 x y\n" + r, False),
    ],
)
def test_a_damaged_or_foreign_record_is_refused(damage: object, foreign: bool) -> None:
    record = sp.encode_record(event().serialize())
    with pytest.raises(SpoolRecordError) as raised:
        sp.decode_record(damage(record))  # type: ignore[operator]
    assert raised.value.foreign is foreign


def test_names_sort_by_age_and_name_their_owner() -> None:
    older = sp.file_name(1_700_000_000_000_000_000, "a" * 16, 7)
    newer = sp.file_name(1_700_000_000_000_000_001, "0" * 16, 1)
    assert older < newer
    assert sp.parse_name(older) == (1_700_000_000_000_000_000, "a" * 16, 7)
    claimed = sp.renamed(older, "b" * 16, 9)
    assert sp.parse_name(claimed) == (1_700_000_000_000_000_000, "b" * 16, 9)
    for stranger in ("notes.txt", older + ".tmp", older.replace(".env", ".bin"), "1-2-3.env"):
        assert sp.parse_name(stranger) is None


def test_eviction_takes_the_oldest_first_and_never_one_in_flight() -> None:
    entries = [("a", 10), ("b", 10), ("c", 10), ("d", 10)]
    assert sp.evictions(entries, 40, 45, 5) == ([], True)
    assert sp.evictions(entries, 40, 45, 10) == (["a"], True)
    assert sp.evictions(entries, 40, 45, 25) == (["a", "b"], True)
    assert sp.evictions(entries, 40, 45, 10, frozenset({"a"})) == (["b"], True)
    assert sp.evictions(entries, 40, 45, 46) == ([], False)  # bigger than the bound itself
    assert sp.evictions(entries, 40, 45, 40, frozenset({"a", "b", "c"})) == ([], False)


# -- the engine with a spool ------------------------------------------------------------------


def spooled(**options: object) -> Engine:
    return make(spool_dir="/spool", **options)


def round_of(engine: Engine, now: float = T0, room: int = 100) -> SpoolWork:
    work = engine.spool_work(now, room)
    assert work is not None
    return work


def read_back(engine: Engine, now: float) -> list[str]:
    """What a round at ``now`` reads back (no round, none); the round is closed empty."""
    work = engine.spool_work(now, 100)
    if work is None:
        return []
    engine.spooled(work, SpoolOutcome(), now)
    if work.reload:  # put them back as they were, for the next look
        assert engine.spool is not None
        engine.spool.parked.extendleft((name, 100) for name in reversed(work.reload))
    return work.reload


def write_all(engine: Engine, now: float = T0) -> SpoolWork:
    """One round in which the file layer wrote every job it was given."""
    work = round_of(engine, now)
    outcome = SpoolOutcome(
        written=[(job, f"{job.seq:020d}-{'f' * 16}-{job.seq:08d}.env", 100) for job in work.write]
    )
    engine.spooled(work, outcome, now)
    if work.reload:  # not read in this round after all: parked as they were
        assert engine.spool is not None
        engine.spool.parked.extendleft((name, 100) for name in reversed(work.reload))
    return work


def test_a_job_is_sent_only_once_written() -> None:
    engine = spooled()
    engine.submit(event(), T0)
    assert engine.ready == 0 and engine.queued == 1
    assert not isinstance(engine.next_action(T0), Send)
    work = write_all(engine)
    assert len(work.write) == 1 and work.scan  # the first round also looks for leftovers
    assert engine.snapshot(T0)["spooled"] == 1
    action = engine.next_action(T0)
    assert isinstance(action, Send)
    (attempt,) = action.attempts
    engine.encode(attempt, T0)
    engine.on_results([(attempt, response(200))], T0)
    assert engine.snapshot(T0)["spooled"] == 0
    work = round_of(engine)
    assert work.remove == [attempt.job.spool or work.remove[0]] and len(work.remove) == 1


def test_one_round_at_a_time() -> None:
    engine = spooled()
    engine.submit(event(), T0)
    work = round_of(engine)
    engine.submit(event(), T0)
    assert engine.spool_work(T0, 100) is None  # busy
    engine.spooled(work, SpoolOutcome(), T0)
    assert engine.spool_work(T0, 100) is not None


def fail_until_parked(engine: Engine, now: float) -> float:
    """Network errors until the engine gives up on every job (it parks them)."""
    for _ in range(50):
        action = engine.next_action(now, 10)
        if isinstance(action, Send):
            for attempt in action.attempts:
                engine.encode(attempt, now)
            engine.on_results([(a, ConnectionRefusedError()) for a in action.attempts], now)
        elif engine.queued == 0 and not engine.flying():
            return now
        now += 1.0
    raise AssertionError("never parked")


def test_retries_run_out_into_the_spool_not_into_the_books() -> None:
    engine = spooled(retry_attempts=1, retry_backoff=0.1)
    for _ in range(3):
        engine.submit(event(), T0)
    write_all(engine)
    now = fail_until_parked(engine, T0)
    snapshot = engine.snapshot(now)
    assert snapshot["lost"] == {} and snapshot["events"]["lost"] == 0
    assert snapshot["spooled"] == 3 and engine.done(engine.begin_flush().mark)
    # read back after the pause, not before
    assert engine.spool is not None
    later = engine.spool.replay_after
    assert later > T0
    assert read_back(engine, later - 0.01) == []
    work = round_of(engine, later)
    assert len(work.reload) == 3


def test_the_pause_grows_while_the_server_stays_down_and_ends_when_it_answers() -> None:
    engine = spooled(retry_attempts=0)
    spool = engine.spool
    assert spool is not None
    engine.submit(event(), T0)
    write_all(engine)
    now = fail_until_parked(engine, T0)
    first = spool.replay_after - now
    reload_at = spool.replay_after
    work = round_of(engine, reload_at)
    (name,) = work.reload
    engine.spooled(work, SpoolOutcome(loaded=[(name, 100, event(), False)]), reload_at)
    now = fail_until_parked(engine, reload_at)
    assert spool.replay_after - now > first  # longer each time in a row
    engine.submit(event(), now)
    write_all(engine, now)
    action = engine.next_action(now)
    assert isinstance(action, Send)
    engine.encode(action.attempts[0], now)
    engine.on_results([(action.attempts[0], response(200))], now)
    assert spool.replay_after == 0.0  # the server answered: read back at once
    assert len(round_of(engine, now).reload) == 1


def test_a_rate_limit_pauses_the_read_back() -> None:
    engine = spooled(retry_attempts=0)
    engine.submit(event(), T0)
    write_all(engine)
    now = fail_until_parked(engine, T0)
    engine.submit(event(), now)
    write_all(engine, now)
    action = engine.next_action(now)
    assert isinstance(action, Send)
    engine.encode(action.attempts[0], now)
    engine.on_results([(action.attempts[0], response(429, {"Retry-After": "30"}))], now)
    assert read_back(engine, now + 1) == []
    assert read_back(engine, now + 29) == []
    assert len(round_of(engine, now + 31).reload) == 1


def test_close_leaves_spooled_jobs_on_disk_uncounted_and_counts_unwritten_ones() -> None:
    engine = spooled()
    engine.submit(event(), T0)
    engine.submit(event(), T0)
    write_all(engine)
    engine.submit(event(), T0)  # captured, never written
    action = engine.next_action(T0, 1)
    assert isinstance(action, Send)  # one in flight at close
    engine.close()
    flying = engine.abandon()
    assert len(flying) == 1
    assert lost(engine) == {"queue_overflow": {"error": 1}}
    assert engine.snapshot(T0)["spooled"] == 2
    assert engine.spool is not None and engine.spool.removals == []  # both files stay


def test_a_full_spool_evicts_a_queued_job_as_cache_overflow_once() -> None:
    engine = spooled()
    engine.submit(event("old"), T0)
    write_all(engine)
    (old,) = list(engine.spool.jobs.values())  # type: ignore[union-attr]
    engine.submit(event("new"), T0)
    work = round_of(engine)
    new = work.write[0]
    engine.spooled(
        work,
        SpoolOutcome(written=[(new, "n.env", 100)], evicted=[(old.spool or "", None)]),
        T0,
    )
    assert lost(engine) == {"cache_overflow": {"error": 1}}
    assert ledger(engine) == {("cache_overflow", "error"): 1}
    action = engine.next_action(T0, 10)
    assert isinstance(action, Send)
    assert [a.job for a in action.attempts] == [new]  # the old one is gone from memory too


def test_evicted_while_in_flight_counts_as_cache_overflow_only_if_it_fails() -> None:
    for answer, expected in ((response(200), {}), (ConnectionRefusedError(), "overflow")):
        engine = spooled(retry_attempts=0)
        engine.submit(event(), T0)
        write_all(engine)
        action = engine.next_action(T0)
        assert isinstance(action, Send)
        (attempt,) = action.attempts
        name = attempt.job.spool
        assert name is not None
        engine.submit(event(), T0)
        work = round_of(engine)
        engine.spooled(work, SpoolOutcome(evicted=[(name, None)]), T0)
        assert lost(engine) == {}
        engine.encode(attempt, T0)
        engine.on_results([(attempt, answer)], T0)
        if expected == "overflow":
            assert lost(engine) == {"cache_overflow": {"error": 1}}
        else:
            assert lost(engine) == {} and engine.snapshot(T0)["delivered"] == 1


def test_a_parked_file_evicted_is_counted_from_what_it_held() -> None:
    engine = spooled(retry_attempts=0)
    engine.submit(event(), T0)
    write_all(engine)
    now = fail_until_parked(engine, T0)
    assert engine.spool is not None
    ((name, _),) = engine.spool.parked
    engine.submit(event(), now)
    work = round_of(engine, now)
    engine.spooled(work, SpoolOutcome(evicted=[(name, event())]), now)
    assert lost(engine) == {"cache_overflow": {"error": 1}}
    assert not engine.spool.parked


def test_files_of_a_dead_owner_are_counted_accepted_here_once_read() -> None:
    engine = spooled()
    work = round_of(engine)
    engine.spooled(work, SpoolOutcome(claimed=[("c.env", 120)]), T0)
    assert engine.snapshot(T0)["accepted"] == 0 and engine.snapshot(T0)["spooled"] == 1
    work = round_of(engine, T0)
    assert work.reload == ["c.env"]
    engine.spooled(work, SpoolOutcome(loaded=[("c.env", 120, event(), False)]), T0)
    assert engine.snapshot(T0)["accepted"] == 1
    # one read back in the scan's own round counts the same
    work = round_of(engine, T0 + sp.SCAN_EVERY)
    assert work.scan and work.more > 0
    engine.spooled(work, SpoolOutcome(loaded=[("d.env", 120, event(), True)]), T0)
    assert engine.snapshot(T0)["accepted"] == 2


def test_damaged_files_are_counted_not_lost_and_write_errors_still_send() -> None:
    engine = spooled()
    engine.submit(event(), T0)
    work = round_of(engine)
    (job,) = work.write
    engine.spooled(
        work,
        SpoolOutcome(unwritten=[(job, "cannot write: disk full")], set_aside=[("x.env", "bad")]),
        T0,
    )
    snapshot = engine.snapshot(T0)
    assert snapshot["spool"]["set_aside"] == 1 and snapshot["spool"]["write_errors"] == 1
    assert snapshot["spooled"] == 0 and snapshot["lost"] == {}
    action = engine.next_action(T0)
    assert isinstance(action, Send) and action.attempts[0].job is job


def test_a_requeued_attempt_keeps_its_file() -> None:
    engine = spooled()
    engine.submit(event(), T0)
    write_all(engine)
    action = engine.next_action(T0)
    assert isinstance(action, Send)
    engine.on_results([(action.attempts[0], REQUEUE)], T0)
    job: Job = action.attempts[0].job
    assert job.spool is not None and engine.snapshot(T0)["spooled"] == 1
    assert engine.spool is not None and engine.spool.removals == []


def test_close_takes_a_final_round_of_writes_and_removals_only() -> None:
    engine = spooled()
    engine.submit(event(), T0)
    work = engine.spool_work(T0, 100, final=True)
    assert work is not None and len(work.write) == 1
    assert not work.scan and work.reload == [] and work.more == 0


def test_a_round_that_ends_after_close_keeps_the_books_final_and_whole() -> None:
    engine = spooled()
    engine.submit(event("written"), T0)
    engine.submit(event("unwritten"), T0)
    work = round_of(engine)
    assert engine.queued == 2  # being written: still queued
    engine.close()
    engine.abandon()
    written, unwritten = work.write
    engine.spooled(
        work,
        SpoolOutcome(written=[(written, "w.env", 100)], unwritten=[(unwritten, "disk full")]),
        T0,
    )
    snapshot = engine.snapshot(T0)
    assert snapshot["lost"] == {"queue_overflow": {"error": 1}}
    assert snapshot["spooled"] == 1 and engine.ready == 0
    assert engine.done(engine.begin_flush().mark)


def test_a_round_cut_off_is_handed_out_again_without_writing_twice() -> None:
    engine = spooled(retry_attempts=0)
    engine.submit(event("a"), T0)
    engine.submit(event("b"), T0)
    work = round_of(engine)
    first, second = work.write
    first.spool = "a.env"  # the file layer wrote the first before the round was cut off
    engine.spool_returned(work)
    again = round_of(engine)
    assert again.write == [first, second]  # in their order; the file layer skips the first
    engine.spooled(again, SpoolOutcome(written=[(first, "a.env", 90), (second, "b.env", 90)]), T0)
    assert engine.snapshot(T0)["spooled"] == 2 and engine.ready == 2


def test_a_round_cut_off_after_close_leaves_the_books_whole() -> None:
    engine = spooled()
    engine.submit(event("a"), T0)
    engine.submit(event("b"), T0)
    work = round_of(engine)
    work.write[0].spool = "a.env"
    engine.close()
    engine.abandon()
    engine.spool_returned(work)
    snapshot = engine.snapshot(T0)
    assert snapshot["lost"] == {"queue_overflow": {"error": 1}} and snapshot["spooled"] == 1
    assert engine.done(engine.begin_flush().mark)
