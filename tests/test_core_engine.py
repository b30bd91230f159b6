"""The delivery engine, pumped by hand with a fake clock (``now`` is a float).

The engine is a value machine: ``next_action`` says what to send, ``encode`` fills in the
request, ``on_results`` takes back what happened. The helpers below drive one attempt at a
time, like a driver with one worker. Retry jitter: ``fail`` passes the ``rand`` that makes the
job's spread 0.5 (no jitter), as the old tests did with ``rand=lambda: 0.5``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry_transport import Dsn, Envelope, Item
from sentry_transport.core import compress as compress
from sentry_transport.core import limits as limits
from sentry_transport.core.actions import BASE_CONNECTIONS, CPU_BOUND, SLOW_ROUND_TRIP
from sentry_transport.core.engine import (
    IDLE,
    REQUEUE,
    STOP,
    Attempt,
    Engine,
    Result,
    Send,
    Wait,
    should_grow,
)
from sentry_transport.core.http11 import Response
from sentry_transport.core.request import Outcome, classify

DSN = "https://public@ingest.example/42"
T0 = 1_000.0
GOLDEN = 0.6180339887  # the engine spreads one rand over a batch: (rand + seq * GOLDEN) % 1
Counts = dict[tuple[str, str], int]


def make(**options: Any) -> Engine:
    options.setdefault("compression", "none")
    return Engine(Dsn.parse(DSN, **options))


def response(status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, "", tuple((headers or {}).items()), b"", True)


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
    assert attempt.request is not None
    body = attempt.request.body
    if attempt.request.encoding:
        body = compress.decompress(body, attempt.request.encoding)
    return Envelope.deserialize(body)


def report_in(envelope: Envelope) -> list[dict[str, Any]] | None:
    reports = [i for i in envelope.items if i.type == "client_report"]
    assert len(reports) <= 1
    return reports[0].json["discarded_events"] if reports else None


def take(engine: Engine, now: float) -> Attempt:
    """``next_action`` must send exactly one attempt now (not encoded yet)."""
    action = engine.next_action(now)
    assert isinstance(action, Send), f"expected a Send at {now}, got {action!r}"
    assert len(action.attempts) == 1
    return action.attempts[0]


def send_one(engine: Engine, now: float) -> Attempt:
    """The next attempt, encoded: it has a request to send."""
    attempt = take(engine, now)
    engine.encode(attempt, now)
    assert attempt.request is not None, attempt.dropped
    return attempt


def report(engine: Engine, attempt: Attempt, result: Result, now: float = T0) -> None:
    engine.on_results([(attempt, result)], now)


def respond(
    engine: Engine,
    attempt: Attempt,
    status: int,
    headers: Mapping[str, str] | None = None,
    now: float = T0,
) -> None:
    """The server answered ``status`` with ``headers``."""
    engine.on_results([(attempt, response(status, headers))], now)


def no_jitter(attempt: Attempt) -> float:
    """The ``rand`` that makes this job's retry delay the plain backoff."""
    return (0.5 - attempt.job.seq * GOLDEN) % 1.0


def fail(
    engine: Engine, attempt: Attempt, exc: BaseException, now: float, rand: float | None = None
) -> float | None:
    """A network error: the time of the retry the engine scheduled, or None (counted lost)."""
    job = attempt.job
    rand = no_jitter(attempt) if rand is None else rand
    retries = engine.stats.retries
    engine.on_results([(attempt, exc)], now, rand)
    if engine.stats.retries == retries:
        return None
    assert engine.stats.retries == retries + 1
    assert job.first_try is not None
    delay = engine.retry.delay(job.attempts, job.first_try, now, (rand + job.seq * GOLDEN) % 1.0)
    assert delay is not None
    return now + delay


def event(message: str = "boom") -> Envelope:
    return Envelope.for_event({"message": message, "level": "error"})


def transaction(spans: int = 2) -> Envelope:
    return Envelope.for_event({"type": "transaction", "spans": [{"op": "x"}] * spans})


def nothing_to_resend(engine: Engine, now: float) -> None:
    """``next_action`` sends no attempt carrying items (a pending client report may be due)."""
    action = engine.next_action(now)
    if isinstance(action, Send):
        assert all(a.job.internal and not a.items for a in action.attempts), action
        engine.on_results([(a, REQUEUE) for a in action.attempts], now)  # given back unsent


