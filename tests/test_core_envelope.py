"""The envelope model and codec: builders, round trips, byte-exact headers, errors, fixtures."""

from __future__ import annotations

import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentry_transport import Envelope, EnvelopeError, Item, ProtocolError
from sentry_transport.core.parse import _READ_CHUNK

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "envelopes"
TRUNCATED = frozenset(
    {
        "continuous_profiling/profile_chunk_1.txt",
        "continuous_profiling/profile_chunk_2.txt",
        "envelope_flutter_replay.bin",
        "envelope_with_screenshot.bin",
    }
)
HEX32 = re.compile(r"^[0-9a-f]{32}$")
PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class NonSeekable(io.RawIOBase):
    """A stream that can only be read forwards (a pipe, a socket file, a decompressor)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def readline(self, size: int | None = -1) -> bytes:
        return self._inner.readline(-1 if size is None else size)

    def read(self, size: int | None = -1) -> bytes:
        return self._inner.read(-1 if size is None else size)

    def tell(self) -> int:
        raise OSError("not seekable")

    def seek(self, *args: Any) -> int:
        raise OSError("not seekable")


def parse(data: bytes) -> Envelope:
    return Envelope.deserialize(data)


def same(a: Envelope, b: Envelope) -> None:
    """Same envelope headers, and item by item the same headers (but length) and payload."""
    assert a.headers == b.headers
    assert len(a.items) == len(b.items)
    for x, y in zip(a.items, b.items, strict=True):
        assert {k: v for k, v in x.headers.items() if k != "length"} == {
            k: v for k, v in y.headers.items() if k != "length"
        }
        assert x.payload == y.payload
    assert a == b


# -- builders ----------------------------------------------------------------------------------


def test_event_item() -> None:
    item = Item.event({"message": "hi", "level": "error"})
    assert item.type == "event"
    assert item.headers == {"type": "event"}
    assert json.loads(item.payload) == {"message": "hi", "level": "error"}
    header = json.loads(item.header_bytes())
    assert header == {"type": "event", "length": len(item.payload)}


def test_event_builder_picks_transaction_by_type() -> None:
    assert Item.event({"type": "transaction", "spans": []}).type == "transaction"
    assert Item.event({"type": "error"}).type == "event"
    assert Item.transaction({"spans": []}).type == "transaction"


def test_json_payload_is_encoded_lazily() -> None:
    item = Item.event({"message": "x" * 100})
    assert not item.payload_is_encoded
    assert item.size_hint() > 100  # an estimate, without encoding
    assert not item.payload_is_encoded
    payload = item.payload
    assert item.payload_is_encoded
    assert item.size_hint() == len(payload)
    assert item.json == {"message": "x" * 100}


def test_payload_setter_replaces_json() -> None:
    item = Item.event({"a": 1})
    item.payload = b'{"b":2}'
    assert item.json == {"b": 2}
    assert item.payload == b'{"b":2}'


def test_attachment_item() -> None:
    item = Item.attachment(
        b"\x00\x01\nbin\r\n", "dump.dmp", "application/octet-stream", "event.minidump"
    )
    assert item.headers == {
        "type": "attachment",
        "filename": "dump.dmp",
        "content_type": "application/octet-stream",
        "attachment_type": "event.minidump",
    }
    assert item.payload == b"\x00\x01\nbin\r\n"
    plain = Item.attachment("héllo", "a.txt")
    assert plain.headers == {"type": "attachment", "filename": "a.txt"}
    assert plain.payload == "héllo".encode()


@pytest.mark.parametrize(
    ("builder", "kind"),
    [
        (Item.session, "session"),
        (Item.check_in, "check_in"),
        (Item.client_report, "client_report"),
    ],
)
def test_simple_json_items(builder: Any, kind: str) -> None:
    item = builder({"k": [1, 2]})
    assert item.type == kind
    assert item.headers == {"type": kind}
    assert json.loads(item.payload) == {"k": [1, 2]}


def test_log_container() -> None:
    logs = [{"body": "a", "level": "info"}, {"body": "b", "level": "warn"}]
    item = Item.logs(logs)
    assert item.type == "log"
    assert item.headers["item_count"] == 2
    assert item.headers["content_type"] == "application/vnd.sentry.items.log+json"
    assert json.loads(item.payload) == {"items": logs}


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [
        ("log", "application/vnd.sentry.items.log+json"),
        ("span", "application/vnd.sentry.items.span.v2+json"),
        ("trace_metric", "application/vnd.sentry.items.trace-metric+json"),
    ],
)
def test_containers(kind: str, content_type: str) -> None:
    values = ({"n": i} for i in range(3))  # any iterable, even a generator
    item = Item.container(kind, values)
    assert item.headers == {"type": kind, "item_count": 3, "content_type": content_type}
    assert json.loads(item.payload) == {"items": [{"n": 0}, {"n": 1}, {"n": 2}]}
    empty = Item.container(kind, [])
    assert empty.headers["item_count"] == 0


def test_unknown_container_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="container"):
        Item.container("event", [])


@pytest.mark.parametrize("headers", [{}, {"type": 5}, {"type": None}, {"filename": "x"}])
def test_item_needs_a_string_type(headers: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="type"):
        Item(headers, b"")


def test_for_event_gives_an_event_id() -> None:
    envelope = Envelope.for_event({"message": "hi"})
    event_id = envelope.event_id
    assert event_id is not None and HEX32.match(event_id)
    assert envelope.headers == {"event_id": event_id}
    assert len(envelope.items) == 1
    assert envelope.items[0].type == "event"
    assert envelope.items[0].json["event_id"] == event_id
    assert Envelope.for_event({}).event_id != event_id  # a fresh one each time


def test_for_event_normalizes_uuids() -> None:
    dashed = "9EC79C33-EC99-42AB-8353-589FCB2E04DC"
    envelope = Envelope.for_event({"event_id": dashed, "type": "transaction"})
    assert envelope.event_id == "9ec79c33ec9942ab8353589fcb2e04dc"
    assert envelope.items[0].type == "transaction"
    assert envelope.items[0].json["event_id"] == "9ec79c33ec9942ab8353589fcb2e04dc"
    as_uuid = uuid.UUID(dashed)
    assert Envelope.for_event({"event_id": as_uuid}).event_id == as_uuid.hex
    already = "0" * 31 + "a"
    event = {"event_id": already}
    assert Envelope.for_event(event).items[0].json is event  # not copied when already fine


def test_for_event_rejects_a_bad_event_id() -> None:
    with pytest.raises(ValueError, match="event_id"):
        Envelope.for_event({"event_id": "not-an-id"})


def test_for_event_with_attachments_and_headers() -> None:
    attachment = Item.attachment(b"x", "a.txt")
    envelope = Envelope.for_event(
        {"message": "m"}, [attachment], headers={"sdk": {"name": "s", "version": "1"}}
    )
    assert [i.type for i in envelope.items] == ["event", "attachment"]
    assert envelope.headers["sdk"] == {"name": "s", "version": "1"}
    assert HEX32.match(envelope.headers["event_id"])


def test_add_item_chains() -> None:
    envelope = Envelope().add_item(Item.session({})).add_item(Item.session({}))
    assert [i.type for i in envelope.items] == ["session", "session"]
    assert repr(envelope) == "<Envelope event_id=None items=[session,session]>"


# -- serialization -------------------------------------------------------------------------


def test_serialize_exact_bytes() -> None:
    envelope = Envelope(
        {"event_id": "a" * 32},
        [Item.event({"message": "hi"}), Item.attachment(b"a\nb", "f.txt")],
    )
    assert envelope.serialize() == (
        b'{"event_id":"' + b"a" * 32 + b'"}\n'
        b'{"type":"event","length":16}\n{"message":"hi"}\n'
        b'{"filename":"f.txt","type":"attachment","length":3}\na\nb'
    )


def test_empty_envelope() -> None:
    assert Envelope().serialize() == b"{}"
    for data in (b"{}", b"{}\n"):
        envelope = parse(data)
        assert envelope.headers == {}
        assert envelope.items == []
        assert envelope.event_id is None


def test_serialize_into_equals_serialize() -> None:
    envelope = Envelope.for_event({"m": 1}, [Item.attachment(b"\x00\n\xff", "b.bin")])
    out = io.BytesIO()
    written = envelope.serialize_into(out)
    assert out.getvalue() == envelope.serialize()
    assert written == len(out.getvalue())
    assert b"".join(envelope.iter_chunks()) == envelope.serialize()


def test_serialize_is_repeatable() -> None:
    envelope = Envelope.for_event({"m": 1})
    assert envelope.serialize() == envelope.serialize()


# -- parsing ---------------------------------------------------------------------------------


def test_parse_with_length() -> None:
    data = b'{"event_id":"x"}\n{"type":"attachment","length":5}\nhe\nlo\n{"type":"b","length":0}\n'
    envelope = parse(data)
    assert envelope.headers == {"event_id": "x"}
    assert [(i.type, i.payload) for i in envelope.items] == [("attachment", b"he\nlo"), ("b", b"")]


def test_parse_without_length() -> None:
    envelope = parse(b'{}\n{"type":"a"}\nfirst\n{"type":"b"}\nsecond')
    assert [(i.type, i.payload) for i in envelope.items] == [("a", b"first"), ("b", b"second")]


@pytest.mark.parametrize("ending", [b"", b"\n"])
def test_final_newline_is_optional(ending: bytes) -> None:
    with_length = parse(b'{}\n{"type":"a","length":3}\nabc' + ending)
    without = parse(b'{}\n{"type":"a"}\nabc' + ending)
    assert with_length.items[0].payload == without.items[0].payload == b"abc"
    assert len(with_length.items) == len(without.items) == 1


def test_crlf_final_line_is_accepted() -> None:
    envelope = parse(b'{}\n{"type":"a","length":3}\nabc\n\r\n')
    assert [i.payload for i in envelope.items] == [b"abc"]


def test_empty_payloads() -> None:
    envelope = parse(b'{}\n{"type":"a","length":0}\n\n{"type":"b"}\n\n{"type":"c"}\n')
    assert [(i.type, i.payload) for i in envelope.items] == [("a", b""), ("b", b""), ("c", b"")]
    assert parse(b'{}\n{"type":"a"}').items[0].payload == b""  # header at end of input
    assert parse(b'{}\n{"type":"a","length":0}').items[0].payload == b""
    same(
        parse(parse(b'{}\n{"type":"a"}\n\n{"type":"b"}').serialize()),
        parse(b'{}\n{"type":"a"}\n\n{"type":"b"}'),
    )


def test_binary_payload_with_newlines_and_nuls_is_intact() -> None:
    payload = bytes(range(256)) * 3 + b"\n\n\x00\r\n"
    envelope = Envelope({}, [Item({"type": "attachment", "filename": "b"}, payload)])
    data = envelope.serialize()
    back = parse(data)
    assert back.items[0].payload == payload
    assert back.serialize() == data


def test_carriage_return_before_newline_belongs_to_the_payload() -> None:
    envelope = parse(b'{}\n{"type":"a"}\nline\r\n{"type":"b"}\nx\r')
    assert envelope.items[0].payload == b"line\r"
    assert envelope.items[1].payload == b"x\r"
    again = parse(envelope.serialize())
    assert [i.payload for i in again.items] == [b"line\r", b"x\r"]


def test_unknown_item_types_and_headers_are_preserved() -> None:
    data = (
        b'{"event_id":"e","future_header":{"x":[1,2]}}\n'
        b'{"type":"brand_new_type","length":4,"mystery":true,"nested":{"a":null}}\nabcd\n'
        b'{"type":"integration","zzz":1}\n{not json}'
    )
    envelope = parse(data)
    assert envelope.headers["future_header"] == {"x": [1, 2]}
    first, second = envelope.items
    assert first.type == "brand_new_type"
    assert first.headers == {
        "type": "brand_new_type",
        "length": 4,
        "mystery": True,
        "nested": {"a": None},
    }
    assert second.type == "integration"
    assert second.payload == b"{not json}"
    assert envelope.serialize() == data


UNUSUAL = (
    b'{ "sent_at" : "2024-01-01T00:00:00Z",\t"event_id": "ab",  "sdk":{"name":"caf\\u00e9"} }\n'
    b'{"length": 3 , "type" : "attachment", "filename":"\\u65e5.txt", "x": 1.50}\nabc\n'
    b'{"zeta":0,"type":"custom_thing","alpha":"\\/"}\nno length here'
)


def test_unusual_header_lines_are_kept_byte_for_byte() -> None:
    envelope = parse(UNUSUAL)
    assert envelope.headers["sdk"] == {"name": "café"}
    assert envelope.items[0].headers["filename"] == "日.txt"
    assert envelope.items[1].payload == b"no length here"
    assert envelope.serialize() == UNUSUAL
    # and through a second generation too
    assert parse(envelope.serialize()).serialize() == UNUSUAL


def test_modified_envelope_header_is_re_encoded() -> None:
    envelope = parse(UNUSUAL)
    envelope.headers["dsn"] = "https://k@h/1"
    first_line = envelope.serialize().split(b"\n", 1)[0]
    assert first_line != UNUSUAL.split(b"\n", 1)[0]
    assert json.loads(first_line) == {
        "sent_at": "2024-01-01T00:00:00Z",
        "event_id": "ab",
        "sdk": {"name": "café"},
        "dsn": "https://k@h/1",
    }
    # the items' raw headers are still kept
    assert envelope.serialize().split(b"\n", 1)[1] == UNUSUAL.split(b"\n", 1)[1]


def test_modified_item_header_is_re_encoded_with_length() -> None:
    envelope = parse(UNUSUAL)
    envelope.items[0].headers["content_type"] = "text/plain"
    line = envelope.items[0].header_bytes()
    assert b" " not in line  # compact again
    assert json.loads(line) == {
        "length": 3,
        "type": "attachment",
        "filename": "日.txt",
        "x": 1.5,
        "content_type": "text/plain",
    }
    assert parse(envelope.serialize()).items[0].headers["content_type"] == "text/plain"
    # untouched items keep their raw lines
    assert envelope.items[1].header_bytes() == b'{"zeta":0,"type":"custom_thing","alpha":"\\/"}'


def test_modified_payload_updates_length() -> None:
    envelope = parse(UNUSUAL)
    envelope.items[0].payload = b"longer payload\nwith newline"
    header = json.loads(envelope.items[0].header_bytes())
    assert header["length"] == len(b"longer payload\nwith newline")
    back = parse(envelope.serialize())
    assert back.items[0].payload == b"longer payload\nwith newline"


def test_same_length_payload_change_keeps_raw_header() -> None:
    envelope = parse(UNUSUAL)
    envelope.items[0].payload = b"xyz"
    assert envelope.items[0].header_bytes() == UNUSUAL.split(b"\n")[1]
    assert parse(envelope.serialize()).items[0].payload == b"xyz"


def test_length_less_item_gets_a_length_when_payload_gains_a_newline() -> None:
    envelope = parse(UNUSUAL)
    envelope.items[1].payload = b"two\nlines"
    header = json.loads(envelope.items[1].header_bytes())
    assert header["length"] == 9
    back = parse(envelope.serialize())
    assert back.items[1].payload == b"two\nlines"
    assert len(back.items) == 2


def test_deserialize_accepts_bytearray_and_memoryview() -> None:
    data = Envelope.for_event({"m": 1}).serialize()
    same(parse(data), Envelope.deserialize(bytearray(data)))
    same(parse(data), Envelope.deserialize(memoryview(data)))


def test_deserialize_rejects_text() -> None:
    with pytest.raises(TypeError):
        Envelope.deserialize("{}")  # type: ignore[arg-type]


def test_deserialize_from_a_file(tmp_path: Path) -> None:
    envelope = Envelope.for_event({"m": "x"}, [Item.attachment(b"\n\x00\n", "a")])
    path = tmp_path / "e.envelope"
    with path.open("wb") as file:
        envelope.serialize_into(file)
    with path.open("rb") as file:
        same(Envelope.deserialize_from(file), envelope)


def test_deserialize_from_a_non_seekable_stream() -> None:
    envelope = Envelope.for_event({"m": "x"}, [Item.attachment(b"\n\x00\n", "a")])
    for data in (envelope.serialize(), envelope.serialize() + b"\n"):
        same(Envelope.deserialize_from(NonSeekable(data)), envelope)
    buffered = io.BufferedReader(NonSeekable(envelope.serialize()), buffer_size=7)
    same(Envelope.deserialize_from(buffered), envelope)


def test_stream_parsing_stops_at_the_end_of_the_envelope() -> None:
    data = b'{}\n{"type":"a","length":1}\nx\n{"type":"b"}\ny'
    assert parse(data) == Envelope.deserialize_from(NonSeekable(data))


# -- malformed input ---------------------------------------------------------------------------


def offset_of(data: bytes) -> int:
    with pytest.raises(EnvelopeError) as info:
        parse(data)
    assert isinstance(info.value, ProtocolError)
    assert isinstance(info.value, ValueError)
    assert f"(at byte {info.value.offset})" in str(info.value)
    return info.value.offset


def test_error_empty_body() -> None:
    assert offset_of(b"") == 0


def test_error_bad_json_envelope_header() -> None:
    assert offset_of(b'{"a":}\n') == 5
    assert offset_of(b"not json") == 0


def test_error_bad_json_item_header() -> None:
    data = b'{}\n{"type":"a","length":1}\nx\n{"type":'
    assert offset_of(data) == len(data)  # the JSON ends where the input does
    assert offset_of(b'{}\n{"type" "a"}\n') == 3 + 8


@pytest.mark.parametrize("header", [b"[1,2]", b'"text"', b"null", b"42", b"true"])
def test_error_non_object_header(header: bytes) -> None:
    assert offset_of(header + b"\n") == 0
    assert offset_of(b"{}\n" + header + b"\npayload") == 3


@pytest.mark.parametrize(
    "header", [b'{"length":0}', b'{"type":5}', b'{"type":null}', b'{"type":["a"]}']
)
def test_error_item_without_string_type(header: bytes) -> None:
    assert offset_of(b'{"event_id":"e"}\n' + header + b"\n") == len(b'{"event_id":"e"}\n')


def test_error_length_past_the_end() -> None:
    data = b'{}\n{"type":"a","length":10}\nabc'
    assert offset_of(data) == data.index(b"abc")
    header_only = b'{}\n{"type":"a","length":10}'
    assert offset_of(header_only) == len(header_only)


def test_error_length_not_followed_by_newline() -> None:
    data = b'{}\n{"type":"a","length":2}\nabc\n'
    assert offset_of(data) == data.index(b"c\n")
    data = b'{}\n{"type":"a","length":2}\nab{"type":"b"}\n'
    assert offset_of(data) == data.index(b'{"type":"b"')


@pytest.mark.parametrize("length", [b"-1", b"1.0", b'"3"', b"true", b"null", b"4294967296", b"[1]"])
def test_error_bad_length(length: bytes) -> None:
    if length == b"null":  # null is "no length": a length-less payload
        assert parse(b'{}\n{"type":"a","length":null}\nxy').items[0].payload == b"xy"
        return
    assert offset_of(b'{}\n{"type":"a","length":' + length + b"}\nabc") == 3


def test_max_length_is_accepted_as_a_number() -> None:
    # 2**32-1 is a valid u32; the input is just too short for it
    data = b'{}\n{"type":"a","length":4294967295}\nabc'
    assert offset_of(data) == data.index(b"abc")


def test_error_invalid_utf8_header() -> None:
    assert offset_of(b'{"a":"\xff"}\n') == 6
    data = b'{}\n{"type":"\xc3("}\n'
    assert offset_of(data) == 3 + 9


def test_error_blank_line_between_items() -> None:
    data = b'{}\n{"type":"a","length":1}\nx\n\n{"type":"b"}\ny'
    with pytest.raises(EnvelopeError):
        parse(data)
    with pytest.raises(EnvelopeError):
        Envelope.deserialize_from(NonSeekable(data))


def test_error_deeply_nested_header() -> None:
    with pytest.raises(EnvelopeError):
        parse(b"[" * 100_000)
    with pytest.raises(EnvelopeError):
        parse(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(EnvelopeError):
        parse(b'{}\n{"type":"a","x":' + b"{" * 100_000)


def test_error_huge_integer_in_header() -> None:
    with pytest.raises(EnvelopeError):
        parse(b'{"a":' + b"1" * 10_000 + b"}")


class AskingPipe(io.RawIOBase):
    """A pipe-like raw stream that records how many bytes each read asked for."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.asked: list[int] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.asked.append(len(buffer))
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


