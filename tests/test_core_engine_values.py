"""What is new in the value-machine engine: batches, REQUEUE, abandon with attempts in flight,
internal-bug results, ``encode`` never raising, ``Wait.until``, STOP; and two pure helpers of
the core (``rfc3339``, ``normalize_event_id``) checked against the standard library."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sentry_transport import Envelope, Item
from sentry_transport.core import limits as limits
from sentry_transport.core import request as request_module
from sentry_transport.core.engine import (
    IDLE,
    REQUEUE,
    STOP,
    Attempt,
    Engine,
    Send,
    Wait,
)
from sentry_transport.core.envelope import normalize_event_id
from sentry_transport.core.errors import HttpProtocolError
from sentry_transport.core.request import rfc3339
from test_core_engine import T0, event, ledger, lost, make, response, transaction

Counts = dict[tuple[str, str], int]
GOLDEN = 0.6180339887  # the engine spreads one rand over a batch: (rand + seq * GOLDEN) % 1


def batch(engine: Engine, now: float, limit: int) -> list[Attempt]:
    """``next_action`` must send; the attempts, encoded."""
    action = engine.next_action(now, limit)
    assert isinstance(action, Send), f"expected a Send at {now}, got {action!r}"
    for attempt in action.attempts:
        engine.encode(attempt, now)
    return action.attempts


def send_one(engine: Engine, now: float) -> Attempt:
    (attempt,) = batch(engine, now, 1)
    assert attempt.request is not None, attempt.dropped
    return attempt


def messages(attempts: list[Attempt]) -> list[str]:
    return [a.job.envelope.items[0].json["message"] for a in attempts]


def events_balance(engine: Engine) -> None:
    events = engine.snapshot(T0)["events"]
    assert events["accepted"] == events["delivered"] + events["lost"], events


def retry_delay(rand: float, seq: int, backoff: float = 0.5, jitter: float = 0.25) -> float:
    """The first retry's delay the engine should pick for job ``seq`` from one ``rand``."""
    spread = (rand + seq * GOLDEN) % 1.0
    return backoff * (1.0 + jitter * (2.0 * spread - 1.0))


# -- batches -----------------------------------------------------------------------------------


def test_a_batch_takes_up_to_the_limit_and_one_on_results_accounts_all() -> None:
    engine = make()
    for i in range(7):
        engine.submit(event(str(i)), T0)
    attempts = batch(engine, T0, 5)
    assert messages(attempts) == ["0", "1", "2", "3", "4"]  # FIFO
    assert engine.queued == 2 and engine.pending == 7
    assert engine.snapshot(T0)["in_flight"] == 5
    engine.on_results([(a, response(200)) for a in attempts], T0)
    snap = engine.snapshot(T0)
    assert snap["delivered"] == 5 and snap["requests"] == 5
    assert snap["events"] == {"accepted": 7, "delivered": 5, "lost": 0}
    assert snap["queued"] == 2 and snap["in_flight"] == 0
    rest = batch(engine, T0, 5)  # what is left, fewer than the limit
    assert messages(rest) == ["5", "6"]
    engine.on_results([(a, response(200)) for a in rest], T0)
    assert engine.pending == 0
    assert engine.next_action(T0, 5) is IDLE
    events_balance(engine)


def test_only_the_first_attempt_of_a_batch_carries_the_report() -> None:
    engine = make(queue_size=3)
    for i in range(4):
        engine.submit(event(str(i)), T0)  # the fourth overflows: one error in the ledger
    attempts = batch(engine, T0, 5)
    assert [a.report for a in attempts] == [{("queue_overflow", "error"): 1}, {}, {}]
    assert ledger(engine) == {}
    engine.on_results([(a, response(200)) for a in attempts], T0)
    assert ledger(engine) == {}
    assert lost(engine) == {"queue_overflow": {"error": 1}}


