"""The delivery engine, pumped by hand with a fake clock (``now`` is a float) and rand=0.5."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry_transport import Dsn, Envelope, Item
from sentry_transport.core import compress as compress
from sentry_transport.core import limits as limits
from sentry_transport.core.engine import Attempt, Engine, Job
from sentry_transport.core.request import Outcome

DSN = "https://public@ingest.example/42"
T0 = 1_000.0
Counts = dict[tuple[str, str], int]


def make(**options: Any) -> Engine:
    options.setdefault("compression", "none")
    return Engine(Dsn.parse(DSN, **options), rand=lambda: 0.5)


def ledger(engine: Engine) -> Counts:
    """The client-report ledger's counts, left in place."""
    counts = engine.reports.take()
    engine.reports.restore(counts)
    return counts


def lost(engine: Engine, now: float = T0) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = engine.snapshot(now)["lost"]
    return result


def sent(attempt: Attempt) -> Envelope:
    """The envelope in an attempt's request body."""
    body = attempt.request.body
    if attempt.request.encoding:
        body = compress.decompress(body, attempt.request.encoding)
    return Envelope.deserialize(body)


def report_in(envelope: Envelope) -> list[dict[str, Any]] | None:
    reports = [i for i in envelope.items if i.type == "client_report"]
    assert len(reports) <= 1
    return reports[0].json["discarded_events"] if reports else None


def take_job(engine: Engine, now: float) -> Job:
    job = engine.next(now)
    assert isinstance(job, Job), f"expected a job at {now}, got {job!r}"
    return job


def attempt_at(engine: Engine, now: float) -> Attempt:
    attempt = engine.prepare(take_job(engine, now), now)
    assert attempt is not None
    return attempt


def event(message: str = "boom") -> Envelope:
    return Envelope.for_event({"message": message, "level": "error"})


def transaction(spans: int = 2) -> Envelope:
    return Envelope.for_event({"type": "transaction", "spans": [{"op": "x"}] * spans})


def nothing_to_resend(engine: Engine, now: float) -> None:
    """``next`` has no job carrying items (a pending client report may be due)."""
    step = engine.next(now)
    assert not isinstance(step, Job) or step.internal, step


def events_balance(engine: Engine) -> None:
    events = engine.snapshot(T0)["events"]
    assert events["accepted"] == events["delivered"] + events["lost"], events


# -- the happy path ----------------------------------------------------------------------------


def test_submit_next_prepare_deliver() -> None:
    engine = make()
    envelope = event()
    assert engine.submit(envelope, T0)
    assert engine.queued == 1 and engine.pending == 1
    mark = engine.mark()
    assert not engine.done(mark)
    job = take_job(engine, T0)
    assert job.envelope is envelope
    assert engine.queued == 0 and engine.pending == 1
    attempt = engine.prepare(job, T0 + 1)
    assert attempt is not None
    body = sent(attempt)
    assert body.headers["event_id"] == envelope.event_id
    assert body.headers["sent_at"] == "1970-01-01T00:16:41.000000Z"
    assert "sent_at" not in envelope.headers
    assert [i.type for i in body.items] == ["event"]
    assert body.items[0].json["message"] == "boom"
    headers = dict(attempt.request.headers)
    assert "sentry_key=public" in headers["X-Sentry-Auth"]
    assert attempt.request.url == "https://ingest.example/api/42/envelope/"
    assert engine.on_response(attempt, 200, {}, T0 + 2) is Outcome.DELIVERED
    assert engine.done(mark)
    assert engine.pending == 0
    snap = engine.snapshot(T0 + 2)
    assert snap["accepted"] == 1 and snap["delivered"] == 1
    assert snap["events"] == {"accepted": 1, "delivered": 1, "lost": 0}
    assert snap["lost"] == {}
    assert snap["requests"] == 1
    assert snap["queued"] == 0 and snap["in_flight"] == 0
    assert ledger(engine) == {}
    assert engine.next(T0 + 3) is None  # idle


def test_fifo_order() -> None:
    engine = make()
    envelopes = [event(str(i)) for i in range(3)]
    for envelope in envelopes:
        engine.submit(envelope, T0)
    assert [take_job(engine, T0).envelope for _ in range(3)] == envelopes


def test_body_is_compressed_above_threshold() -> None:
    engine = make(compression="gzip", compression_threshold=0)
    engine.submit(event(), T0)
    attempt = attempt_at(engine, T0)
    assert attempt.request.encoding == "gzip"
    assert dict(attempt.request.headers)["Content-Encoding"] == "gzip"
    assert sent(attempt).items[0].type == "event"


# -- queue bounds ------------------------------------------------------------------------------