class AskingFile:
    """Just ``read``/``readline``/``seekable``, recording every size given to ``read``."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.asked: list[int] = []

    def seekable(self) -> bool:
        return False

    def readline(self, size: int = -1) -> bytes:
        return self._inner.readline(size)

    def read(self, size: int = -1) -> bytes:
        self.asked.append(size)
        return self._inner.read(size)


HUGE_CLAIM = b'{}\n{"type":"attachment","length":4294967295}\n'


def test_a_huge_length_claim_on_a_pipe_reserves_only_bounded_reads() -> None:
    pipe = AskingPipe(HUGE_CLAIM + b"only this")
    with pytest.raises(EnvelopeError) as caught:
        Envelope.deserialize_from(io.BufferedReader(pipe))
    assert caught.value.offset == len(HUGE_CLAIM)
    assert "4294967295 payload bytes but only 9 remain" in str(caught.value)
    assert pipe.asked and max(pipe.asked) <= _READ_CHUNK

    plain = AskingFile(HUGE_CLAIM + b"only this")
    with pytest.raises(EnvelopeError) as caught:
        Envelope.deserialize_from(plain)  # type: ignore[arg-type]
    assert caught.value.offset == len(HUGE_CLAIM)
    assert max(plain.asked) <= _READ_CHUNK


def test_a_payload_larger_than_one_read_arrives_whole() -> None:
    payload = bytes(range(256)) * (5 * 4096 + 3)  # a little over 5 MiB
    envelope = Envelope.for_event({"m": "x"}, [Item.attachment(payload, "big.bin")])
    data = envelope.serialize()
    pipe = AskingPipe(data)
    same(Envelope.deserialize_from(io.BufferedReader(pipe)), envelope)
    assert max(pipe.asked) <= _READ_CHUNK
    plain = AskingFile(data)
    same(Envelope.deserialize_from(plain), envelope)  # type: ignore[arg-type]
    assert max(plain.asked) <= _READ_CHUNK
    with pytest.raises(EnvelopeError) as caught:
        Envelope.deserialize_from(AskingFile(data[:-1000]))  # type: ignore[arg-type]
    assert caught.value.offset == len(data) - len(payload)


# -- properties --------------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
HEADERS = st.dictionaries(st.text(max_size=8), JSON, max_size=4)
ITEM_HEADERS = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in ("type", "length")), JSON, max_size=3
)
TYPES = st.sampled_from(
    ["event", "transaction", "attachment", "session", "client_report", "log", "span", "x-new"]
) | st.text(max_size=12)


@st.composite
def item_specs(draw: st.DrawFn) -> tuple[dict[str, Any], bytes, bool]:
    headers = draw(ITEM_HEADERS)
    headers["type"] = draw(TYPES)
    with_length = draw(st.booleans())
    payload = draw(st.binary(max_size=64))
    if not with_length:
        payload = payload.replace(b"\n", b"")
    return headers, payload, with_length


def encode(headers: dict[str, Any], items: list[tuple[dict[str, Any], bytes, bool]]) -> bytes:
    """Hand-written envelope bytes: compact JSON, ``length`` only where asked."""
    parts = [json.dumps(headers, separators=(",", ":")).encode()]
    for item_headers, payload, with_length in items:
        if with_length:
            item_headers = {**item_headers, "length": len(payload)}
        parts.append(json.dumps(item_headers, separators=(",", ":")).encode() + b"\n" + payload)
    return b"\n".join(parts)


@PROPERTY
@given(headers=HEADERS, items=st.lists(item_specs(), max_size=5), final=st.booleans())
def test_property_round_trip_of_written_envelopes(
    headers: dict[str, Any], items: list[tuple[dict[str, Any], bytes, bool]], final: bool
) -> None:
    data = encode(headers, items)
    envelope = parse(data + (b"\n" if final else b""))
    assert envelope.headers == headers
    assert len(envelope.items) == len(items)
    for item, (item_headers, payload, _) in zip(envelope.items, items, strict=True):
        assert {k: v for k, v in item.headers.items() if k != "length"} == item_headers
        assert item.payload == payload
    assert envelope.serialize() == data  # raw header lines kept, no final newline added
    same(parse(envelope.serialize()), envelope)
    same(Envelope.deserialize_from(NonSeekable(data)), envelope)


@PROPERTY
@given(headers=HEADERS, items=st.lists(item_specs(), max_size=5))
def test_property_round_trip_of_built_envelopes(
    headers: dict[str, Any], items: list[tuple[dict[str, Any], bytes, bool]]
) -> None:
    envelope = Envelope(headers, [Item(h, payload) for h, payload, _ in items])
    data = envelope.serialize()
    back = parse(data)
    same(back, envelope)
    assert all("length" in json.loads(i.header_bytes()) for i in envelope.items)
    assert back.serialize() == data


MUTATION = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate"]),
    st.integers(min_value=0, max_value=10_000),
    st.binary(min_size=1, max_size=3),
)


def parses_or_envelope_error(data: bytes) -> None:
    for reader in (parse, lambda d: Envelope.deserialize_from(NonSeekable(d))):
        try:
            envelope = reader(data)
        except EnvelopeError as exc:
            assert 0 <= exc.offset <= len(data)
        else:
            assert isinstance(envelope, Envelope)
            envelope.serialize()  # whatever parsed can be written again


@PROPERTY
@given(st.binary(max_size=300))
def test_property_arbitrary_bytes_parse_or_raise_envelope_error(data: bytes) -> None:
    parses_or_envelope_error(data)


@PROPERTY
@given(
    headers=HEADERS,
    items=st.lists(item_specs(), min_size=1, max_size=4),
    mutations=st.lists(MUTATION, min_size=1, max_size=3),
)
def test_property_mutated_envelopes_parse_or_raise_envelope_error(
    headers: dict[str, Any],
    items: list[tuple[dict[str, Any], bytes, bool]],
    mutations: list[tuple[str, int, bytes]],
) -> None:
    data = bytearray(encode(headers, items))
    for op, where, blob in mutations:
        where %= len(data) + 1
        if op == "flip" and where < len(data):
            data[where] ^= blob[0] or 1
        elif op == "insert":
            data[where:where] = blob
        elif op == "delete":
            del data[where : where + len(blob)]
        else:
            del data[where:]
    parses_or_envelope_error(bytes(data))


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 50_000,
        b"{" * 50_000,
        b'{}\n{"type":"a","n":' + b"[" * 50_000 + b"\n",
        b'{"a":' + b"9" * 5_000 + b"}",
        b'{"a":1e99999}\n',
        b"\xff\xfe{}",
        b"{}\n\n\n",
        b'{}\n{"type":"a","length":4294967295}',
        b'{}\n{"type":"a","length":18446744073709551616}\nx',
        b"\n",
        b"\r\n",
    ],
)
def test_hostile_inputs_parse_or_raise_envelope_error(data: bytes) -> None:
    parses_or_envelope_error(data)


# -- fixtures from real SDKs -------------------------------------------------------------------


def fixture_files() -> list[Any]:
    if not FIXTURES.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no fixtures at {FIXTURES}"))]
    files = sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.name != "README.md")
    return [pytest.param(p, id=p.relative_to(FIXTURES).as_posix()) for p in files]


@pytest.mark.parametrize("path", fixture_files())
def test_fixture(path: Path) -> None:
    relative = path.relative_to(FIXTURES).as_posix()
    data = path.read_bytes()
    if relative in TRUNCATED:
        with pytest.raises(EnvelopeError) as info:
            parse(data)
        assert 0 < info.value.offset < len(data)
        with pytest.raises(EnvelopeError):
            Envelope.deserialize_from(NonSeekable(data))
        return
    envelope = parse(data)
    rewritten = envelope.serialize()
    same(parse(rewritten), envelope)
    same(Envelope.deserialize_from(NonSeekable(data)), envelope)
    # only a final newline may be dropped; everything else is kept byte for byte
    assert rewritten in (data, data[:-1])


def test_fixture_set_is_what_the_readme_says() -> None:
    if not FIXTURES.is_dir():
        pytest.skip(f"no fixtures at {FIXTURES}")
    names = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if p.is_file()}
    assert TRUNCATED.issubset(names)
    assert len(names - TRUNCATED - {"README.md"}) >= 40


def test_fixture_spec_edge_cases() -> None:
    if not FIXTURES.is_dir():
        pytest.skip(f"no fixtures at {FIXTURES}")
    assert parse((FIXTURES / "envelope_empty.txt").read_bytes()).items == []
    no_len = parse((FIXTURES / "envelope_no_len_w_eof.txt").read_bytes())
    assert [i.type for i in no_len.items] == ["attachment"]
    assert no_len.items[0].payload == b"helloworld"
    with_nl = parse((FIXTURES / "envelope_no_len_w_new_line.txt").read_bytes())
    assert with_nl.items[0].payload == b"helloworld"
    empty = parse((FIXTURES / "envelope_empty_payload.txt").read_bytes())
    assert any(item.payload == b"" for item in empty.items)


# -- interop with the official SDK -------------------------------------------------------------


def test_envelopes_written_here_parse_in_sentry_sdk() -> None:
    sdk = pytest.importorskip("sentry_sdk.envelope")
    ours = Envelope.for_event(
        {"message": "hi", "level": "error"},
        [Item.attachment(b"\x00line1\nline2\r\n\xff", "a.bin", "application/octet-stream")],
        headers={"sdk": {"name": "sentry-transport", "version": "0"}},
    )
    ours.add_item(Item.session({"sid": "s", "status": "ok"}))
    ours.add_item(Item.check_in({"check_in_id": "c", "status": "ok"}))
    ours.add_item(Item.logs([{"body": "x"}]))
    ours.add_item(Item({"type": "future", "weird": [1]}, b"raw"))
    theirs = sdk.Envelope.deserialize(ours.serialize())
    assert theirs.headers == ours.headers
    assert [i.type for i in theirs.items] == [i.type for i in ours.items]
    for their, our in zip(theirs.items, ours.items, strict=True):
        their_headers = {k: v for k, v in their.headers.items() if k != "length"}
        if "content_type" not in our.headers:
            their_headers.pop("content_type", None)  # the SDK infers one
        assert their_headers == our.headers
        if our.type in ("event", "transaction"):
            assert their.payload.json == our.json
        else:
            assert their.get_bytes() == our.payload


def test_envelopes_written_by_sentry_sdk_parse_here() -> None:
    sdk = pytest.importorskip("sentry_sdk.envelope")
    event_id = uuid.uuid4().hex
    theirs = sdk.Envelope(headers={"event_id": event_id, "sent_at": "2024-01-01T00:00:00Z"})
    theirs.add_event({"event_id": event_id, "message": "héllo", "level": "error"})
    theirs.add_transaction({"type": "transaction", "spans": [{"op": "db"}], "event_id": event_id})
    theirs.add_session({"sid": "abc", "status": "exited", "errors": 0})
    theirs.add_item(
        sdk.Item(
            payload=sdk.PayloadRef(bytes=b"\x00\x01\n\r\nbinary"),
            type="attachment",
            filename="dump.bin",
            content_type="application/octet-stream",
            headers={"attachment_type": "event.minidump"},
        )
    )
    data = theirs.serialize()
    ours = parse(data)
    assert ours.headers == theirs.headers
    assert [i.type for i in ours.items] == ["event", "transaction", "session", "attachment"]
    for our, their in zip(ours.items, theirs.items, strict=True):
        payload = their.get_bytes()
        assert our.payload == payload
        assert our.headers == {**their.headers, "length": len(payload)}
    assert ours.items[0].json["message"] == "héllo"
    assert ours.items[3].headers["attachment_type"] == "event.minidump"
    # and what we write back parses identically in the SDK
    again = sdk.Envelope.deserialize(ours.serialize())
    assert again.headers == theirs.headers
    assert [i.get_bytes() for i in again.items] == [i.get_bytes() for i in theirs.items]


@pytest.mark.parametrize(
    "headers",
    [{"event_id": "9ec79c33ec9942ab8353589fcb2e04dc"}, {}, {"sent_at": "old", "dsn": "x"}],
)
def test_sent_at_is_stamped_as_a_merged_header_would_be(headers: dict) -> None:
    from sentry_transport.core.jsonenc import dumps

    envelope = Envelope(headers, [Item(type="event", payload=b"{}")])
    sent_at = "2026-12-02T04:00:00.000001Z"
    chunks = envelope.stamped_chunks(sent_at)
    assert chunks[0] == dumps({**headers, "sent_at": sent_at})
    assert json.loads(chunks[0])["sent_at"] == sent_at


@pytest.mark.parametrize("kind", ["event", "log", "my_own_type", 'quo"te'])
def test_an_item_header_of_its_type_alone_is_written_as_json_would_be(kind: str) -> None:
    from sentry_transport.core.jsonenc import dumps

    item = Item(type=kind, payload=b"12345")
    assert item.header_bytes() == dumps({"type": kind, "length": 5})
    item.headers["filename"] = "a.txt"  # no longer the type alone
    assert json.loads(item.header_bytes()) == {"type": kind, "filename": "a.txt", "length": 5}