def test_one_batch_can_mix_every_kind_of_result() -> None:
    engine = make(retry_attempts=0)
    for i in range(4):
        engine.submit(event(str(i)), T0)
    a, b, c, d = batch(engine, T0, 4)
    engine.on_results(
        [(a, response(200)), (b, response(500)), (c, OSError("down")), (d, REQUEUE)], T0
    )
    snap = engine.snapshot(T0)
    assert snap["delivered"] == 1
    assert snap["lost"] == {"send_error": {"error": 1}, "network_error": {"error": 1}}
    assert snap["requests"] == 3  # d was given back unsent
    assert snap["queued"] == 1 and snap["in_flight"] == 0
    assert messages([send_one(engine, T0)]) == ["3"]


def test_a_429_in_a_batch_sends_the_rest_through_the_rate_limit_afresh() -> None:
    engine = make()
    for i in range(4):
        engine.submit(event(str(i)), T0)
    a, b, c, d = batch(engine, T0, 5)
    # a driver sends one after another and stops at the first failure: the rest go back
    engine.on_results(
        [
            (a, response(200)),
            (b, response(429, {"X-Sentry-Rate-Limits": "60:error"})),
            (c, REQUEUE),
            (d, REQUEUE),
        ],
        T0,
    )
    assert lost(engine) == {"ratelimit_backoff": {"error": 1}}  # b: the server counted it
    assert ledger(engine) == {}
    assert engine.queued == 2
    action = engine.next_action(T0, 5)
    assert not isinstance(action, Send)  # c and d are rate-limited now: finished, not sent
    assert engine.pending == 0
    snap = engine.snapshot(T0)
    assert snap["lost"] == {"ratelimit_backoff": {"error": 3}}  # b, c and d, once each
    assert snap["delivered"] == 1 and snap["requests"] == 2
    assert ledger(engine) == {("ratelimit_backoff", "error"): 2}  # c and d are ours to report
    assert not isinstance(engine.next_action(T0 + 1, 5), Send)
    assert lost(engine) == {"ratelimit_backoff": {"error": 3}}  # not counted again
    events_balance(engine)


def test_requeued_attempts_go_back_in_their_order() -> None:
    engine = make()
    for i in range(4):
        engine.submit(event(str(i)), T0)
    a, b, c = batch(engine, T0, 3)
    # a fails on the network; b and c were never sent
    engine.on_results([(a, OSError("reset")), (b, REQUEUE), (c, REQUEUE)], T0)
    assert messages(batch(engine, T0, 5)) == ["1", "2", "3"]  # a waits for its retry


# -- REQUEUE -----------------------------------------------------------------------------------


def test_requeue_restores_the_report_and_leaves_stats_unchanged() -> None:
    engine = make(queue_size=1)
    engine.submit(event("kept"), T0)
    engine.submit(event("dropped"), T0)  # overflow: one error in the ledger
    before = engine.snapshot(T0)
    counts = ledger(engine)
    queued_bytes = engine.queued_bytes
    assert counts == {("queue_overflow", "error"): 1}
    attempt = send_one(engine, T0)
    assert attempt.report == counts and ledger(engine) == {}
    assert attempt.job.attempts == 1
    engine.on_results([(attempt, REQUEUE)], T0)
    assert ledger(engine) == counts  # the counts wait for the next request
    assert engine.snapshot(T0) == before  # no request, no loss, nothing in flight
    assert engine.queued_bytes == queued_bytes
    assert attempt.job.attempts == 0  # not an attempt after all
    assert engine.queued == 1 and engine.pending == 1
    again = send_one(engine, T0)
    assert again.job is attempt.job and again.report == counts
    engine.on_results([(again, response(200))], T0)
    assert ledger(engine) == {}
    snap = engine.snapshot(T0)
    assert snap["delivered"] == 1 and snap["requests"] == 1


def test_requeue_gives_the_attempt_back_so_a_retry_is_still_due() -> None:
    engine = make(retry_attempts=1)
    engine.submit(event(), T0)
    engine.on_results([(send_one(engine, T0), REQUEUE)], T0)
    engine.on_results([(send_one(engine, T0), OSError("reset"))], T0)
    snap = engine.snapshot(T0)
    assert snap["retries"] == 1 and snap["lost"] == {}  # the one retry is left
    assert engine.queued == 1