def events_balance(engine: Engine) -> None:
    events = engine.snapshot(T0)["events"]
    assert events["accepted"] == events["delivered"] + events["lost"], events


def drain(engine: Engine, now: float = T0) -> None:
    """Send what is ready now, every answer a 200."""
    while True:
        action = engine.next_action(now)
        if not isinstance(action, Send):
            return
        results: list[tuple[Attempt, Result]] = []
        for attempt in action.attempts:
            engine.encode(attempt, now)
            results.append((attempt, None if attempt.request is None else response(200)))
        engine.on_results(results, now)


# -- the happy path ----------------------------------------------------------------------------


def test_submit_next_prepare_deliver() -> None:
    engine = make()
    envelope = event()
    assert engine.submit(envelope, T0)
    assert engine.queued == 1 and engine.pending == 1
    mark = engine.begin_flush().mark
    assert not engine.done(mark)
    attempt = take(engine, T0)
    assert attempt.job.envelope is envelope
    assert engine.queued == 0 and engine.pending == 1
    engine.encode(attempt, T0 + 1)
    assert attempt.request is not None
    body = sent(attempt)
    assert body.headers["event_id"] == envelope.event_id
    assert body.headers["sent_at"] == "1970-01-01T00:16:41.000000Z"
    assert "sent_at" not in envelope.headers
    assert [i.type for i in body.items] == ["event"]
    assert body.items[0].json["message"] == "boom"
    headers = dict(attempt.request.headers)
    assert "sentry_key=public" in headers["X-Sentry-Auth"]
    assert attempt.request.url == "https://ingest.example/api/42/envelope/"
    respond(engine, attempt, 200, now=T0 + 2)
    assert engine.done(mark)
    assert engine.pending == 0
    snap = engine.snapshot(T0 + 2)
    assert snap["accepted"] == 1 and snap["delivered"] == 1
    assert snap["events"] == {"accepted": 1, "delivered": 1, "lost": 0}
    assert snap["lost"] == {}
    assert snap["requests"] == 1
    assert snap["queued"] == 0 and snap["in_flight"] == 0
    assert ledger(engine) == {}
    assert engine.next_action(T0 + 3) is IDLE


def test_fifo_order() -> None:
    engine = make()
    envelopes = [event(str(i)) for i in range(3)]
    for envelope in envelopes:
        engine.submit(envelope, T0)
    assert [take(engine, T0).job.envelope for _ in range(3)] == envelopes


def test_body_is_compressed_above_threshold() -> None:
    engine = make(compression="gzip", compression_threshold=0)
    engine.submit(event(), T0)
    attempt = send_one(engine, T0)
    assert attempt.request is not None
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
    drain(engine)
    assert engine.pending == 0
    events_balance(engine)


def test_a_taken_job_frees_its_queue_slot() -> None:
    engine = make(queue_size=1)
    assert engine.submit(event(), T0)
    take(engine, T0)
    assert engine.submit(event(), T0)


def test_queue_bound_in_bytes() -> None:
    engine = make(queue_bytes=100)
    assert engine.submit(Envelope({}, [Item.attachment(b"x" * 60, "a")]), T0)
    assert engine.submit(Envelope({}, [Item.attachment(b"x" * 40, "b")]), T0)  # exactly 100
    assert not engine.submit(Envelope({}, [Item.attachment(b"x" * 1, "c")]), T0)
    assert lost(engine) == {"queue_overflow": {"attachment": 1, "attachment_item": 1}}
    take(engine, T0)  # 60 bytes leave the queue
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
    delivered = engine.stats.delivered
    engine.submit(Envelope({}, [Item.session({"sid": "s"})]), now)
    attempt = send_one(engine, now)
    respond(engine, attempt, 200, {"X-Sentry-Rate-Limits": header}, now)
    assert engine.stats.delivered == delivered + 1


def test_rate_limited_items_are_dropped_before_sending() -> None:
    engine = make()
    limit(engine, "60:error;attachment:org")
    envelope = event()
    envelope.add_item(Item.attachment(b"x" * 10, "a.txt"))
    envelope.add_item(Item.check_in({"status": "ok"}))
    engine.submit(envelope, T0 + 1)
    attempt = send_one(engine, T0 + 1)
    assert [i.type for i in attempt.items] == ["check_in"]
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
    respond(engine, attempt, 200, now=T0 + 1)
    assert engine.snapshot(T0 + 1)["events"] == {"accepted": 1, "delivered": 0, "lost": 1}