def test_queue_bound_in_envelopes() -> None:
    engine = make(queue_size=2)
    assert engine.submit(event(), T0)
    assert engine.submit(transaction(3), T0)
    assert not engine.submit(event(), T0)
    assert not engine.submit(transaction(3), T0)
    assert engine.queued == 2
    assert lost(engine) == {"queue_overflow": {"error": 1, "transaction": 1, "span": 4}}
    assert ledger(engine) == {
        ("queue_overflow", "error"): 1,
        ("queue_overflow", "transaction"): 1,
        ("queue_overflow", "span"): 4,
    }
    snap = engine.snapshot(T0)
    assert snap["accepted"] == 4
    assert snap["events"]["lost"] == 2
    events_balance_after_drain(engine)


def events_balance_after_drain(engine: Engine, now: float = T0) -> None:
    while True:
        job = engine.next(now)
        if not isinstance(job, Job):
            break
        attempt = engine.prepare(job, now)
        if attempt is None:
            engine.finish(job)
        else:
            engine.on_response(attempt, 200, {}, now)
    events_balance(engine)


def test_a_taken_job_frees_its_queue_slot() -> None:
    engine = make(queue_size=1)
    assert engine.submit(event(), T0)
    take_job(engine, T0)
    assert engine.submit(event(), T0)


def test_queue_bound_in_bytes() -> None:
    engine = make(queue_bytes=100)
    assert engine.submit(Envelope({}, [Item.attachment(b"x" * 60, "a")]), T0)
    assert engine.submit(Envelope({}, [Item.attachment(b"x" * 40, "b")]), T0)  # exactly 100
    assert not engine.submit(Envelope({}, [Item.attachment(b"x" * 1, "c")]), T0)
    assert lost(engine) == {"queue_overflow": {"attachment": 1, "attachment_item": 1}}
    take_job(engine, T0)  # 60 bytes leave the queue
    assert engine.submit(Envelope({}, [Item.attachment(b"x" * 60, "d")]), T0)
    assert not engine.submit(Envelope({}, [Item.attachment(b"x" * 61, "e")]), T0)


def test_unencoded_json_counts_an_estimate_against_queue_bytes() -> None:
    big = Envelope.for_event({"message": {"formatted": "big"}, "extra": {"blob": "x" * 300_000}})
    engine = make(queue_bytes=500_000)
    assert engine.submit(big, T0)  # not encoded yet: counted by its estimated size
    assert not engine.submit(big, T0)
    assert lost(engine) == {"queue_overflow": {"error": 1}}
    assert not big.items[0].payload_is_encoded  # the estimate did not encode it


def test_submit_after_close_is_lost() -> None:
    engine = make()
    engine.close()
    assert not engine.submit(event(), T0)
    assert lost(engine) == {"queue_overflow": {"error": 1}}
    events_balance(engine)


# -- rate limits -------------------------------------------------------------------------------


def limit(engine: Engine, header: str, now: float = T0) -> None:
    """Deliver a session and answer with an X-Sentry-Rate-Limits header."""
    engine.submit(Envelope({}, [Item.session({"sid": "s"})]), now)
    attempt = attempt_at(engine, now)
    assert engine.on_response(attempt, 200, {"X-Sentry-Rate-Limits": header}, now) is (
        Outcome.DELIVERED
    )


def test_rate_limited_items_are_dropped_at_prepare() -> None:
    engine = make()
    limit(engine, "60:error;attachment:org")
    envelope = event()
    envelope.add_item(Item.attachment(b"x" * 10, "a.txt"))
    envelope.add_item(Item.check_in({"status": "ok"}))
    engine.submit(envelope, T0 + 1)
    attempt = attempt_at(engine, T0 + 1)
    body = sent(attempt)
    assert [i.type for i in body.items] == ["check_in", "client_report"]
    assert body.headers["event_id"] == envelope.event_id
    expected = {
        "ratelimit_backoff": {"error": 1, "attachment": 10, "attachment_item": 1},
    }
    assert lost(engine) == expected
    # the ledger's counts went out with this very request
    assert sorted(report_in(body) or [], key=lambda d: d["category"]) == [
        {"reason": "ratelimit_backoff", "category": "attachment", "quantity": 10},
        {"reason": "ratelimit_backoff", "category": "attachment_item", "quantity": 1},
        {"reason": "ratelimit_backoff", "category": "error", "quantity": 1},
    ]
    assert ledger(engine) == {}
    engine.on_response(attempt, 200, {}, T0 + 1)
    assert engine.snapshot(T0 + 1)["events"] == {"accepted": 1, "delivered": 0, "lost": 1}


def test_fully_rate_limited_envelope_sends_nothing_and_counts_in_ledger() -> None:
    engine = make()
    limit(engine, "60:error")
    engine.submit(event(), T0 + 1)
    mark = engine.mark()
    job = take_job(engine, T0 + 1)
    assert engine.prepare(job, T0 + 1) is None
    engine.finish(job)
    assert engine.done(mark)
    assert lost(engine) == {"ratelimit_backoff": {"error": 1}}
    assert ledger(engine) == {("ratelimit_backoff", "error"): 1}
    assert engine.snapshot(T0 + 1)["requests"] == 1  # only the first one
    events_balance(engine)