def test_requeue_after_encode_dropped_an_item_counts_the_drop_once() -> None:
    engine = make()
    envelope = Envelope.for_event({"message": "x" * (limits.MAX_EVENT + 1)})
    envelope.add_item(Item.attachment(b"abc", "a"))
    engine.submit(envelope, T0)
    attempt = send_one(engine, T0)
    assert [reason for reason, _ in attempt.dropped] == ["send_error"]
    engine.on_results([(attempt, REQUEUE)], T0)
    assert lost(engine) == {} and ledger(engine) == {}  # noted only: nothing was reported
    engine.on_results([(send_one(engine, T0), response(200))], T0)
    assert lost(engine) == {"send_error": {"error": 1}}
    assert ledger(engine) == {("send_error", "error"): 1}
    events_balance(engine)


def test_a_request_encode_left_empty_is_not_counted_as_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_BODY", 50)
    engine = make()
    engine.submit(event(), T0)
    (attempt,) = batch(engine, T0, 1)
    assert attempt.request is None  # the body is too large: nothing goes out
    engine.on_results([(attempt, None)], T0)
    snap = engine.snapshot(T0)
    assert snap["lost"] == {"send_error": {"error": 1}}
    assert snap["requests"] == 0  # no request was made


# -- results that are bugs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bug", [RuntimeError("boom"), ValueError("boom"), TypeError("boom"), KeyError("boom")]
)
def test_an_internal_bug_result_counts_internal_sdk_error_and_restores_the_report(
    bug: Exception,
) -> None:
    engine = make()
    engine.submit(event(), T0)
    mark = engine.begin_flush().mark  # nothing lost yet: no report job
    engine.record_lost("sample_rate", "error")
    attempt = send_one(engine, T0)
    assert attempt.report == {("sample_rate", "error"): 1}
    engine.on_results([(attempt, bug)], T0)
    snap = engine.snapshot(T0)
    assert snap["lost"] == {"internal_sdk_error": {"error": 1}, "sample_rate": {"error": 1}}
    assert snap["last_error"] == f"internal error: {type(bug).__name__}: {bug}"
    assert snap["network_errors"] == 0 and snap["retries"] == 0  # not a network error
    assert ledger(engine) == {("sample_rate", "error"): 1, ("internal_sdk_error", "error"): 1}
    assert engine.done(mark) and engine.pending == 0
    events_balance(engine)


@pytest.mark.parametrize(
    "error", [HttpProtocolError("bad status line"), ConnectionResetError("reset"), OSError()]
)
def test_oserror_and_protocol_error_are_network_errors(error: Exception) -> None:
    engine = make()
    engine.submit(event(), T0)
    engine.on_results([(send_one(engine, T0), error)], T0)
    snap = engine.snapshot(T0)
    assert snap["network_errors"] == 1 and snap["retries"] == 1 and snap["lost"] == {}
    assert snap["last_error"] == f"{type(error).__name__}: {error}"
    assert engine.queued == 1


def test_encode_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make()
    engine.record_lost("sample_rate", "error")
    engine.submit(event(), T0)
    action = engine.next_action(T0)
    assert isinstance(action, Send)
    (attempt,) = action.attempts
    assert attempt.report == {("sample_rate", "error"): 1}

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no bytes today")

    monkeypatch.setattr(request_module, "build", broken)
    engine.encode(attempt, T0)  # a bug costs the job, not the worker
    assert attempt.request is None
    assert attempt.error == "internal error: RuntimeError: no bytes today"
    assert lost(engine) == {"sample_rate": {"error": 1}}  # noted, not counted yet
    engine.on_results([(attempt, None)], T0)  # the driver: nothing to send
    snap = engine.snapshot(T0)
    assert snap["lost"] == {"internal_sdk_error": {"error": 1}, "sample_rate": {"error": 1}}
    assert snap["last_error"] is not None and snap["last_error"].startswith("internal error")
    assert ledger(engine) == {("sample_rate", "error"): 1, ("internal_sdk_error", "error"): 1}
    assert engine.pending == 0
    events_balance(engine)