def test_fully_rate_limited_envelope_sends_nothing_and_counts_in_ledger() -> None:
    engine = make()
    limit(engine, "60:error")
    engine.submit(event(), T0 + 1)
    mark = engine.begin_flush().mark
    action = engine.next_action(T0 + 1)
    assert not isinstance(action, Send)  # finished inside next_action
    assert engine.done(mark)
    assert engine.pending == 0
    assert lost(engine) == {"ratelimit_backoff": {"error": 1}}
    assert ledger(engine) == {("ratelimit_backoff", "error"): 1}
    assert engine.snapshot(T0 + 1)["requests"] == 1  # only the first one
    events_balance(engine)


def test_rate_limit_lifts_at_the_deadline() -> None:
    engine = make()
    limit(engine, "10:error")
    assert engine.snapshot(T0 + 1)["rate_limits"] == {"error": 9.0}
    engine.submit(event(), T0)
    assert not isinstance(engine.next_action(T0 + 10 - 0.001), Send)
    assert lost(engine) == {"ratelimit_backoff": {"error": 1}}
    engine.submit(event(), T0)
    attempt = send_one(engine, T0 + 10)
    assert sent(attempt).items[0].type == "event"


def test_429_counts_in_stats_but_not_in_ledger() -> None:
    engine = make()
    engine.submit(transaction(2), T0)
    attempt = send_one(engine, T0)
    assert classify(429) is Outcome.RATE_LIMITED
    respond(engine, attempt, 429, {"Retry-After": "30"}, T0)
    assert lost(engine) == {"ratelimit_backoff": {"transaction": 1, "span": 3}}
    assert ledger(engine) == {}
    assert engine.snapshot(T0)["events"] == {"accepted": 1, "delivered": 0, "lost": 1}
    assert engine.snapshot(T0)["rate_limits"] == {"*": 30.0}
    assert engine.next_action(T0) is IDLE  # nothing retried
    # the limit applies to what comes next, and that loss is ours to report
    engine.submit(event(), T0 + 1)
    assert not isinstance(engine.next_action(T0 + 1), Send)
    assert engine.pending == 0
    assert ledger(engine) == {("ratelimit_backoff", "error"): 1}
    assert not engine.healthy(T0 + 1)
    assert engine.healthy(T0 + 30)


def test_429_drops_a_piggybacked_report_without_recording_it() -> None:
    engine = make(queue_size=1)
    engine.submit(event(), T0)
    engine.submit(event(), T0)  # overflow: one error in the ledger
    attempt = send_one(engine, T0)
    assert report_in(sent(attempt)) is not None
    respond(engine, attempt, 429, now=T0)
    assert ledger(engine) == {}  # neither restored nor counted again
    assert lost(engine) == {"queue_overflow": {"error": 1}, "ratelimit_backoff": {"error": 1}}


# -- HTTP errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [413, 500, 400, 403, 503])
def test_http_errors_are_send_errors_and_not_retried(status: int) -> None:
    engine = make()
    envelope = event()
    envelope.add_item(Item.attachment(b"abc", "a"))
    engine.submit(envelope, T0)
    mark = engine.begin_flush().mark
    attempt = send_one(engine, T0)
    assert classify(status) is (Outcome.TOO_LARGE if status == 413 else Outcome.SEND_ERROR)
    respond(engine, attempt, status, {"Retry-After": "5"}, T0)
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
    respond(engine, send_one(engine, T0), 413, {"X-Sentry-Rate-Limits": "60:error"}, T0)
    assert engine.snapshot(T0)["rate_limits"] == {"error": 60.0}


def test_oversized_item_is_dropped_and_the_rest_sent() -> None:
    engine = make()
    envelope = Envelope.for_event({"message": "x" * (limits.MAX_EVENT + 1)})
    envelope.add_item(Item.attachment(b"abc", "a"))
    engine.submit(envelope, T0)
    attempt = send_one(engine, T0)
    # encode notes the drop; it is counted with the result, so the report of it goes later
    assert [i.type for i in sent(attempt).items] == ["attachment"]
    assert [(reason, [i.type for i in items]) for reason, items in attempt.dropped] == [
        ("send_error", ["event"])
    ]
    assert lost(engine) == {}
    respond(engine, attempt, 200, now=T0)
    assert lost(engine) == {"send_error": {"error": 1}}
    assert ledger(engine) == {("send_error", "error"): 1}
    events_balance(engine)


