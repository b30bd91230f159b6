"""JSON for envelopes: orjson (the ``fast`` extra) and the standard library give the same JSON.

Every test runs on both paths: ``json_path`` sets ``jsonenc.accelerator`` to orjson or to
None (the standard library), as the package does at import with and without the extra.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentry_transport import Envelope, Item
from sentry_transport.core import jsonenc

try:
    import orjson
except ImportError:  # the fast extra is not installed: only the standard-library path runs
    orjson = None

PATHS = ["orjson", "stdlib"] if orjson is not None else ["stdlib"]
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(params=PATHS)
def json_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(jsonenc, "accelerator", orjson if request.param == "orjson" else None)
    yield request.param


def strict_loads(data: bytes) -> Any:
    """json.loads that refuses what Relay refuses too: NaN, Infinity, bad UTF-8."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(data.decode("utf-8"), parse_constant=refuse)


def both(obj: Any) -> tuple[bytes, bytes]:
    """``obj`` through orjson (when installed, else the standard library) and the stdlib."""
    saved = jsonenc.accelerator
    try:
        jsonenc.accelerator = orjson
        with_orjson = jsonenc.dumps(obj)
        jsonenc.accelerator = None
        without = jsonenc.dumps(obj)
    finally:
        jsonenc.accelerator = saved
    return with_orjson, without


def test_orjson_is_used_when_installed() -> None:
    if orjson is None:
        assert jsonenc.accelerator is None
        pytest.skip("orjson is not installed")
    assert jsonenc.accelerator is orjson


class Color(enum.Enum):
    RED = 1
    NAMED = "named"


class Level(enum.IntEnum):
    HIGH = 3


class Tag(str, enum.Enum):
    A = "a"


class Text(str):
    def __str__(self) -> str:
        return "not me"


class Number(int):
    pass


class Real(float):
    pass


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Frame:
    lineno: int = 7


class Odd:
    def __str__(self) -> str:
        return "odd!"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


WHEN = datetime.datetime(2026, 12, 1, 23, 5, 6, 789, tzinfo=datetime.timezone.utc)
ID = uuid.UUID("8f3c2a1b-0000-4000-8000-00000000abcd")

# (value, the JSON value it is written as), on both paths
UNUSUAL: list[tuple[str, Any, Any]] = [
    ("nan", math.nan, None),
    ("infinities", [math.inf, -math.inf, 1.5], [None, None, 1.5]),
    ("nan deep inside", {"a": [{"b": (math.nan,)}]}, {"a": [{"b": [None]}]}),
    ("nan key", {math.nan: 1, math.inf: 2}, {"NaN": 1, "Infinity": 2}),
    ("big int", 2**70, 2**70),
    ("big negative int", -(2**64), -(2**64)),
    ("u64", 2**64 - 1, 2**64 - 1),
    ("int keys", {1: "a", -2: "b"}, {"1": "a", "-2": "b"}),
    ("other scalar keys", {None: 1, True: 2, 1.5: 3}, {"null": 1, "true": 2, "1.5": 3}),
    ("str subclass key", {Text("k"): 1}, {"k": 1}),
    ("datetime", WHEN, "2026-12-01 23:05:06.000789+00:00"),
    ("naive datetime", datetime.datetime(2026, 1, 2), "2026-01-02 00:00:00"),
    ("date and time", [datetime.date(2026, 1, 2), datetime.time(3, 4)], ["2026-01-02", "03:04:00"]),
    ("uuid", ID, str(ID)),
    ("bytes", b"\x00ab", "b'\\x00ab'"),
    ("set", {3}, "{3}"),
    ("dataclass", Frame(), "Frame(lineno=7)"),
    ("object", Odd(), "odd!"),
    ("enum", [Color.RED, Color.NAMED], [1, "named"]),
    ("int and str enums", [Level.HIGH, Tag.A], [3, "a"]),
    ("enum key", {Level.HIGH: 1, Tag.A: 2}, {"3": 1, "a": 2}),
    ("subclasses", [Text("s"), Number(4), Real(2.5)], ["s", 4, 2.5]),
    ("namedtuple", Point(1, 2), [1, 2]),
    ("lone surrogate", "a\ud800b", "a\ud800b"),
    ("non-ascii", {"ключ": "värde 🐍"}, {"ключ": "värde 🐍"}),
    ("control characters", "\x00\x1f\u2028\n", "\x00\x1f\u2028\n"),
    ("float spellings", [1e16, 5e-324, -0.0, 0.1], [1e16, 5e-324, -0.0, 0.1]),
]


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in UNUSUAL], ids=[c[0] for c in UNUSUAL]
)
def test_unusual_values_are_written_alike(json_path: str, value: Any, expected: Any) -> None:
    written = jsonenc.dumps(value)
    assert strict_loads(written) == expected
    assert _same_json(written, jsonenc.stdlib_dumps(value))