# -- Wait, IDLE and STOP -----------------------------------------------------------------------


def test_wait_until_a_delayed_retry() -> None:
    engine = make(retry_backoff=0.5)
    engine.submit(event(), T0)
    attempt = send_one(engine, T0)
    engine.on_results([(attempt, OSError("reset"))], T0, rand=0.3)
    wait = engine.next_action(T0)
    assert isinstance(wait, Wait)
    assert wait.until == pytest.approx(T0 + retry_delay(0.3, attempt.job.seq))
    assert engine.next_action(wait.until - 0.001) == wait
    again = send_one(engine, wait.until)
    assert again.job is attempt.job


def test_one_rand_is_spread_over_the_jobs_of_a_batch() -> None:
    engine = make(retry_backoff=0.5)
    engine.submit(event("a"), T0)
    engine.submit(event("b"), T0)
    a, b = batch(engine, T0, 2)
    engine.on_results([(a, OSError("x")), (b, OSError("x"))], T0, rand=0.5)
    first = engine.next_action(T0)
    assert isinstance(first, Wait)
    due = sorted(T0 + retry_delay(0.5, attempt.job.seq) for attempt in (a, b))
    assert due[0] != pytest.approx(due[1])  # not one delay for all
    assert first.until == pytest.approx(due[0])
    assert all(T0 + 0.375 <= t <= T0 + 0.625 for t in due)  # +/- 25% jitter
    assert len(batch(engine, due[0], 5)) == 1
    second = engine.next_action(due[0])
    assert isinstance(second, Wait) and second.until == pytest.approx(due[1])


def test_wait_until_the_client_report_is_due() -> None:
    engine = make(client_report_interval=30)
    engine.record_lost("sample_rate", "error")
    assert engine.next_action(T0) == Wait(T0 + 30)  # the timer starts at the first look
    assert engine.next_action(T0 + 29.9) == Wait(T0 + 30)
    attempt = send_one(engine, T0 + 30)
    assert attempt.job.internal and attempt.items == []
    assert attempt.report == {("sample_rate", "error"): 1}
    engine.on_results([(attempt, response(200))], T0 + 30)
    assert engine.next_action(T0 + 31) is IDLE  # nothing left to report


def test_wait_is_the_earlier_of_a_retry_and_the_report() -> None:
    engine = make(client_report_interval=1, retry_backoff=10)
    engine.record_lost("sample_rate", "error")
    engine.submit(event(), T0)
    attempt = send_one(engine, T0)  # takes the report along: the timer restarts
    engine.on_results([(attempt, OSError("x"))], T0)  # the report comes back
    retry_at = T0 + retry_delay(0.5, attempt.job.seq, backoff=10)
    assert engine.next_action(T0) == Wait(T0 + 1)
    report = send_one(engine, T0 + 1)
    assert report.job.internal
    engine.on_results([(report, response(200))], T0 + 1)
    wait = engine.next_action(T0 + 1)
    assert isinstance(wait, Wait) and wait.until == pytest.approx(retry_at)


def test_stop_after_abandon() -> None:
    engine = make()
    engine.submit(event(), T0)
    assert engine.abandon() == []
    assert engine.stopped and engine.closed
    assert engine.next_action(T0) is STOP
    assert engine.next_action(T0 + 1000, 5) is STOP
    assert engine.submit(event(), T0) is None  # counted lost instead
    assert lost(engine) == {"queue_overflow": {"error": 2}}
    assert not engine.healthy(T0)
    events_balance(engine)


# -- abandon -----------------------------------------------------------------------------------


