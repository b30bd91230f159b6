"""The client-report ledger: counting, atomic take, the report item."""

from __future__ import annotations

import json

import pytest

from sentry_transport import REASONS, ClientReportLedger
from sentry_transport.core.client_reports import (
    check_reason,
    nested,
    report_item,
    report_payload,
)

SPEC_REASONS = {
    "queue_overflow", "cache_overflow", "ratelimit_backoff", "network_error", "sample_rate",
    "before_send", "event_processor", "send_error", "internal_sdk_error", "insufficient_data",
    "backpressure", "buffer_overflow", "ignored", "invalid",
}  # fmt: skip


def test_reasons_are_the_spec_list() -> None:
    assert set(REASONS) == SPEC_REASONS
    for reason in SPEC_REASONS:
        assert check_reason(reason) == reason


def test_record_and_aggregate() -> None:
    ledger = ClientReportLedger()
    assert not ledger
    ledger.record("queue_overflow", "error")
    ledger.record("queue_overflow", "error", 2)
    ledger.record("queue_overflow", "transaction")
    ledger.record("ratelimit_backoff", "error", 5)
    assert ledger
    assert ledger.take() == {
        ("queue_overflow", "error"): 3,
        ("queue_overflow", "transaction"): 1,
        ("ratelimit_backoff", "error"): 5,
    }


def test_record_many() -> None:
    ledger = ClientReportLedger()
    ledger.record_many(
        "send_error", [("attachment", 100), ("attachment_item", 1), ("attachment", 5)]
    )
    assert ledger.take() == {
        ("send_error", "attachment"): 105,
        ("send_error", "attachment_item"): 1,
    }


@pytest.mark.parametrize("quantity", [0, -1, -100])
def test_non_positive_quantities_are_ignored(quantity: int) -> None:
    ledger = ClientReportLedger()
    ledger.record("network_error", "error", quantity)
    assert not ledger
    assert ledger.take() == {}


@pytest.mark.parametrize("reason", ["dropped", "", "Queue_Overflow", "rate_limited"])
def test_unknown_reason_is_rejected(reason: str) -> None:
    ledger = ClientReportLedger()
    with pytest.raises(ValueError, match="reason"):
        ledger.record(reason, "error")
    with pytest.raises(ValueError):
        ledger.record_many(reason, [("error", 1)])
    assert ledger.take() == {}


def test_take_resets() -> None:
    ledger = ClientReportLedger()
    ledger.record("send_error", "error", 2)
    first = ledger.take()
    assert first == {("send_error", "error"): 2}
    assert ledger.take() == {}
    assert not ledger
    ledger.record("send_error", "error")
    assert ledger.take() == {("send_error", "error"): 1}
    assert first == {("send_error", "error"): 2}  # a taken dict is not touched again


def test_restore_adds_back() -> None:
    ledger = ClientReportLedger()
    ledger.record("send_error", "error", 2)
    taken = ledger.take()
    ledger.record("send_error", "error", 3)
    ledger.record("network_error", "span", 1)
    ledger.restore(taken)
    assert ledger.take() == {("send_error", "error"): 5, ("network_error", "span"): 1}


def test_reset_forgets() -> None:
    ledger = ClientReportLedger()
    ledger.record("send_error", "error")
    ledger.reset()
    assert not ledger
    ledger.record("send_error", "error")
    assert ledger.take() == {("send_error", "error"): 1}


def test_report_payload_shape() -> None:
    counts = {("send_error", "error"): 2, ("queue_overflow", "attachment"): 100}
    payload = report_payload(counts, 1_700_000_000.5)
    assert payload == {
        "timestamp": 1_700_000_000.5,
        "discarded_events": [
            {"reason": "queue_overflow", "category": "attachment", "quantity": 100},
            {"reason": "send_error", "category": "error", "quantity": 2},
        ],
    }


def test_report_item() -> None:
    item = report_item({("ratelimit_backoff", "transaction"): 1}, 12.0)
    assert item.type == "client_report"
    assert item.headers == {"type": "client_report"}
    body = json.loads(item.payload)
    assert body == {
        "timestamp": 12.0,
        "discarded_events": [
            {"reason": "ratelimit_backoff", "category": "transaction", "quantity": 1}
        ],
    }


def test_nested() -> None:
    counts = {("a_reason", "x"): 1, ("a_reason", "y"): 2, ("b_reason", "x"): 3}
    assert nested(counts) == {"a_reason": {"x": 1, "y": 2}, "b_reason": {"x": 3}}
    assert nested({}) == {}


def test_a_reason_outside_the_list_counts_only_when_not_strict() -> None:
    ledger = ClientReportLedger()
    with pytest.raises(ValueError, match="unknown discard reason"):
        ledger.record("callback_error", "error")
    ledger.record("callback_error", "error", strict=False)
    assert ledger.take() == {("callback_error", "error"): 1}
    for shapeless in ["Callback Error", "", "1abc", "x" * 65]:
        with pytest.raises(ValueError):
            ledger.record(shapeless, "error", strict=False)