def test_rate_limit_lifts_at_the_deadline() -> None:
    engine = make()
    limit(engine, "10:error")
    assert engine.snapshot(T0 + 1)["rate_limits"] == {"error": 9.0}
    engine.submit(event(), T0)
    engine.submit(event(), T0)
    job = take_job(engine, T0 + 10 - 0.001)
    assert engine.prepare(job, T0 + 10 - 0.001) is None
    engine.finish(job)
    attempt = attempt_at(engine, T0 + 10)
    assert sent(attempt).items[0].type == "event"


def test_429_counts_in_stats_but_not_in_ledger() -> None:
    engine = make()
    engine.submit(transaction(2), T0)
    attempt = attempt_at(engine, T0)
    assert engine.on_response(attempt, 429, {"Retry-After": "30"}, T0) is Outcome.RATE_LIMITED
    assert lost(engine) == {"ratelimit_backoff": {"transaction": 1, "span": 3}}
    assert ledger(engine) == {}
    assert engine.snapshot(T0)["events"] == {"accepted": 1, "delivered": 0, "lost": 1}
    assert engine.snapshot(T0)["rate_limits"] == {"*": 30.0}
    assert engine.next(T0) is None  # nothing retried
    # the limit applies to what comes next, and that loss is ours to report
    engine.submit(event(), T0 + 1)
    job = take_job(engine, T0 + 1)
    assert engine.prepare(job, T0 + 1) is None
    engine.finish(job)
    assert ledger(engine) == {("ratelimit_backoff", "error"): 1}
    assert not engine.healthy(T0 + 1)
    assert engine.healthy(T0 + 30)


def test_429_drops_a_piggybacked_report_without_recording_it() -> None:
    engine = make(queue_size=1)
    engine.submit(event(), T0)
    engine.submit(event(), T0)  # overflow: one error in the ledger
    attempt = attempt_at(engine, T0)
    assert report_in(sent(attempt)) is not None
    engine.on_response(attempt, 429, {}, T0)
    assert ledger(engine) == {}  # neither restored nor counted again
    assert lost(engine) == {"queue_overflow": {"error": 1}, "ratelimit_backoff": {"error": 1}}


# -- HTTP errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [413, 500, 400, 403, 503])
def test_http_errors_are_send_errors_and_not_retried(status: int) -> None:
    engine = make()
    envelope = event()
    envelope.add_item(Item.attachment(b"abc", "a"))
    engine.submit(envelope, T0)
    mark = engine.mark()
    attempt = attempt_at(engine, T0)
    outcome = engine.on_response(attempt, status, {"Retry-After": "5"}, T0)
    assert outcome is (Outcome.TOO_LARGE if status == 413 else Outcome.SEND_ERROR)
    assert engine.done(mark)
    nothing_to_resend(engine, T0 + 100)
    assert lost(engine) == {"send_error": {"error": 1, "attachment": 3, "attachment_item": 1}}
    assert ledger(engine) == {
        ("send_error", "error"): 1,
        ("send_error", "attachment"): 3,
        ("send_error", "attachment_item"): 1,
    }
    assert engine.snapshot(T0)["last_error"] == f"HTTP {status}"
    assert engine.snapshot(T0)["rate_limits"] == {}  # Retry-After only counts on a 429
    events_balance(engine)


def test_413_still_reads_rate_limits() -> None:
    engine = make()
    engine.submit(event(), T0)
    engine.on_response(attempt_at(engine, T0), 413, {"X-Sentry-Rate-Limits": "60:error"}, T0)
    assert engine.snapshot(T0)["rate_limits"] == {"error": 60.0}


def test_oversized_item_is_dropped_and_the_rest_sent() -> None:
    engine = make()
    envelope = Envelope.for_event({"message": "x" * (limits.MAX_EVENT + 1)})
    envelope.add_item(Item.attachment(b"abc", "a"))
    engine.submit(envelope, T0)
    attempt = attempt_at(engine, T0)
    assert [i.type for i in sent(attempt).items] == ["attachment", "client_report"]
    assert report_in(sent(attempt)) == [
        {"reason": "send_error", "category": "error", "quantity": 1}
    ]
    engine.on_response(attempt, 200, {}, T0)
    assert lost(engine) == {"send_error": {"error": 1}}
    events_balance(engine)


def test_body_too_large_is_a_send_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_BODY", 50)
    engine = make()
    engine.submit(event(), T0)
    job = take_job(engine, T0)
    assert engine.prepare(job, T0) is None
    engine.finish(job)
    assert lost(engine) == {"send_error": {"error": 1}}
    events_balance(engine)


def test_unencodable_json_is_an_internal_sdk_error() -> None:
    engine = make()
    broken: dict[str, Any] = {"message": "loop"}
    broken["self"] = broken
    envelope = Envelope({}, [Item.event(broken), Item.session({"sid": "ok"})])
    engine.submit(envelope, T0)
    attempt = attempt_at(engine, T0)
    assert [i.type for i in sent(attempt).items] == ["session", "client_report"]
    engine.on_response(attempt, 200, {}, T0)
    assert lost(engine) == {"internal_sdk_error": {"error": 1}}
    events_balance(engine)