def test_abandon_counts_in_flight_attempts_and_ignores_their_results() -> None:
    engine = make()
    engine.submit(event("a"), T0)
    engine.submit(event("b"), T0)
    engine.submit(transaction(2), T0)
    engine.submit(event("never tried"), T0)
    first = send_one(engine, T0)
    engine.on_results([(first, OSError("reset"))], T0)  # a, retried later
    in_flight = batch(engine, T0, 2)
    assert [a.job.envelope.items[0].type for a in in_flight] == ["event", "transaction"]
    assert messages(in_flight[:1]) == ["b"]
    mark = engine.begin_flush().mark
    gone = engine.abandon()
    assert {id(a) for a in gone} == {id(a) for a in in_flight}
    assert all(a.over for a in gone)
    assert engine.stopped
    assert engine.pending == 0 and engine.queued == 0
    assert engine.done(mark)
    snap = engine.snapshot(T0)
    assert snap["in_flight"] == 0
    # in flight: network_error; queued after a try: network_error; never tried: queue_overflow
    assert snap["lost"] == {
        "network_error": {"error": 2, "transaction": 1, "span": 3},
        "queue_overflow": {"error": 1},
    }
    counts = ledger(engine)
    engine.on_results([(a, response(200)) for a in gone], T0)  # too late: ignored
    engine.on_results([(gone[0], OSError("x")), (gone[1], REQUEUE)], T0)
    assert engine.snapshot(T0) == snap
    assert ledger(engine) == counts
    assert engine.queued == 0
    assert engine.next_action(T0) is STOP
    events_balance(engine)


def test_the_books_are_final_after_abandon() -> None:
    engine = make()
    engine.submit(event(), T0)
    engine.close()  # nothing lost yet: no report queued
    engine.abandon()  # the event is counted lost: the ledger has something to report
    before = engine.snapshot(T0)
    flush = engine.begin_flush()  # a flush after close: nothing can be sent any more
    assert engine.queued == 0 and engine.pending == 0
    assert engine.flushed(flush)
    engine.close()
    assert engine.queued == 0 and engine.pending == 0
    assert engine.snapshot(T0) == before


def test_submit_counts_the_size_the_driver_measured() -> None:
    engine = make(queue_bytes=100)
    assert engine.submit(Envelope({}, [Item.attachment(b"x" * 10, "a")]), T0, size=90)
    assert engine.queued_bytes == 90
    assert not engine.submit(Envelope({}, [Item.attachment(b"x" * 10, "b")]), T0, size=11)
    assert engine.submit(Envelope({}, [Item.attachment(b"x" * 10, "c")]), T0, size=10)
    assert engine.queued_bytes == 100
    send_one(engine, T0)
    assert engine.queued_bytes == 10


def test_close_queues_the_client_report_on_its_own() -> None:
    engine = make()
    engine.record_lost("sample_rate", "error")
    engine.close()
    attempt = send_one(engine, T0)
    assert attempt.job.internal and attempt.items == []
    assert attempt.report == {("sample_rate", "error"): 1}


def test_start_sends_the_given_job_or_finishes_it_when_fully_rate_limited() -> None:
    engine = make()
    engine.submit(Envelope({}, [Item.session({"sid": "s"})]), T0)
    engine.on_results(
        [(send_one(engine, T0), response(200, {"X-Sentry-Rate-Limits": "60:error"}))], T0
    )
    session = engine.submit(Envelope({}, [Item.session({"sid": "s"})]), T0)
    error = engine.submit(event(), T0)
    assert session is not None and error is not None
    assert engine.start(error, T0) is None  # nothing of it may go: counted and finished
    assert lost(engine) == {"ratelimit_backoff": {"error": 1}}
    assert engine.queued == 1 and engine.pending == 1
    action = engine.start(session, T0)
    assert isinstance(action, Send) and [a.job for a in action.attempts] == [session]
    assert engine.start(session, T0) is None  # no longer queued


# -- rfc3339 -----------------------------------------------------------------------------------


def by_gmtime(t: float) -> str:
    seconds = math.floor(t)
    micros = round((t - seconds) * 1_000_000)
    if micros == 1_000_000:
        seconds, micros = seconds + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