def test_body_too_large_is_a_send_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_BODY", 50)
    engine = make()
    engine.submit(event(), T0)
    attempt = take(engine, T0)
    engine.encode(attempt, T0)
    assert attempt.request is None
    report(engine, attempt, None)
    assert engine.pending == 0
    assert lost(engine) == {"send_error": {"error": 1}}
    events_balance(engine)


def test_unencodable_json_is_an_internal_sdk_error() -> None:
    engine = make()
    broken: dict[str, Any] = {"message": "loop"}
    broken["self"] = broken
    envelope = Envelope({}, [Item.event(broken), Item.session({"sid": "ok"})])
    engine.submit(envelope, T0)
    attempt = send_one(engine, T0)
    assert [i.type for i in sent(attempt).items] == ["session"]
    respond(engine, attempt, 200, now=T0)
    assert lost(engine) == {"internal_sdk_error": {"error": 1}}
    assert ledger(engine) == {("internal_sdk_error", "error"): 1}
    events_balance(engine)


# -- network errors and retries ----------------------------------------------------------------


def test_network_error_is_retried_with_backoff_then_given_up() -> None:
    engine = make(retry_attempts=3, retry_backoff=0.5, retry_deadline=100)
    engine.submit(event(), T0)
    mark = engine.begin_flush().mark
    now = T0
    waits = []
    for _ in range(3):
        attempt = send_one(engine, now)
        retry_at = fail(engine, attempt, ConnectionResetError("reset"), now)
        assert retry_at is not None and retry_at > now
        waits.append(retry_at - now)
        assert engine.next_action(now) == Wait(retry_at)  # nothing before then
        assert engine.next_action(retry_at - 0.01) == Wait(retry_at)
        assert not engine.done(mark)
        assert engine.queued == 1
        now = retry_at
    assert waits == pytest.approx([0.5, 1.0, 2.0])  # no jitter
    attempt = send_one(engine, now)
    assert fail(engine, attempt, TimeoutError("slow"), now) is None
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
    retry_at = fail(engine, send_one(engine, T0), OSError("refused"), T0)
    assert retry_at is not None
    attempt = send_one(engine, retry_at)
    respond(engine, attempt, 200, now=retry_at)
    snap = engine.snapshot(retry_at)
    assert snap["lost"] == {} and snap["delivered"] == 1
    assert snap["events"] == {"accepted": 1, "delivered": 1, "lost": 0}


def test_unhealthy_after_consecutive_network_errors() -> None:
    engine = make(retry_attempts=0)
    for _ in range(3):
        assert engine.healthy(T0)
        engine.submit(event(), T0)
        fail(engine, send_one(engine, T0), OSError("down"), T0)
    assert not engine.healthy(T0)
    engine.submit(event(), T0)
    respond(engine, send_one(engine, T0), 200, now=T0)
    assert engine.healthy(T0)


def test_retry_deadline_gives_up_early() -> None:
    engine = make(retry_attempts=10, retry_backoff=0.5, retry_deadline=1.0)
    engine.submit(event(), T0)
    first = fail(engine, send_one(engine, T0), OSError("x"), T0)
    assert first == pytest.approx(T0 + 0.5)
    assert first is not None
    assert fail(engine, send_one(engine, first), OSError("x"), first) is None  # 0.5+1 > 1
    assert lost(engine) == {"network_error": {"error": 1}}


def test_no_retries_when_attempts_is_zero() -> None:
    engine = make(retry_attempts=0)
    engine.submit(event(), T0)
    assert fail(engine, send_one(engine, T0), OSError("x"), T0) is None
    assert lost(engine) == {"network_error": {"error": 1}}


def test_no_retry_after_close() -> None:
    engine = make()
    engine.submit(event(), T0)
    attempt = send_one(engine, T0)
    engine.close()
    assert fail(engine, attempt, OSError("x"), T0) is None
    assert lost(engine) == {"network_error": {"error": 1}}
    events_balance(engine)


def test_retried_job_goes_before_newer_ones() -> None:
    engine = make()
    first = event("first")
    engine.submit(first, T0)
    retry_at = fail(engine, send_one(engine, T0), OSError("x"), T0)
    assert retry_at is not None
    engine.submit(event("second"), T0)
    assert take(engine, T0).job.envelope is not first  # the retry is not due yet
    assert take(engine, retry_at).job.envelope is first