# -- network errors and retries ----------------------------------------------------------------


def test_network_error_is_retried_with_backoff_then_given_up() -> None:
    engine = make(retry_attempts=3, retry_backoff=0.5, retry_deadline=100)
    engine.submit(event(), T0)
    mark = engine.mark()
    now = T0
    waits = []
    for _ in range(3):
        attempt = attempt_at(engine, now)
        retry_at = engine.on_error(attempt, ConnectionResetError("reset"), now)
        assert retry_at is not None and retry_at > now
        waits.append(retry_at - now)
        assert engine.next(now) == retry_at  # nothing before then
        assert engine.next(retry_at - 0.01) == retry_at
        assert not engine.done(mark)
        assert engine.queued == 1
        now = retry_at
    assert waits == [0.5, 1.0, 2.0]  # rand=0.5: no jitter
    attempt = attempt_at(engine, now)
    assert engine.on_error(attempt, TimeoutError("slow"), now) is None
    assert engine.done(mark)
    nothing_to_resend(engine, now + 100)
    snap = engine.snapshot(now)
    assert snap["lost"] == {"network_error": {"error": 1}}
    assert snap["network_errors"] == 4 and snap["retries"] == 3 and snap["requests"] == 4
    assert snap["last_error"] == "TimeoutError: slow"
    assert ledger(engine) == {("network_error", "error"): 1}
    events_balance(engine)


def test_retry_then_success() -> None:
    engine = make()
    engine.submit(event(), T0)
    retry_at = engine.on_error(attempt_at(engine, T0), OSError("refused"), T0)
    assert retry_at is not None
    attempt = attempt_at(engine, retry_at)
    assert engine.on_response(attempt, 200, {}, retry_at) is Outcome.DELIVERED
    snap = engine.snapshot(retry_at)
    assert snap["lost"] == {} and snap["delivered"] == 1
    assert snap["events"] == {"accepted": 1, "delivered": 1, "lost": 0}


def test_unhealthy_after_consecutive_network_errors() -> None:
    engine = make(retry_attempts=0)
    for _ in range(3):
        assert engine.healthy(T0)
        engine.submit(event(), T0)
        engine.on_error(attempt_at(engine, T0), OSError("down"), T0)
    assert not engine.healthy(T0)
    engine.submit(event(), T0)
    engine.on_response(attempt_at(engine, T0), 200, {}, T0)
    assert engine.healthy(T0)


def test_retry_deadline_gives_up_early() -> None:
    engine = make(retry_attempts=10, retry_backoff=0.5, retry_deadline=1.0)
    engine.submit(event(), T0)
    first = engine.on_error(attempt_at(engine, T0), OSError("x"), T0)
    assert first == T0 + 0.5
    assert engine.on_error(attempt_at(engine, first), OSError("x"), first) is None  # 0.5+1 > 1
    assert lost(engine) == {"network_error": {"error": 1}}


def test_no_retries_when_attempts_is_zero() -> None:
    engine = make(retry_attempts=0)
    engine.submit(event(), T0)
    assert engine.on_error(attempt_at(engine, T0), OSError("x"), T0) is None
    assert lost(engine) == {"network_error": {"error": 1}}


def test_no_retry_after_close() -> None:
    engine = make()
    engine.submit(event(), T0)
    attempt = attempt_at(engine, T0)
    engine.close()
    assert engine.on_error(attempt, OSError("x"), T0) is None
    assert lost(engine) == {"network_error": {"error": 1}}
    events_balance(engine)


def test_retried_job_goes_before_newer_ones() -> None:
    engine = make()
    first = event("first")
    engine.submit(first, T0)
    retry_at = engine.on_error(attempt_at(engine, T0), OSError("x"), T0)
    assert retry_at is not None
    engine.submit(event("second"), T0)
    assert take_job(engine, T0).envelope is not first  # the retry is not due yet
    assert take_job(engine, retry_at).envelope is first


# -- client reports ----------------------------------------------------------------------------


def test_client_report_piggybacks_on_the_next_request() -> None:
    engine = make(queue_size=1)
    engine.submit(event("kept"), T0)
    engine.submit(event("dropped"), T0)
    engine.submit(transaction(1), T0)
    attempt = attempt_at(engine, T0 + 1.23456)
    body = sent(attempt)
    assert [i.type for i in body.items] == ["event", "client_report"]
    report = next(i for i in body.items if i.type == "client_report")
    assert report.json["timestamp"] == round(T0 + 1.23456, 3)
    assert sorted(report.json["discarded_events"], key=lambda d: d["category"]) == [
        {"reason": "queue_overflow", "category": "error", "quantity": 1},
        {"reason": "queue_overflow", "category": "span", "quantity": 2},
        {"reason": "queue_overflow", "category": "transaction", "quantity": 1},
    ]
    assert ledger(engine) == {}
    engine.on_response(attempt, 200, {}, T0 + 2)
    assert ledger(engine) == {}
    # stats keep the losses: the report is not a loss of its own
    assert lost(engine) == {"queue_overflow": {"error": 1, "transaction": 1, "span": 2}}


