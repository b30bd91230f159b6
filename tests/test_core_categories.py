"""Data categories (what limits block, what losses count) and Relay's size limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sentry_transport import Envelope, Item
from sentry_transport.core import limits as limits
from sentry_transport.core.categories import (
    KNOWN_CATEGORIES,
    UI_PLATFORMS,
    limit_categories,
    outcomes,
)


def item(kind: str, payload: bytes = b"{}", **headers: Any) -> Item:
    return Item({"type": kind, **headers}, payload)


# -- categories per item type ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "category"),
    [
        ("event", "error"),
        ("session", "session"),
        ("sessions", "session"),
        ("profile", "profile"),
        ("replay_event", "replay"),
        ("replay_recording", "replay"),
        ("replay_video", "replay"),
        ("check_in", "monitor"),
        ("user_report", "feedback"),
        ("feedback", "feedback"),
        ("statsd", "metric_bucket"),
        ("metric_buckets", "metric_bucket"),
        ("brand_new_type", "default"),
        ("integration", "default"),
        ("form_data", "default"),
        ("unreal_report", "default"),
    ],
)
def test_simple_types_count_one(kind: str, category: str) -> None:
    assert outcomes(item(kind)) == [(category, 1)]
    assert limit_categories(item(kind)) == (category,)


def test_client_report_counts_nothing_but_is_internal_for_limits() -> None:
    report = Item.client_report({"discarded_events": []})
    assert outcomes(report) == []
    assert limit_categories(report) == ("internal",)


def test_transaction_counts_spans_plus_one() -> None:
    txn = Item.transaction({"type": "transaction", "spans": [{"op": "a"}, {"op": "b"}, {}]})
    assert outcomes(txn) == [("transaction", 1), ("span", 4)]
    assert limit_categories(txn) == ("transaction",)
    assert outcomes(Item.transaction({"spans": []})) == [("transaction", 1), ("span", 1)]
    assert outcomes(Item.transaction({})) == [("transaction", 1), ("span", 1)]
    # spans counted from raw bytes too, and a broken payload still counts the transaction
    raw = item("transaction", json.dumps({"spans": [{}] * 7}).encode())
    assert outcomes(raw) == [("transaction", 1), ("span", 8)]
    assert outcomes(item("transaction", b"{broken")) == [("transaction", 1), ("span", 1)]
    assert outcomes(item("transaction", b"[1,2]")) == [("transaction", 1), ("span", 1)]
    assert outcomes(item("transaction", b'{"spans":"no"}')) == [("transaction", 1), ("span", 1)]


def test_attachment_counts_bytes_min_one_and_one_item() -> None:
    assert outcomes(Item.attachment(b"x" * 1234, "a")) == [
        ("attachment", 1234),
        ("attachment_item", 1),
    ]
    assert outcomes(Item.attachment(b"", "empty")) == [("attachment", 1), ("attachment_item", 1)]
    assert limit_categories(Item.attachment(b"", "a")) == ("attachment", "attachment_item")


def test_log_counts_item_count_and_bytes() -> None:
    logs = Item.logs([{"body": "a"}, {"body": "b"}, {"body": "c"}])
    assert outcomes(logs) == [("log_item", 3), ("log_byte", len(logs.payload))]
    assert limit_categories(logs) == ("log_item", "log_byte")
    # without item_count (or a bad one): one item
    assert outcomes(item("log", b"abcd")) == [("log_item", 1), ("log_byte", 4)]
    assert outcomes(item("log", b"ab", item_count="3")) == [("log_item", 1), ("log_byte", 2)]
    assert outcomes(item("log", b"ab", item_count=-2)) == [("log_item", 1), ("log_byte", 2)]
    assert outcomes(item("log", b"ab", item_count=True)) == [("log_item", 1), ("log_byte", 2)]
    assert outcomes(item("log", b"ab", item_count=0)) == [("log_item", 0), ("log_byte", 2)]


def test_span_and_trace_metric_containers() -> None:
    spans = Item.container("span", [{}, {}])
    assert outcomes(spans) == [("span", 2)]
    assert limit_categories(spans) == ("span",)
    metrics = Item.container("trace_metric", [{}, {}, {}, {}])
    assert outcomes(metrics) == [("trace_metric", 4), ("trace_metric_byte", len(metrics.payload))]
    assert limit_categories(metrics) == ("trace_metric", "trace_metric_byte")


@pytest.mark.parametrize("platform", sorted(UI_PLATFORMS))
def test_profile_chunk_of_ui_platform(platform: str) -> None:
    chunk = item("profile_chunk", platform=platform)
    assert outcomes(chunk) == [("profile_chunk_ui", 1)]
    assert limit_categories(chunk) == ("profile_chunk_ui",)


@pytest.mark.parametrize("platform", [None, "python", "node", "", 5, "Cocoa"])
def test_profile_chunk_of_other_platform(platform: Any) -> None:
    headers = {} if platform is None else {"platform": platform}
    chunk = item("profile_chunk", **headers)
    assert outcomes(chunk) == [("profile_chunk", 1)]
    assert limit_categories(chunk) == ("profile_chunk",)


def test_every_counted_category_is_known() -> None:
    kinds = [
        "event", "transaction", "attachment", "session", "sessions", "profile",
        "profile_chunk", "replay_event", "replay_recording", "replay_video", "check_in",
        "log", "span", "trace_metric", "statsd", "metric_buckets", "user_report",
        "feedback", "security", "raw_security", "nel", "unknown", "client_report",
    ]  # fmt: skip
    for kind in kinds:
        for category, quantity in outcomes(item(kind)):
            assert category in KNOWN_CATEGORIES
            assert quantity >= 0
        assert set(limit_categories(item(kind))) <= KNOWN_CATEGORIES


# -- size and count limits ---------------------------------------------------------------------


def violations(*items: Item) -> list[tuple[int, str]]:
    return [(v.index, v.limit) for v in limits.check(Envelope({}, items))]


def test_valid_envelopes_pass() -> None:
    assert violations() == []
    envelope_items = [
        Item.event({"message": "m"}),
        *(Item.attachment(b"x", f"{i}") for i in range(30)),
        *(Item.session({}) for _ in range(100)),
        Item.check_in({"s": "ok"}),
        Item.logs([{}]),
        Item.client_report({}),
        item("profile"),
    ]
    assert violations(*envelope_items) == []


def test_event_at_limit_passes_and_over_limit_is_flagged() -> None:
    assert violations(item("event", b"x" * limits.MAX_EVENT)) == []
    found = violations(item("event", b"x" * (limits.MAX_EVENT + 1)))
    assert [i for i, _ in found] == [0]
    assert "event" in found[0][1]


@pytest.mark.parametrize("kind", ["transaction", "feedback"])
def test_oversized_event_like_items(kind: str) -> None:
    assert [i for i, _ in violations(item(kind, b"x" * (limits.MAX_EVENT + 1)))] == [0]


def test_second_event_like_item_is_flagged() -> None:
    for first in sorted(limits._SINGLETONS):
        for second in ("event", "transaction", "feedback", "replay_event", "security"):
            found = violations(item(first), item("session"), item(second))
            assert [i for i, _ in found] == [2], (first, second)
            assert "second" in found[0][1]


def test_oversized_first_event_does_not_use_up_the_slot() -> None:
    found = violations(item("event", b"x" * (limits.MAX_EVENT + 1)), item("event"))
    assert [i for i, _ in found] == [0]


def test_thirty_first_attachment_is_flagged() -> None:
    items = [Item.attachment(b"a", f"f{i}") for i in range(32)]
    found = violations(*items)
    assert [i for i, _ in found] == [30, 31]
    assert "30 attachments" in found[0][1]


def test_hundred_first_session_is_flagged() -> None:
    items = [Item.session({}) for _ in range(50)] + [item("sessions") for _ in range(51)]
    found = violations(*items)
    assert [i for i, _ in found] == [100]
    assert "100 session" in found[0][1]


def test_oversized_check_in() -> None:
    assert violations(item("check_in", b"x" * limits.MAX_CHECK_IN)) == []
    assert [i for i, _ in violations(item("check_in", b"x" * (limits.MAX_CHECK_IN + 1)))] == [0]


def test_oversized_client_report() -> None:
    big = item("client_report", b"x" * (limits.MAX_CLIENT_REPORT + 1))
    assert [i for i, _ in violations(item("event"), big)] == [1]


def test_log_limits_depend_on_container() -> None:
    plain = item("log", b"x" * (limits.MAX_LOG + 1))
    assert [i for i, _ in violations(plain)] == [0]
    container = item("log", b"x" * (limits.MAX_LOG + 1), item_count=1)
    assert violations(container) == []
    assert limits.item_limit(container) == limits.MAX_CONTAINER
    assert limits.item_limit(item("span")) == limits.MAX_SPAN
    assert limits.item_limit(item("span", item_count=2)) == limits.MAX_CONTAINER
    assert limits.item_limit(item("trace_metric")) == limits.MAX_CONTAINER
    assert limits.item_limit(item("unknown")) is None
    assert limits.item_limit(item("session")) is None


@pytest.mark.parametrize(
    ("kind", "limit"),
    [
        ("profile", "MAX_PROFILE"),
        ("profile_chunk", "MAX_PROFILE"),
        ("replay_recording", "MAX_REPLAY"),
        ("replay_video", "MAX_REPLAY"),
        ("replay_event", "MAX_REPLAY"),
        ("attachment", "MAX_ATTACHMENT"),
        ("check_in", "MAX_CHECK_IN"),
        ("client_report", "MAX_CLIENT_REPORT"),
        ("event", "MAX_EVENT"),
    ],
)
def test_item_limits_per_protocol(kind: str, limit: str) -> None:
    assert limits.item_limit(item(kind)) == getattr(limits, limit)


def test_limit_values_match_the_protocol() -> None:
    kib, mib = 1024, 1024 * 1024
    expected = {
        "MAX_ENVELOPE": 200 * mib,
        "MAX_BODY": 20_000_000,
        "MAX_EVENT": mib,
        "MAX_ATTACHMENT": 200 * mib,
        "MAX_ATTACHMENTS_TOTAL": 200 * mib,
        "MAX_ATTACHMENT_COUNT": 30,
        "MAX_CONTAINER": 12 * mib,
        "MAX_LOG": 2 * mib,
        "MAX_SPAN": 10 * mib,
        "MAX_CHECK_IN": 100 * kib,
        "MAX_CLIENT_REPORT": 100 * kib,
        "MAX_PROFILE": 50 * mib,
        "MAX_REPLAY": 10 * mib,
        "MAX_SESSIONS": 100,
    }
    assert {name: getattr(limits, name) for name in expected} == expected


def test_attachments_total_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_ATTACHMENTS_TOTAL", 10)
    found = violations(
        Item.attachment(b"x" * 6, "a"),
        Item.attachment(b"x" * 5, "b"),
        Item.attachment(b"x" * 4, "c"),
    )
    assert [i for i, _ in found] == [1]  # a (6) + c (4) fit; b would make 11
    assert "in all" in found[0][1]


def test_envelope_total_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_ENVELOPE", 10)
    found = violations(item("x", b"x" * 6), item("y", b"y" * 5), item("z", b"z" * 4))
    assert [i for i, _ in found] == [1]
    assert "envelope" in found[0][1]


def test_check_encodes_json_payloads() -> None:
    event = Item.event({"message": "x" * (limits.MAX_EVENT + 10)})
    assert not event.payload_is_encoded
    assert [i for i, _ in violations(event)] == [0]
    assert event.payload_is_encoded


def test_body_too_large() -> None:
    assert not limits.body_too_large(limits.MAX_BODY)
    assert limits.body_too_large(limits.MAX_BODY + 1)