# -- client reports ----------------------------------------------------------------------------


def test_client_report_piggybacks_on_the_next_request() -> None:
    engine = make(queue_size=1)
    engine.submit(event("kept"), T0)
    engine.submit(event("dropped"), T0)
    engine.submit(transaction(1), T0)
    attempt = send_one(engine, T0 + 1.23456)
    body = sent(attempt)
    assert [i.type for i in body.items] == ["event", "client_report"]
    item = next(i for i in body.items if i.type == "client_report")
    assert item.json["timestamp"] == round(T0 + 1.23456, 3)
    assert sorted(item.json["discarded_events"], key=lambda d: d["category"]) == [
        {"reason": "queue_overflow", "category": "error", "quantity": 1},
        {"reason": "queue_overflow", "category": "span", "quantity": 2},
        {"reason": "queue_overflow", "category": "transaction", "quantity": 1},
    ]
    assert ledger(engine) == {}
    respond(engine, attempt, 200, now=T0 + 2)
    assert ledger(engine) == {}
    # stats keep the losses: the report is not a loss of its own
    assert lost(engine) == {"queue_overflow": {"error": 1, "transaction": 1, "span": 2}}


def test_piggybacked_report_comes_back_after_a_network_error() -> None:
    engine = make(queue_size=1)
    engine.submit(event(), T0)
    engine.submit(event(), T0)
    attempt = send_one(engine, T0)
    assert report_in(sent(attempt)) is not None
    retry_at = fail(engine, attempt, OSError("x"), T0)
    assert ledger(engine) == {("queue_overflow", "error"): 1}
    assert retry_at is not None
    again = send_one(engine, retry_at)
    assert report_in(sent(again)) == [
        {"reason": "queue_overflow", "category": "error", "quantity": 1}
    ]


@pytest.mark.parametrize("status", [413, 500])
def test_report_lost_with_a_failed_request_is_not_recorded(status: int) -> None:
    engine = make(queue_size=1)
    engine.submit(Envelope({}, [Item.session({})]), T0)
    engine.submit(event(), T0)
    attempt = send_one(engine, T0)
    respond(engine, attempt, status, now=T0)
    assert ledger(engine) == {("send_error", "session"): 1}  # no "internal" loss


def test_client_report_is_sent_on_its_own_at_begin_flush() -> None:
    engine = make()
    engine.record_lost("sample_rate", "transaction", 3)
    engine.record_lost("before_send", "error")
    mark = engine.begin_flush().mark  # queues the report, then marks
    attempt = send_one(engine, T0)
    assert attempt.job.internal
    body = sent(attempt)
    assert [i.type for i in body.items] == ["client_report"]
    assert set(body.headers) == {"sent_at"}
    assert sorted(report_in(body) or [], key=lambda d: d["reason"]) == [
        {"reason": "before_send", "category": "error", "quantity": 1},
        {"reason": "sample_rate", "category": "transaction", "quantity": 3},
    ]
    respond(engine, attempt, 200, now=T0)
    assert engine.done(mark)
    assert ledger(engine) == {}
    snap = engine.snapshot(T0)
    assert snap["accepted"] == 0 and snap["delivered"] == 0
    assert snap["lost"] == {"sample_rate": {"transaction": 3}, "before_send": {"error": 1}}
    assert engine.next_action(T0 + 1000) is IDLE  # nothing left to report


def test_begin_flush_without_losses_does_nothing() -> None:
    engine = make()
    mark = engine.begin_flush().mark
    assert engine.next_action(T0) is IDLE
    assert engine.done(mark)


def test_client_reports_go_on_a_timer() -> None:
    engine = make(client_report_interval=30)
    engine.record_lost("sample_rate", "error")
    engine.begin_flush()
    attempt = send_one(engine, T0)
    assert attempt.job.internal
    respond(engine, attempt, 200, now=T0)
    engine.record_lost("sample_rate", "error")
    wake = engine.next_action(T0 + 1)
    assert isinstance(wake, Wait) and T0 + 1 < wake.until <= T0 + 30
    attempt = send_one(engine, T0 + 30)
    assert attempt.job.internal
    assert report_in(sent(attempt)) == [
        {"reason": "sample_rate", "category": "error", "quantity": 1}
    ]