def test_piggybacked_report_comes_back_after_a_network_error() -> None:
    engine = make(queue_size=1)
    engine.submit(event(), T0)
    engine.submit(event(), T0)
    attempt = attempt_at(engine, T0)
    assert report_in(sent(attempt)) is not None
    retry_at = engine.on_error(attempt, OSError("x"), T0)
    assert ledger(engine) == {("queue_overflow", "error"): 1}
    assert retry_at is not None
    again = attempt_at(engine, retry_at)
    assert report_in(sent(again)) == [
        {"reason": "queue_overflow", "category": "error", "quantity": 1}
    ]


@pytest.mark.parametrize("status", [413, 500])
def test_report_lost_with_a_failed_request_is_not_recorded(status: int) -> None:
    engine = make(queue_size=1)
    engine.submit(Envelope({}, [Item.session({})]), T0)
    engine.submit(event(), T0)
    attempt = attempt_at(engine, T0)
    engine.on_response(attempt, status, {}, T0)
    assert ledger(engine) == {("send_error", "session"): 1}  # no "internal" loss


def test_client_report_is_sent_on_its_own_at_request_report() -> None:
    engine = make()
    engine.record_lost("sample_rate", "transaction", 3)
    engine.record_lost("before_send", "error")
    engine.request_report()
    mark = engine.mark()
    job = take_job(engine, T0)
    assert job.internal
    attempt = engine.prepare(job, T0)
    assert attempt is not None
    body = sent(attempt)
    assert [i.type for i in body.items] == ["client_report"]
    assert set(body.headers) == {"sent_at"}
    assert sorted(report_in(body) or [], key=lambda d: d["reason"]) == [
        {"reason": "before_send", "category": "error", "quantity": 1},
        {"reason": "sample_rate", "category": "transaction", "quantity": 3},
    ]
    engine.on_response(attempt, 200, {}, T0)
    assert engine.done(mark)
    assert ledger(engine) == {}
    snap = engine.snapshot(T0)
    assert snap["accepted"] == 0 and snap["delivered"] == 0
    assert snap["lost"] == {"sample_rate": {"transaction": 3}, "before_send": {"error": 1}}
    assert engine.next(T0 + 1000) is None  # nothing left to report


def test_request_report_without_losses_does_nothing() -> None:
    engine = make()
    engine.request_report()
    assert engine.next(T0) is None
    assert engine.done(engine.mark())


def test_client_reports_go_on_a_timer() -> None:
    engine = make(client_report_interval=30)
    engine.record_lost("sample_rate", "error")
    engine.request_report()
    job = take_job(engine, T0)
    attempt = engine.prepare(job, T0)
    assert attempt is not None
    engine.on_response(attempt, 200, {}, T0)
    engine.record_lost("sample_rate", "error")
    wake = engine.next(T0 + 1)
    assert isinstance(wake, float) and T0 + 1 < wake <= T0 + 30
    job = take_job(engine, T0 + 30)
    assert job.internal
    attempt = engine.prepare(job, T0 + 30)
    assert attempt is not None
    assert report_in(sent(attempt)) == [
        {"reason": "sample_rate", "category": "error", "quantity": 1}
    ]


def test_internal_job_with_nothing_to_report_finishes() -> None:
    engine = make()
    engine.record_lost("sample_rate", "error")
    engine.request_report()
    job = take_job(engine, T0)
    engine.reports.take()  # someone else sent them meanwhile
    assert engine.prepare(job, T0) is None
    engine.finish(job)
    assert engine.pending == 0
    assert engine.done(engine.mark())


def test_network_error_on_a_report_restores_it() -> None:
    engine = make()
    engine.record_lost("sample_rate", "error", 2)
    engine.request_report()
    attempt = attempt_at(engine, T0)
    assert engine.on_error(attempt, OSError("x"), T0) is None  # a report is not retried itself
    assert ledger(engine) == {("sample_rate", "error"): 2}
    assert lost(engine) == {"sample_rate": {"error": 2}}  # the report's loss is not counted


def test_no_client_reports_when_disabled() -> None:
    engine = make(send_client_reports=False, queue_size=1)
    engine.submit(event(), T0)
    engine.submit(event(), T0)
    engine.record_lost("sample_rate", "error")
    assert ledger(engine) == {}
    attempt = attempt_at(engine, T0)
    assert report_in(sent(attempt)) is None
    engine.on_response(attempt, 200, {}, T0)
    engine.request_report()
    assert engine.next(T0 + 10_000) is None
    assert lost(engine) == {"queue_overflow": {"error": 1}, "sample_rate": {"error": 1}}


