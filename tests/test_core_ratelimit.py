"""Rate-limit state from responses (fake clock: ``now`` is a plain float)."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry_transport import Item, RateLimits
from sentry_transport.core.ratelimit import (
    ALL,
    DEFAULT_RETRY_AFTER,
    header,
    parse_rate_limits,
    parse_retry_after,
)

NOW = 1_700_000_000.0


def limits_from(value: str, status: int = 200, now: float = NOW) -> dict[str, float]:
    """Seconds from ``now`` per category after one response."""
    state = RateLimits().update(status, {"X-Sentry-Rate-Limits": value}, now)
    return {category: deadline - now for category, deadline in state.deadlines.items()}


# -- X-Sentry-Rate-Limits ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 413, 429, 500])
def test_header_is_read_on_every_status(status: int) -> None:
    assert limits_from("60:error:org", status) == {"error": 60.0}


def test_float_seconds() -> None:
    assert limits_from("2.5:transaction:key") == {"transaction": 2.5}
    assert limits_from("0.125:error") == {"error": 0.125}


def test_spaces_around_fields_are_ignored() -> None:
    assert limits_from("  30 : error ; transaction : organization : quota ") == {
        "error": 30.0,
        "transaction": 30.0,
    }
    assert limits_from("30:error , 40:session") == {"error": 30.0, "session": 40.0}


@pytest.mark.parametrize("value", ["60::org", "60:", "60", "60: :org", "60:;:org"])
def test_empty_categories_mean_all(value: str) -> None:
    if value == "60":  # no categories field at all: not a limit
        assert limits_from(value) == {}
        return
    assert limits_from(value) == {ALL: 60.0}


def test_all_limit_blocks_every_category() -> None:
    state = RateLimits().update(200, {"X-Sentry-Rate-Limits": "60::org"}, NOW)
    for category in ("error", "transaction", "attachment", "default", "internal"):
        assert state.is_limited(category, NOW + 59)
        assert state.limited_until(category, NOW) == NOW + 60


def test_multiple_limits() -> None:
    assert limits_from("60:transaction:key, 2700:default;error;security:organization") == {
        "transaction": 60.0,
        "default": 2700.0,
        "error": 2700.0,
        "security": 2700.0,
    }


def test_longer_limit_wins_within_one_header() -> None:
    assert limits_from("10:error:org,100:error:org,50:error:org") == {"error": 100.0}


def test_a_shorter_later_limit_does_not_shorten() -> None:
    state = RateLimits().update(200, {"X-Sentry-Rate-Limits": "100:error"}, NOW)
    state = state.update(200, {"X-Sentry-Rate-Limits": "10:error"}, NOW + 1)
    assert state.deadlines["error"] == NOW + 100
    state = state.update(200, {"X-Sentry-Rate-Limits": "200:error"}, NOW + 1)
    assert state.deadlines["error"] == NOW + 201
    # a limit on all does not shorten a category's either, and both are kept
    state = state.update(200, {"X-Sentry-Rate-Limits": "5::org"}, NOW + 2)
    assert state.limited_until("error", NOW + 3) == NOW + 201
    assert state.limited_until("session", NOW + 3) == NOW + 7


def test_update_is_immutable() -> None:
    before = RateLimits()
    after = before.update(200, {"X-Sentry-Rate-Limits": "60:error"}, NOW)
    assert dict(before.deadlines) == {}
    assert after is not before
    assert before.update(200, {}, NOW) is before  # nothing new: same object
    with pytest.raises(TypeError):
        after.deadlines["error"] = 0  # type: ignore[index]


def test_unknown_categories_are_ignored() -> None:
    assert limits_from("60:error;nonsense;attachment:org") == {"error": 60.0, "attachment": 60.0}


def test_a_limit_with_only_unknown_categories_is_ignored() -> None:
    assert limits_from("60:foo;bar:org") == {}
    assert limits_from("60:foo:org, 30:error:org") == {"error": 30.0}
    state = RateLimits().update(429, {"X-Sentry-Rate-Limits": "60:foo:org"}, NOW)
    assert not state.is_limited("error", NOW)  # it does not become a limit on all


def test_extra_fields_are_ignored() -> None:
    assert limits_from("60:error:org:quota_exceeded:ns:future:more") == {"error": 60.0}
    assert limits_from("60:error") == {"error": 60.0}


def test_metric_bucket_namespaces() -> None:
    assert limits_from("60:metric_bucket:org:quota") == {"metric_bucket": 60.0}
    assert limits_from("60:metric_bucket:org:quota:") == {"metric_bucket": 60.0}
    assert limits_from("60:metric_bucket:org:quota:custom") == {"metric_bucket": 60.0}
    assert limits_from("60:metric_bucket:org:quota:spans;custom") == {"metric_bucket": 60.0}
    assert limits_from("60:metric_bucket:org:quota:spans;sessions") == {}
    # namespaces matter only for metric_bucket
    assert limits_from("60:error;metric_bucket:org:quota:spans") == {"error": 60.0}


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        ",,,",
        ":",
        "::::",
        "-5:error",
        "nan:error",
        "inf:error",
        "-inf:error",
        "1e400:error",
        "abc:error",
        "0x10:error",
        ":error",
        "60",
        "\x00\xff:error",
        "60:error:org," * 3,
    ],
)
def test_hostile_values_never_raise(value: str) -> None:
    for status in (200, 429):
        state = RateLimits().update(status, {"X-Sentry-Rate-Limits": value}, NOW)
        assert all(d >= NOW for d in state.deadlines.values())
    for _category, seconds in parse_rate_limits(value):
        assert seconds >= 0 and seconds == seconds and seconds != float("inf")


def test_bad_limits_are_skipped_and_good_ones_kept() -> None:
    assert limits_from("nan:error, -1:session, garbage, 30:transaction") == {"transaction": 30.0}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.sampled_from([200, 413, 429, 503]))
def test_property_any_header_never_raises(value: str, status: int) -> None:
    state = RateLimits().update(
        status, [("x-sentry-rate-limits", value), ("Retry-After", value)], NOW
    )
    assert all(NOW <= d < float("inf") for d in state.deadlines.values())


# -- 429 without X-Sentry-Rate-Limits --------------------------------------------------------


def test_retry_after_seconds() -> None:
    state = RateLimits().update(429, {"Retry-After": "30"}, NOW)
    assert dict(state.deadlines) == {ALL: NOW + 30}


def test_retry_after_fractional_seconds() -> None:
    state = RateLimits().update(429, {"Retry-After": "1.5"}, NOW)
    assert dict(state.deadlines) == {ALL: NOW + 1.5}


def test_retry_after_http_date_relative_to_now() -> None:
    date = formatdate(NOW + 120, usegmt=True)
    state = RateLimits().update(429, {"Retry-After": date}, NOW)
    assert state.deadlines[ALL] == pytest.approx(NOW + 120)
    # a date in the past: no wait, and never a negative one
    assert parse_retry_after(formatdate(NOW - 50, usegmt=True), NOW) == 0.0


@pytest.mark.parametrize(
    "value", ["soon", "", "-5", "nan", "inf", "Mon, 99 Foo 2024 99:99:99 GMT", "Fri, 01 Jan 2100"]
)
def test_retry_after_garbage_means_sixty_seconds(value: str) -> None:
    state = RateLimits().update(429, {"Retry-After": value}, NOW)
    assert dict(state.deadlines) == {ALL: NOW + DEFAULT_RETRY_AFTER}
    assert DEFAULT_RETRY_AFTER == 60.0


def test_bare_429_means_sixty_seconds_for_all() -> None:
    state = RateLimits().update(429, {}, NOW)
    assert dict(state.deadlines) == {ALL: NOW + 60}
    assert state.is_limited("error", NOW + 59.999)
    assert not state.is_limited("error", NOW + 60)


def test_empty_rate_limit_header_on_429_falls_back_to_retry_after() -> None:
    state = RateLimits().update(429, {"X-Sentry-Rate-Limits": "", "Retry-After": "7"}, NOW)
    assert dict(state.deadlines) == {ALL: NOW + 7}


@pytest.mark.parametrize("value", ["garbage", "nan:error", ":error", "-1:all:org, x", ";;;"])
def test_a_429_whose_rate_limit_header_cannot_be_read_still_backs_off(value: str) -> None:
    # No limit in the header can be read: the 429 is one without it (Retry-After, else 60 s)
    state = RateLimits().update(429, {"X-Sentry-Rate-Limits": value, "Retry-After": "7"}, NOW)
    assert dict(state.deadlines) == {ALL: NOW + 7}
    assert limits_from(value, status=429) == {ALL: DEFAULT_RETRY_AFTER}
    assert limits_from(value, status=200) == {}  # on any other status: nothing


def test_rate_limit_header_wins_over_retry_after_on_429() -> None:
    state = RateLimits().update(
        429, {"X-Sentry-Rate-Limits": "10:error", "Retry-After": "100"}, NOW
    )
    assert dict(state.deadlines) == {"error": NOW + 10}


@pytest.mark.parametrize("status", [200, 413, 500, 503])
def test_retry_after_is_ignored_when_not_429(status: int) -> None:
    assert dict(RateLimits().update(status, {"Retry-After": "30"}, NOW).deadlines) == {}


# -- headers as mappings or pairs, any case ----------------------------------------------------


@pytest.mark.parametrize(
    "name", ["X-Sentry-Rate-Limits", "x-sentry-rate-limits", "X-SENTRY-RATE-LIMITS"]
)
def test_header_names_are_case_insensitive(name: str) -> None:
    for headers in ({name: "60:error"}, [(name, "60:error")]):
        state = RateLimits().update(200, headers, NOW)
        assert dict(state.deadlines) == {"error": NOW + 60}
    state = RateLimits().update(429, [("retry-AFTER", "5")], NOW)
    assert dict(state.deadlines) == {ALL: NOW + 5}


def test_header_helper_returns_first_value() -> None:
    pairs = [("Content-Type", "a"), ("content-type", "b")]
    assert header(pairs, "CONTENT-TYPE") == "a"
    assert header({"X": "1"}, "y") is None
    assert header(iter([("Retry-After", "3")]), "retry-after") == "3"


# -- using the state -------------------------------------------------------------------------


def test_limits_lift_exactly_at_the_deadline() -> None:
    state = RateLimits().update(200, {"X-Sentry-Rate-Limits": "10:error"}, NOW)
    deadline = NOW + 10
    assert state.is_limited("error", deadline - 1e-6)
    assert state.limited_until("error", deadline - 1e-6) == deadline
    assert not state.is_limited("error", deadline)
    assert state.limited_until("error", deadline) is None
    assert not state.is_limited("transaction", NOW)


def test_split_sends_what_is_not_limited() -> None:
    state = RateLimits().update(
        200, {"X-Sentry-Rate-Limits": "60:error;attachment_item,60:log_byte"}, NOW
    )
    event = Item.event({"m": 1})
    attachment = Item.attachment(b"x", "a")
    session = Item.session({})
    logs = Item.logs([{}])
    txn = Item.transaction({})
    allowed, blocked = state.split([event, session, attachment, txn, logs], NOW + 1)
    assert allowed == [session, txn]
    assert [i.type for i in blocked] == ["event", "attachment", "log"]
    assert state.item_allowed(session, NOW)
    assert not state.item_allowed(event, NOW)
    allowed, blocked = state.split([event, attachment], NOW + 60)
    assert (len(allowed), blocked) == (2, [])


def test_split_profile_chunk_by_platform() -> None:
    state = RateLimits().update(200, {"X-Sentry-Rate-Limits": "60:profile_chunk_ui"}, NOW)
    ui = Item({"type": "profile_chunk", "platform": "android"}, b"{}")
    backend = Item({"type": "profile_chunk", "platform": "python"}, b"{}")
    assert state.split([ui, backend], NOW) == ([backend], [ui])


def test_client_reports_are_limited_by_internal() -> None:
    state = RateLimits().update(200, {"X-Sentry-Rate-Limits": "60:internal"}, NOW)
    assert not state.item_allowed(Item.client_report({}), NOW)
    assert state.item_allowed(Item.event({}), NOW)


def test_next_lift() -> None:
    state = RateLimits()
    assert state.next_lift(NOW) is None
    state = state.update(200, {"X-Sentry-Rate-Limits": "30:error, 10:session, 50::org"}, NOW)
    assert state.next_lift(NOW) == NOW + 10
    assert state.next_lift(NOW + 10) == NOW + 30
    assert state.next_lift(NOW + 30) == NOW + 50
    assert state.next_lift(NOW + 50) is None


def test_active_and_pruned() -> None:
    state = RateLimits().update(200, {"X-Sentry-Rate-Limits": "30:error, 10:session"}, NOW)
    assert state.active(NOW + 5) == {"error": 25.0, "session": 5.0}
    assert state.active(NOW + 10) == {"error": 20.0}
    assert state.pruned(NOW + 5) is state
    pruned = state.pruned(NOW + 10)
    assert dict(pruned.deadlines) == {"error": NOW + 30}
    assert dict(state.pruned(NOW + 100).deadlines) == {}


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Sentry-Rate-Limits": "1e308:error:organization"},
        {"X-Sentry-Rate-Limits": "999999999::organization"},
        {"Retry-After": "1e308"},
        {"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"},
    ],
    ids=["sentry-header-huge", "sentry-header-all-huge", "retry-after-huge", "far-date"],
)
def test_no_single_answer_limits_for_more_than_the_cap(headers: dict[str, str]) -> None:
    from sentry_transport.core.ratelimit import MAX_LIMIT

    state = RateLimits().update(429, headers, NOW)
    assert state.deadlines, "the limit is applied"
    assert all(d == NOW + MAX_LIMIT for d in state.deadlines.values())
    assert MAX_LIMIT == 3600.0
    # after the cap, delivery resumes (one request may go; the server can limit again)
    assert not state.is_limited("error", NOW + MAX_LIMIT + 0.001)
    again = state.update(429, headers, NOW + MAX_LIMIT + 1)
    assert again.is_limited("error", NOW + 2 * MAX_LIMIT)