def test_internal_job_with_nothing_to_report_finishes() -> None:
    engine = make()
    engine.record_lost("sample_rate", "error")
    flush = engine.begin_flush()  # queues a report job
    engine.reports.take()  # someone else sent them meanwhile
    assert engine.next_action(T0) is IDLE  # the report job ended: nothing to send
    assert engine.pending == 0
    assert engine.done(flush.mark)
    assert engine.done(engine.begin_flush().mark)


def test_network_error_on_a_report_restores_it() -> None:
    engine = make()
    engine.record_lost("sample_rate", "error", 2)
    engine.begin_flush()
    attempt = send_one(engine, T0)
    assert fail(engine, attempt, OSError("x"), T0) is None  # a report is not retried itself
    assert ledger(engine) == {("sample_rate", "error"): 2}
    assert lost(engine) == {"sample_rate": {"error": 2}}  # the report's loss is not counted


def test_no_client_reports_when_disabled() -> None:
    engine = make(send_client_reports=False, queue_size=1)
    engine.submit(event(), T0)
    engine.submit(event(), T0)
    engine.record_lost("sample_rate", "error")
    assert ledger(engine) == {}
    attempt = send_one(engine, T0)
    assert report_in(sent(attempt)) is None
    respond(engine, attempt, 200, now=T0)
    flush = engine.begin_flush()
    assert engine.next_action(T0 + 10_000) is IDLE
    assert engine.flushed(flush)
    assert lost(engine) == {"queue_overflow": {"error": 1}, "sample_rate": {"error": 1}}