def test_reports_wait_while_internal_is_rate_limited() -> None:
    engine = make()
    limit(engine, "60:internal")
    engine.record_lost("sample_rate", "error")
    engine.submit(event(), T0)
    attempt = attempt_at(engine, T0)
    assert report_in(sent(attempt)) is None
    assert ledger(engine) == {("sample_rate", "error"): 1}
    engine.on_response(attempt, 200, {}, T0)
    engine.submit(event(), T0 + 60)
    assert report_in(sent(attempt_at(engine, T0 + 60))) == [
        {"reason": "sample_rate", "category": "error", "quantity": 1}
    ]


def test_record_lost() -> None:
    engine = make()
    engine.record_lost("sample_rate", "transaction", 2)
    engine.record_lost("sample_rate", "transaction")
    engine.record_lost("event_processor", "error", 0)  # nothing
    engine.record_lost("before_send", "internal", 5)  # client reports are never counted
    assert lost(engine) == {"sample_rate": {"transaction": 3}}
    assert ledger(engine) == {("sample_rate", "transaction"): 3}
    with pytest.raises(ValueError):
        engine.record_lost("because", "error")
    # losses before the transport are not events handed in
    assert engine.snapshot(T0)["events"] == {"accepted": 0, "delivered": 0, "lost": 0}


# -- flush marks and abandon -------------------------------------------------------------------


def test_flush_marks() -> None:
    engine = make()
    assert engine.done(engine.mark())  # nothing submitted
    engine.submit(event("a"), T0)
    engine.submit(event("b"), T0)
    mark = engine.mark()
    engine.submit(event("c"), T0)  # after the mark
    a = attempt_at(engine, T0)
    b = attempt_at(engine, T0)
    engine.on_response(b, 200, {}, T0)
    assert not engine.done(mark)  # a is still in flight
    retry_at = engine.on_error(a, OSError("x"), T0)
    assert retry_at is not None
    assert not engine.done(mark)  # a waits for its retry
    c = attempt_at(engine, T0)
    engine.on_response(c, 200, {}, T0)
    assert not engine.done(mark)
    engine.on_response(attempt_at(engine, retry_at), 200, {}, retry_at)
    assert engine.done(mark)
    assert engine.done(engine.mark())


def test_abandon_counts_what_is_queued() -> None:
    engine = make()
    engine.submit(event("retried"), T0)
    engine.submit(transaction(1), T0)
    engine.submit(Envelope({}, [Item.attachment(b"abcd", "a")]), T0)
    mark = engine.mark()
    retry_at = engine.on_error(attempt_at(engine, T0), OSError("x"), T0)
    assert retry_at is not None
    engine.close()
    engine.abandon()
    assert engine.queued == 0 and engine.pending == 0
    assert engine.done(mark)
    nothing_to_resend(engine, T0 + 100)
    assert lost(engine) == {
        "network_error": {"error": 1},
        "queue_overflow": {"transaction": 1, "span": 2, "attachment": 4, "attachment_item": 1},
    }
    assert ledger(engine) == {
        ("network_error", "error"): 1,
        ("queue_overflow", "transaction"): 1,
        ("queue_overflow", "span"): 2,
        ("queue_overflow", "attachment"): 4,
        ("queue_overflow", "attachment_item"): 1,
    }
    events_balance(engine)


def test_abandon_leaves_in_flight_jobs_to_the_driver() -> None:
    engine = make()
    engine.submit(event(), T0)
    attempt = attempt_at(engine, T0)
    mark = engine.mark()
    engine.close()
    engine.abandon()
    assert not engine.done(mark)
    assert engine.on_error(attempt, OSError("x"), T0) is None
    assert engine.done(mark)
    assert lost(engine) == {"network_error": {"error": 1}}


def test_reset_forgets_everything() -> None:
    engine = make()
    engine.submit(event(), T0)
    engine.record_lost("sample_rate", "error")
    engine.reset()
    assert engine.queued == 0 and ledger(engine) == {}
    assert engine.snapshot(T0)["accepted"] == 0
    assert engine.next(T0) is None


# -- the accounting invariant ------------------------------------------------------------------

Scenario = Callable[[Engine], None]


def scenario_overflow(engine: Engine) -> None:
    for _ in range(5):
        engine.submit(event(), T0)


def scenario_rate_limits(engine: Engine) -> None:
    limit(engine, "60:transaction")
    engine.submit(transaction(), T0)
    engine.submit(event(), T0)
    pump(engine, T0, lambda a: 200)


def scenario_mixed_statuses(engine: Engine) -> None:
    statuses = iter([200, 429, 413, 500, 200, 200])
    for i in range(6):
        engine.submit(event() if i % 2 else transaction(), T0)
    pump(engine, T0, lambda a: next(statuses, 200))