def _same_json(a: bytes, b: bytes) -> bool:
    return bool(json.loads(a) == json.loads(b)) and _kinds(json.loads(a)) == _kinds(json.loads(b))


def _kinds(value: Any) -> Any:
    """The value with every number tagged by its type (1 == 1.0 == True in Python)."""
    if isinstance(value, dict):
        return {k: _kinds(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_kinds(v) for v in value]
    return (type(value).__name__, value)


def test_ordinary_oddities_stay_on_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """What events commonly hold is written by orjson itself, not by the slow path."""
    if orjson is None:
        pytest.skip("orjson is not installed")

    def no_fallback(obj: Any) -> bytes:
        raise AssertionError("fell back to the standard library")

    monkeypatch.setattr(jsonenc, "accelerator", orjson)
    monkeypatch.setattr(jsonenc, "stdlib_dumps", no_fallback)
    common = {"when": WHEN, "id": ID, "state": Color.RED, "at": Point(1, 2), "x": math.nan}
    common |= {"frame": Frame(), "raw": b"x", "text": "ключ 🐍", "big": 2**63, "obj": Odd()}
    assert strict_loads(jsonenc.dumps(common))["state"] == 1


def test_deep_nesting_past_orjsons_limit(json_path: str) -> None:
    deep: Any = "leaf"
    for _ in range(400):  # orjson stops at 255 levels: the standard library takes over
        deep = [deep]
    assert strict_loads(jsonenc.dumps(deep)) == deep


def test_a_cycle_is_a_value_error(json_path: str) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ValueError):
        jsonenc.dumps(loop)
    with_nan: dict[str, Any] = {"x": math.nan}
    with_nan["self"] = with_nan  # the NaN pass meets the cycle, and says so
    with pytest.raises(ValueError, match="Circular"):
        jsonenc.dumps(with_nan)


@pytest.mark.parametrize("key", [(1, 2), frozenset(), Color.RED])
def test_other_keys_are_a_type_error(json_path: str, key: Any) -> None:
    with pytest.raises(TypeError):
        jsonenc.dumps({key: 1})


def test_a_str_that_raises_raises_on_both_paths(json_path: str) -> None:
    with pytest.raises(RuntimeError, match="no str for you"):
        jsonenc.dumps({"x": Unprintable()})


# -- properties: the same objects give the same JSON with and without orjson -----------------

KEYS = st.text(max_size=6) | st.integers(-5, 5) | st.sampled_from([None, True, 1.5, math.nan])
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()  # also past 64 bits
    | st.floats()  # also NaN and infinities
    | st.text(max_size=8)  # also lone surrogates
    | st.sampled_from([WHEN, ID, b"raw", Color.RED, Level.HIGH, Frame(), Odd()])
)
VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=6), children, max_size=4)
        | st.dictionaries(KEYS, children, max_size=3)
    ),
    max_leaves=12,
)


@PROPERTY
@given(VALUES)
def test_property_same_json_with_and_without_orjson(value: Any) -> None:
    with_orjson, without = both(value)
    assert _same_json(with_orjson, without)
    for written in (with_orjson, without):
        assert strict_loads(written) == strict_loads(without)  # valid JSON, no NaN tokens


@PROPERTY
@given(VALUES)
def test_property_the_encoder_made_once_writes_what_json_encoder_writes(value: Any) -> None:
    """The standard-library path calls CPython's C encoder, made once, where JSONEncoder
    makes one per call: the same bytes, or the same error, as JSONEncoder with its settings."""
    assert jsonenc._C_ENCODER is not None  # CPython: the path under test is taken
    slow = jsonenc._ENCODER
    expected: Any
    try:
        expected = slow.encode(value).encode("utf-8")
    except ValueError:  # NaN or infinity: both paths then write the value made finite
        expected = slow.encode(jsonenc._finite(value)).encode("utf-8")
    except Exception as exc:  # the error itself is what is compared
        expected = type(exc)
    got: Any
    try:
        got = jsonenc.stdlib_dumps(value)
    except Exception as exc:
        got = type(exc)
    assert got == expected