def test_reports_wait_while_internal_is_rate_limited() -> None:
    engine = make()
    limit(engine, "60:internal")
    engine.record_lost("sample_rate", "error")
    engine.submit(event(), T0)
    attempt = send_one(engine, T0)
    assert attempt.report == {}
    assert report_in(sent(attempt)) is None
    assert ledger(engine) == {("sample_rate", "error"): 1}
    respond(engine, attempt, 200, now=T0)
    engine.submit(event(), T0 + 60)
    assert report_in(sent(send_one(engine, T0 + 60))) == [
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
    assert engine.done(engine.begin_flush().mark)  # nothing submitted
    engine.submit(event("a"), T0)
    engine.submit(event("b"), T0)
    mark = engine.begin_flush().mark
    engine.submit(event("c"), T0)  # after the mark
    a = send_one(engine, T0)
    b = send_one(engine, T0)
    respond(engine, b, 200, now=T0)
    assert not engine.done(mark)  # a is still in flight
    retry_at = fail(engine, a, OSError("x"), T0)
    assert retry_at is not None
    assert not engine.done(mark)  # a waits for its retry
    c = send_one(engine, T0)
    respond(engine, c, 200, now=T0)
    assert not engine.done(mark)
    respond(engine, send_one(engine, retry_at), 200, now=retry_at)
    assert engine.done(mark)
    assert engine.done(engine.begin_flush().mark)


def test_abandon_counts_what_is_queued() -> None:
    engine = make()
    engine.submit(event("retried"), T0)
    engine.submit(transaction(1), T0)
    engine.submit(Envelope({}, [Item.attachment(b"abcd", "a")]), T0)
    mark = engine.begin_flush().mark
    retry_at = fail(engine, send_one(engine, T0), OSError("x"), T0)
    assert retry_at is not None
    engine.close()
    assert engine.abandon() == []  # nothing was in flight
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


def test_abandon_counts_in_flight_attempts_and_ignores_their_results() -> None:
    engine = make()
    engine.submit(event(), T0)
    attempt = send_one(engine, T0)
    mark = engine.begin_flush().mark
    engine.close()
    assert not engine.done(mark)  # in flight
    assert engine.abandon() == [attempt]  # the driver aborts its connection
    assert attempt.over and engine.stopped
    assert engine.done(mark)  # the books are final now
    assert engine.pending == 0
    assert lost(engine) == {"network_error": {"error": 1}}
    before = engine.snapshot(T0)
    assert fail(engine, attempt, OSError("x"), T0) is None  # reported late: ignored
    respond(engine, attempt, 200, now=T0)
    assert engine.snapshot(T0) == before
    assert engine.next_action(T0) is STOP
    events_balance(engine)


def test_reset_forgets_everything() -> None:
    engine = make()
    engine.submit(event(), T0)
    engine.record_lost("sample_rate", "error")
    engine.reset()
    assert engine.queued == 0 and ledger(engine) == {}
    assert engine.snapshot(T0)["accepted"] == 0
    assert engine.next_action(T0) is IDLE


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
    fail(engine, send_one(engine, T0), OSError("x"), T0)
    engine.close()
    engine.abandon()


def pump(
    engine: Engine, now: float, answer: Callable[[Attempt], int | None], rounds: int = 200
) -> float:
    """Drive the engine like a one-worker driver; ``answer`` gives a status or None (network)."""
    for _ in range(rounds):
        action = engine.next_action(now)
        if action is IDLE or action is STOP:
            return now
        if isinstance(action, Wait):
            now = action.until
            continue
        assert isinstance(action, Send)
        results: list[tuple[Attempt, Result]] = []
        for attempt in action.attempts:
            engine.encode(attempt, now)
            if attempt.request is None:
                results.append((attempt, None))
                continue
            status = answer(attempt)
            results.append((attempt, OSError("network") if status is None else response(status)))
        engine.on_results(results, now)
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
            action = engine.next_action(now)
            if not isinstance(action, Send):
                continue
            (attempt,) = action.attempts
            engine.encode(attempt, now)
            result: Result
            if attempt.request is None:
                result = None
            elif arg[0] is None:
                result = OSError("x")
            else:
                result = response(arg[0], {"X-Sentry-Rate-Limits": arg[1]})
            engine.on_results([(attempt, result)], now)
        events = engine.snapshot(now)["events"]
        assert events["delivered"] + events["lost"] <= events["accepted"]
    engine.close()
    now = pump(engine, now, lambda a: 200)
    mark = engine.begin_flush().mark  # everything so far
    engine.abandon()
    assert engine.pending == 0
    assert engine.done(mark)
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
        action = engine.next_action(now)
        if isinstance(action, Send):
            (attempt,) = action.attempts
            engine.encode(attempt, now)
            if attempt.request is None:
                report(engine, attempt, None, now)
            else:
                answer = {"X-Sentry-Rate-Limits": next(answers, "")}
                respond(engine, attempt, 200, answer, now)
        assert engine.pending == 0  # sent, or fully rate-limited and finished
        now += 1
    events_balance(engine)


# -- an item dropped at one attempt is counted once -------------------------------------------


def test_item_dropped_at_first_attempt_is_not_counted_again_on_retry() -> None:
    engine = make()
    limit(engine, "100:error")
    envelope = event()
    envelope.add_item(Item.session({"sid": "s"}))
    engine.submit(envelope, T0 + 1)
    first = send_one(engine, T0 + 1)
    assert [i.type for i in first.items] == ["session"]
    retry_at = fail(engine, first, OSError("reset"), T0 + 1)
    assert retry_at is not None
    second = send_one(engine, retry_at)
    respond(engine, second, 200, now=retry_at)
    assert lost(engine) == {"ratelimit_backoff": {"error": 1}}
    events_balance(engine)


def test_oversized_item_is_not_counted_again_on_retry() -> None:
    engine = make()
    envelope = Envelope.for_event({"message": "x" * (limits.MAX_EVENT + 1)})
    envelope.add_item(Item.attachment(b"abc", "a"))
    engine.submit(envelope, T0)
    first = send_one(engine, T0)
    retry_at = fail(engine, first, OSError("reset"), T0)
    assert retry_at is not None
    respond(engine, send_one(engine, retry_at), 200, now=retry_at)
    assert lost(engine) == {"send_error": {"error": 1}}
    events_balance(engine)


def test_abandon_does_not_count_an_already_dropped_item_again() -> None:
    engine = make()
    limit(engine, "100:error")
    envelope = event()
    envelope.add_item(Item.session({"sid": "s"}))
    engine.submit(envelope, T0 + 1)
    retry_at = fail(engine, send_one(engine, T0 + 1), OSError("reset"), T0 + 1)
    assert retry_at is not None
    engine.close()
    engine.abandon()
    assert lost(engine) == {"ratelimit_backoff": {"error": 1}, "network_error": {"session": 1}}
    events_balance(engine)


def test_should_grow() -> None:
    assert BASE_CONNECTIONS == 2
    slow, fast = SLOW_ROUND_TRIP * 10, SLOW_ROUND_TRIP / 20
    idle_cpu, busy_cpu = CPU_BOUND / 2, (1 + CPU_BOUND) / 2
    # no backlog, an idle worker, or the limit reached: never
    assert not should_grow(1, 0, 0, slow, idle_cpu, 16)
    assert not should_grow(1, 1, 5, slow, idle_cpu, 16)
    assert not should_grow(16, 0, 5, slow, idle_cpu, 16)
    assert not should_grow(1, 0, 5, slow, idle_cpu, 1)
    # up to two workers on any backlog, however fast the server or busy the CPU
    assert should_grow(0, 0, 1, fast, busy_cpu, 16)
    assert should_grow(1, 0, 1, fast, busy_cpu, 16)
    assert not should_grow(2, 0, 1, fast, idle_cpu, 16)  # fast server: stay
    assert should_grow(2, 0, 1, slow, idle_cpu, 16)  # slow server: latency-bound, grow
    assert should_grow(15, 0, 1, slow, idle_cpu, 16)
    # slow round trips while the CPU is busy: the time goes to the GIL, not the server
    assert not should_grow(2, 0, 1, slow, busy_cpu, 16)
    assert not should_grow(2, 0, 1, slow, CPU_BOUND, 16)
    assert not should_grow(2, 0, 1, SLOW_ROUND_TRIP, idle_cpu, 16)  # not slower than slow


def test_flush_waits_one_more_round_for_the_report_of_its_losses() -> None:
    engine = make()
    engine.submit(event(), T0)
    flush = engine.begin_flush()  # nothing lost yet: no report queued
    assert not engine.flushed(flush)
    respond(engine, send_one(engine, T0), 500, now=T0)  # the flush's job is lost
    assert not engine.flushed(flush)  # its mark is done, but now there is a loss to report
    attempt = send_one(engine, T0)
    assert attempt.job.internal
    assert report_in(sent(attempt)) == [
        {"reason": "send_error", "category": "error", "quantity": 1}
    ]
    assert not engine.flushed(flush)
    respond(engine, attempt, 200, now=T0)
    assert engine.flushed(flush)


def test_flush_takes_one_report_round_only() -> None:
    engine = make()
    engine.record_lost("sample_rate", "error")
    flush = engine.begin_flush()  # queues the report
    attempt = send_one(engine, T0)
    assert fail(engine, attempt, ConnectionRefusedError(), T0) is None  # counts go back
    assert ledger(engine) == {("sample_rate", "error"): 1}
    assert not engine.flushed(flush)  # the one extra round: the report is queued again
    again = send_one(engine, T0)
    assert again.job.internal
    assert fail(engine, again, ConnectionRefusedError(), T0) is None
    assert ledger(engine) == {("sample_rate", "error"): 1}
    assert engine.flushed(flush)  # a failing server does not keep the flush busy
    assert engine.flushed(flush)


def test_limits_are_pruned_once_they_lift() -> None:
    engine = make()
    engine.submit(event(), T0)
    respond(engine, send_one(engine, T0), 200, {"X-Sentry-Rate-Limits": "10:error:org"}, T0)
    assert dict(engine.limits.deadlines) == {"error": T0 + 10}
    engine.submit(event(), T0 + 20)
    respond(engine, send_one(engine, T0 + 20), 200, now=T0 + 20)
    assert dict(engine.limits.deadlines) == {}


def test_start_sends_a_given_job_ahead_of_the_queue() -> None:
    engine = make()
    first = engine.submit(event("first"), T0)
    second = engine.submit(event("second"), T0)
    assert first is not None and second is not None
    action = engine.start(second, T0)
    assert isinstance(action, Send)
    assert [attempt.job for attempt in action.attempts] == [second]
    assert engine.start(second, T0) is None  # no longer queued
    snap = engine.snapshot(T0)
    assert snap["queued"] == 1 and snap["in_flight"] == 1
    assert take(engine, T0).job is first


def test_a_finished_envelope_keeps_no_encoded_copy_of_its_json() -> None:
    engine = make()
    event_item, attachment = Item.event({"message": "m"}), Item.attachment(b"bytes", "a.txt")
    envelope = Envelope({}, [event_item, attachment])
    engine.submit(envelope, T0)
    attempt = send_one(engine, T0)
    assert event_item.payload_is_encoded  # encoded to be sent
    respond(engine, attempt, 200, {}, T0)
    assert not event_item.payload_is_encoded  # delivered: the application's envelope is light
    assert attachment.payload == b"bytes"  # bytes the application gave stay
    assert event_item.json == {"message": "m"} and event_item.payload == b'{"message":"m"}'