def scenario_network_errors(engine: Engine) -> None:
    for _ in range(3):
        engine.submit(event(), T0)
    pump(engine, T0, lambda a: None)


def scenario_abandon(engine: Engine) -> None:
    for _ in range(3):
        engine.submit(transaction(), T0)
    engine.on_error(attempt_at(engine, T0), OSError("x"), T0)
    engine.close()
    engine.abandon()


def pump(
    engine: Engine, now: float, respond: Callable[[Attempt], int | None], rounds: int = 200
) -> float:
    """Drive the engine like a driver would; ``respond`` gives a status or None (network)."""
    for _ in range(rounds):
        step = engine.next(now)
        if step is None:
            return now
        if isinstance(step, float):
            now = step
            continue
        attempt = engine.prepare(step, now)
        if attempt is None:
            engine.finish(step)
            continue
        status = respond(attempt)
        if status is None:
            engine.on_error(attempt, OSError("network"), now)
        else:
            engine.on_response(attempt, status, {}, now)
    return now


@pytest.mark.parametrize(
    "scenario",
    [
        scenario_overflow,
        scenario_rate_limits,
        scenario_mixed_statuses,
        scenario_network_errors,
        scenario_abandon,
    ],
)
def test_events_accepted_equal_delivered_plus_lost(scenario: Scenario) -> None:
    engine = make(queue_size=3)
    scenario(engine)
    engine.close()
    pump(engine, T0 + 1000, lambda a: 200)
    engine.abandon()
    assert engine.pending == 0
    events_balance(engine)


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"),
            st.sampled_from(["event", "transaction", "session", "mixed", "oversized"]),
        ),
        st.tuples(
            st.just("send"),
            st.tuples(
                st.sampled_from([200, 202, 413, 429, 500, None]),
                st.sampled_from(["", "3:error", "2:attachment", "4:transaction;span", "1::org"]),
            ),
        ),
        st.tuples(st.just("wait"), st.floats(0, 5)),
        st.tuples(st.just("lose"), st.sampled_from(["error", "transaction", "span"])),
    ),
    max_size=40,
)


def build(kind: str) -> Envelope:
    if kind == "event":
        return event()
    if kind == "transaction":
        return transaction(2)
    if kind == "session":
        return Envelope({}, [Item.session({})])
    if kind == "oversized":
        envelope = Envelope.for_event({"message": "x" * (limits.MAX_EVENT + 1)})
        envelope.add_item(Item.session({}))
        return envelope
    envelope = event()
    envelope.add_item(Item.attachment(b"data", "a"))
    return envelope


@settings(max_examples=200, deadline=None)
@given(ops=OPS, queue_size=st.integers(1, 4))
def test_property_every_event_is_delivered_or_lost_once(
    ops: list[tuple[str, Any]], queue_size: int
) -> None:
    """Random traffic: HTTP errors, 429s, network errors and retries, rate limits on some
    categories (so envelopes are split between attempts), oversized events, client reports."""
    engine = make(queue_size=queue_size, retry_attempts=2)
    now = T0
    for op, arg in ops:
        if op == "submit":
            engine.submit(build(arg), now)
        elif op == "wait":
            now += arg
        elif op == "lose":
            engine.record_lost("sample_rate", arg)
        else:
            step = engine.next(now)
            if not isinstance(step, Job):
                continue
            attempt = engine.prepare(step, now)
            if attempt is None:
                engine.finish(step)
            elif arg[0] is None:
                engine.on_error(attempt, OSError("x"), now)
            else:
                engine.on_response(attempt, arg[0], {"X-Sentry-Rate-Limits": arg[1]}, now)
        events = engine.snapshot(now)["events"]
        assert events["delivered"] + events["lost"] <= events["accepted"]
    engine.close()
    pump(engine, now, lambda a: 200)
    engine.abandon()
    assert engine.pending == 0
    assert engine.done(engine.mark())
    events_balance(engine)
    snap = engine.snapshot(now)
    assert snap["queued"] == 0 and snap["in_flight"] == 0


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(
        st.sampled_from(["", "30:error", "30:attachment", "5:transaction;span", "10::org"]),
        max_size=6,
    ),
    kinds=st.lists(st.sampled_from(["event", "transaction", "mixed", "session"]), max_size=8),
)
def test_property_rate_limits_without_retries_keep_the_balance(
    headers: list[str], kinds: list[str]
) -> None:
    engine = make(queue_size=100)
    answers = iter(headers)
    now = T0
    for kind in kinds:
        engine.submit(build(kind), now)
        step = engine.next(now)
        assert isinstance(step, Job)
        attempt = engine.prepare(step, now)
        if attempt is None:
            engine.finish(step)
        else:
            engine.on_response(attempt, 200, {"X-Sentry-Rate-Limits": next(answers, "")}, now)
        now += 1
    events_balance(engine)


# -- an item dropped at one attempt is counted once -------------------------------------------