def test_without_the_c_encoder_the_standard_library_path_writes_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = {"a": [1, 1.5, math.nan, None, True, "\u00e9"], 2: (WHEN, ID, Color.RED)}
    made_once = jsonenc.stdlib_dumps(value)
    monkeypatch.setattr(jsonenc, "_C_ENCODER", None)
    assert jsonenc.stdlib_dumps(value) == made_once
    assert strict_loads(made_once)["a"][2] is None


@PROPERTY
@given(VALUES)
def test_property_json_values_round_trip(value: Any) -> None:
    assert strict_loads(jsonenc.dumps(value)) == _expected(value)


def _expected(value: Any) -> Any:
    """The JSON value of ``value`` by the module's rules, written out independently."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, enum.Enum):
        return _expected(value.value)
    if isinstance(value, (list, tuple)):
        return [_expected(v) for v in value]
    if isinstance(value, dict):
        return {_key(k): _expected(v) for k, v in value.items()}
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, float) and math.isnan(key):
        return "NaN"
    return json.dumps(key)


# -- envelopes ---------------------------------------------------------------------------------

EVENT: dict[str, Any] = {
    "message": {"formatted": "Zahlung fehlgeschlagen: Karte abgelehnt ✗"},
    "level": "error",
    "timestamp": 1767225600.25,
    "extra": {
        "when": WHEN,
        "request_id": ID,
        "ratio": math.nan,
        "huge": 2**80,
        "by_status": {200: 14, 500: 1},
        "state": Color.NAMED,
        "point": Point(3, 4),
        "raw": b"\xff",
    },
    "tags": {"region": "eu-west-1"},
}


def build() -> Envelope:
    """A fresh envelope (its JSON payloads not encoded yet) with every kind of JSON in it."""
    envelope = Envelope.for_event(
        {**EVENT, "event_id": "8f3c2a1b00004000800000000000abcd"},
        [Item.attachment(b"\x00\x01", "a.bin")],
        headers={"sdk": {"name": "ü", "version": "1"}, "sampled": math.nan},
    )
    return envelope.add_item(Item.logs([{"body": "log ✓", "attributes": {"n": 2**65}}]))


def test_envelopes_encode_to_the_same_json_with_and_without_orjson() -> None:
    sent = []
    saved = jsonenc.accelerator
    for accelerator in (orjson, None):
        jsonenc.accelerator = accelerator
        try:
            sent.append(Envelope.deserialize(build().serialize()))
        finally:
            jsonenc.accelerator = saved
    with_orjson, without = sent
    assert with_orjson.headers == without.headers
    assert with_orjson.headers["sampled"] is None
    assert [i.headers for i in with_orjson.items] == [i.headers for i in without.items]
    for a, b in zip(with_orjson.items, without.items, strict=True):
        assert a.payload == b.payload if a.type == "attachment" else a.json == b.json
    event = with_orjson.items[0].json
    assert event["extra"] == {
        "when": "2026-12-01 23:05:06.000789+00:00",
        "request_id": str(ID),
        "ratio": None,
        "huge": 2**80,
        "by_status": {"200": 14, "500": 1},
        "state": "named",
        "point": [3, 4],
        "raw": "b'\\xff'",
    }
    assert event["message"]["formatted"] == EVENT["message"]["formatted"]
    assert with_orjson.items[2].json["items"][0]["attributes"]["n"] == 2**65


def test_item_length_counts_the_bytes_written(json_path: str) -> None:
    item = Item.event({"message": "ключ 🐍", "x": math.inf})
    header = json.loads(item.header_bytes())
    assert header["length"] == len(item.payload)
    assert strict_loads(item.payload) == {"message": "ключ 🐍", "x": None}


def test_a_kept_payload_holds_no_more_memory_than_its_bytes(json_path: str) -> None:
    """orjson's own bytes keep its whole write buffer (8 KiB for a 1 KB event): what an item
    keeps is an exact copy, so that a queue's byte bound counts what it holds."""
    import tracemalloc

    event = {"message": "x" * 1100, "tags": {"a": "b"}}
    assert jsonenc.dumps_kept(event) == jsonenc.dumps(event)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [Item.event(event).payload for _ in range(20)]
        held = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert len(kept[0]) > 1100
    assert held < len(kept[0]) + 512  # the bytes, the item's object and a little more