@settings(max_examples=2000, deadline=None)
@given(st.floats(min_value=-2e9, max_value=4e10, allow_nan=False, allow_infinity=False))
@example(-2e9)
@example(4e10)
@example(0.0)
@example(-1e-7)
@example(-0.5)
@example(0.9999996)  # rounds up into the next second
@example(951_782_400.0)  # 2000-02-29
@example(4_107_542_400.0)  # 2100-03-01: 2100 is no leap year
@example(-2_203_891_200.0)  # 1900-03-01
@example(1_709_164_799.999_999)  # the last microsecond of 2024-02-28
def test_rfc3339_matches_gmtime(t: float) -> None:
    assert rfc3339(t) == by_gmtime(t)


# -- normalize_event_id ------------------------------------------------------------------------


@st.composite
def uuid_forms(draw: st.DrawFn) -> str:
    """A UUID written the ways uuid.UUID reads it."""
    value = draw(st.uuids())
    text = str(value) if draw(st.booleans()) else value.hex
    if draw(st.booleans()):
        text = text.upper()
    if draw(st.booleans()):
        text = "{" + text + "}"
    if draw(st.booleans()):
        text = "urn:uuid:" + text
    return text


@st.composite
def near_uuids(draw: st.DrawFn) -> str:
    """A UUID form, then changed a little: most of these are no UUID."""
    text = draw(uuid_forms())
    where = draw(st.integers(0, len(text)))
    change = draw(st.sampled_from(["drop", "insert", "replace", "pad", "prefix"]))
    if change == "drop":
        return text[:where] + text[where + 1 :]
    if change == "insert":
        return text[:where] + draw(st.sampled_from("0aF-{}g")) + text[where:]
    if change == "replace":
        return text[:where] + draw(st.sampled_from("gGxz!.:")) + text[where + 1 :]
    if change == "pad":
        pad = draw(st.sampled_from([" ", "\t", "\n", "\r\n"]))
        return draw(st.sampled_from([pad + text, text + pad, pad + text + pad]))
    return draw(st.sampled_from(["URN:UUID:", "Urn:Uuid:", "urn:", "uuid:", "urn:uid:"])) + text


@settings(max_examples=500, deadline=None)
@given(uuid_forms())
@example("12345678-1234-5678-1234-567812345678")
@example("{12345678-1234-5678-1234-567812345678}")
@example("urn:uuid:12345678-1234-5678-1234-567812345678")
@example("12345678123456781234567812345678".upper())
def test_normalize_event_id_reads_what_uuid_reads(text: str) -> None:
    assert normalize_event_id(text) == uuid.UUID(text).hex


@settings(max_examples=100, deadline=None)
@given(st.uuids())
def test_normalize_event_id_of_a_uuid_object(value: uuid.UUID) -> None:
    assert normalize_event_id(value) == uuid.UUID(str(value)).hex == value.hex


@settings(max_examples=1000, deadline=None)
@given(st.one_of(near_uuids(), st.text(max_size=45)))
@example("")
@example("0" * 31)
@example("0" * 33)
@example(" " + "0" * 32)
@example("0" * 32 + "\n")
@example("URN:UUID:" + "0" * 32)
def test_normalize_event_id_raises_where_uuid_does(text: str) -> None:
    try:
        expected = uuid.UUID(text).hex
    except ValueError:
        with pytest.raises(ValueError):
            normalize_event_id(text)
        return
    # uuid.UUID takes a few odd spellings through int() ("+..." or "0_..."): where it reads
    # a string that normalize_event_id reads too, both must agree
    try:
        got = normalize_event_id(text)
    except ValueError:
        return
    assert got == expected


def test_a_batch_goes_on_only_after_a_2xx() -> None:
    from sentry_transport.core.engine import goes_on

    assert goes_on(response(200)) and goes_on(response(204))
    for result in [response(429), response(413), response(500), OSError("reset"), None, REQUEUE]:
        assert not goes_on(result), result