def test_item_dropped_at_first_attempt_is_not_counted_again_on_retry() -> None:
    engine = make()
    limit(engine, "100:error")
    envelope = event()
    envelope.add_item(Item.session({"sid": "s"}))
    engine.submit(envelope, T0 + 1)
    first = attempt_at(engine, T0 + 1)
    assert [i.type for i in first.items] == ["session"]
    retry_at = engine.on_error(first, OSError("reset"), T0 + 1)
    assert retry_at is not None
    second = attempt_at(engine, retry_at)
    engine.on_response(second, 200, {}, retry_at)
    assert lost(engine) == {"ratelimit_backoff": {"error": 1}}
    events_balance(engine)


def test_oversized_item_is_not_counted_again_on_retry() -> None:
    engine = make()
    envelope = Envelope.for_event({"message": "x" * (limits.MAX_EVENT + 1)})
    envelope.add_item(Item.attachment(b"abc", "a"))
    engine.submit(envelope, T0)
    first = attempt_at(engine, T0)
    retry_at = engine.on_error(first, OSError("reset"), T0)
    assert retry_at is not None
    engine.on_response(attempt_at(engine, retry_at), 200, {}, retry_at)
    assert lost(engine) == {"send_error": {"error": 1}}
    events_balance(engine)


def test_abandon_does_not_count_an_already_dropped_item_again() -> None:
    engine = make()
    limit(engine, "100:error")
    envelope = event()
    envelope.add_item(Item.session({"sid": "s"}))
    engine.submit(envelope, T0 + 1)
    retry_at = engine.on_error(attempt_at(engine, T0 + 1), OSError("reset"), T0 + 1)
    assert retry_at is not None
    engine.close()
    engine.abandon()
    assert lost(engine) == {"ratelimit_backoff": {"error": 1}, "network_error": {"session": 1}}
    events_balance(engine)


def test_should_add_connection() -> None:
    from sentry_transport.core.engine import should_add_connection

    # no backlog, an idle worker, or the limit reached: never
    assert not should_add_connection(1, 0, 0, 1.0, 16)
    assert not should_add_connection(1, 1, 5, 1.0, 16)
    assert not should_add_connection(16, 0, 5, 1.0, 16)
    # up to two connections on any backlog
    assert should_add_connection(1, 0, 1, 0.0001, 16)
    assert not should_add_connection(2, 0, 1, 0.0001, 16)  # fast server: CPU-bound, stay
    assert should_add_connection(2, 0, 1, 0.020, 16)  # slow server: latency-bound, grow
    assert should_add_connection(15, 0, 1, 0.020, 16)


def test_flush_waits_one_more_round_for_the_report_of_its_losses() -> None:
    engine = make()
    engine.submit(event(), T0)
    flush = engine.begin_flush()  # nothing lost yet: no report queued
    assert not engine.flushed(flush)
    engine.on_response(attempt_at(engine, T0), 500, {}, T0)  # the flush's job is lost
    assert not engine.flushed(flush)  # its mark is done, but now there is a loss to report
    report = attempt_at(engine, T0)
    assert report.job.internal
    assert report_in(sent(report)) == [{"reason": "send_error", "category": "error", "quantity": 1}]
    assert not engine.flushed(flush)
    engine.on_response(report, 200, {}, T0)
    assert engine.flushed(flush)


def test_flush_takes_one_report_round_only() -> None:
    engine = make()
    engine.record_lost("sample_rate", "error")
    flush = engine.begin_flush()  # queues the report
    report = attempt_at(engine, T0)
    assert engine.on_error(report, ConnectionRefusedError(), T0) is None  # counts go back
    assert ledger(engine) == {("sample_rate", "error"): 1}
    assert not engine.flushed(flush)  # the one extra round: the report is queued again
    again = attempt_at(engine, T0)
    assert again.job.internal
    assert engine.on_error(again, ConnectionRefusedError(), T0) is None
    assert ledger(engine) == {("sample_rate", "error"): 1}
    assert engine.flushed(flush)  # a failing server does not keep the flush busy
    assert engine.flushed(flush)


def test_limits_are_pruned_once_they_lift() -> None:
    engine = make()
    engine.submit(event(), T0)
    engine.on_response(attempt_at(engine, T0), 200, {"X-Sentry-Rate-Limits": "10:error:org"}, T0)
    assert dict(engine.limits.deadlines) == {"error": T0 + 10}
    engine.submit(event(), T0 + 20)
    engine.on_response(attempt_at(engine, T0 + 20), 200, {}, T0 + 20)
    assert dict(engine.limits.deadlines) == {}


def test_take_starts_a_given_job_ahead_of_the_queue() -> None:
    engine = make()
    first = engine.submit(event("first"), T0)
    second = engine.submit(event("second"), T0)
    assert first is not None and second is not None
    assert engine.take(second)
    assert not engine.take(second)  # no longer queued
    snap = engine.snapshot(T0)
    assert snap["queued"] == 1 and snap["in_flight"] == 1
    assert take_job(engine, T0) is first
