"""The envelope model and codec.

Grammar (develop-docs "Envelopes"):

    Envelope = Headers { "\\n" Item } [ "\\n" ]
    Item     = Headers "\\n" Payload
    Headers  = one line of compact UTF-8 JSON (an object)

A payload with a ``length`` header is exactly that many bytes and is followed by ``\\n`` or
the end of input; without it, it runs to the next ``\\n`` or the end of input.

Parsing reads through ``readline``/``read`` of a binary file, so ``deserialize_from`` streams
and ``deserialize`` is the same code over ``BytesIO``. Header lines that were parsed are kept
as raw bytes and written back unchanged while the headers still say the same, so unknown
headers survive byte for byte. Items built here always carry ``length``. JSON payloads may be
given as objects: they are encoded on first use of ``payload`` (on the transport's worker,
not the caller's thread), by ``jsonenc.dumps`` (orjson when installed).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from .estimate import estimate
from .jsonenc import dumps, dumps_kept

_MAX_LENGTH = 2**32 - 1
_NO_JSON = object()


def _no_id_source() -> str:
    raise RuntimeError("no event id source: import sentry_transport, which sets one")


# Where new event ids come from. The core draws no random numbers itself: the package sets
# this to uuid4 at import (sentry_transport/_ids.py); tests may set a deterministic one.
id_source: Callable[[], str] = _no_id_source

_HEX = frozenset("0123456789abcdef")


def new_event_id() -> str:
    return id_source()


def normalize_event_id(value: Any) -> str:
    """A 32-character lowercase hex id from a UUID or hex string; ValueError otherwise.

    Accepts what ``uuid.UUID`` accepts (but for its leniencies inherited from ``int()``): 32
    hex digits, optionally hyphenated, in braces or after ``urn:uuid:``.
    """
    text = str(value).replace("urn:", "").replace("uuid:", "")
    text = text.strip("{}").replace("-", "").lower()
    if len(text) != 32 or not _HEX.issuperset(text):
        raise ValueError(f"badly formed UUID string {value!r}")
    return text


class Item:
    """One envelope item: ``headers`` (with ``type``) and a ``payload`` of bytes."""

    __slots__ = ("_json", "_payload", "_raw_header", "headers")

    def __init__(
        self,
        headers: Mapping[str, Any] | None = None,
        payload: bytes | bytearray | memoryview | str | None = None,
        *,
        type: str | None = None,
        json: Any = _NO_JSON,
    ) -> None:
        self.headers: dict[str, Any] = dict(headers) if headers else {}
        if type is not None:
            self.headers["type"] = type
        if not isinstance(self.headers.get("type"), str):
            raise ValueError("an item needs a string 'type' header")
        self._json = json
        self._raw_header: bytes | None = None
        if payload is None:
            self._payload = None if json is not _NO_JSON else b""
        elif isinstance(payload, str):
            self._payload = payload.encode("utf-8")
        else:
            self._payload = bytes(payload)

    @property
    def type(self) -> str:
        value: str = self.headers["type"]
        return value

    @property
    def payload(self) -> bytes:
        payload = self._payload  # read once: forget_payload may run on another thread
        if payload is None:
            payload = self._payload = dumps_kept(self._json)
        return payload

    @payload.setter
    def payload(self, value: bytes) -> None:
        self._payload = bytes(value)
        self._json = _NO_JSON

    def forget_payload(self) -> None:
        """Drop the encoded payload of an item made from JSON (encoded again if asked for):
        the transport's copy, once the envelope is delivered or lost, is not kept alive by
        an envelope the application still holds. Items made from bytes keep theirs."""
        if self._json is not _NO_JSON:
            self._payload = None

    @property
    def payload_is_encoded(self) -> bool:
        """False while a JSON payload is still an object (its size is not known yet)."""
        return self._payload is not None

    @property
    def json(self) -> Any:
        """The payload decoded as JSON (the given object for items built from one)."""
        if self._json is _NO_JSON:
            return json.loads(self.payload)
        return self._json

    def size_hint(self) -> int:
        """Payload size if known, else a cheap estimate that does not encode the JSON."""
        payload = self._payload
        if payload is not None:
            return len(payload)
        return estimate(self._json)

    def header_bytes(self) -> bytes:
        """The item header line as sent, with ``length`` set to the payload size."""
        return _item_header(self, self.payload)

    def __repr__(self) -> str:
        return f"<Item type={self.headers.get('type')!r} headers={len(self.headers)}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Item):
            return NotImplemented
        return _without_length(self.headers) == _without_length(other.headers) and (
            self.payload == other.payload
        )

    __hash__ = None  # type: ignore[assignment]

    # -- builders ---------------------------------------------------------------------------

    @classmethod
    def from_json(cls, type: str, obj: Any, **headers: Any) -> Item:
        return cls(headers, type=type, json=obj)

    @classmethod
    def event(cls, event: Mapping[str, Any]) -> Item:
        kind = "transaction" if event.get("type") == "transaction" else "event"
        return cls(type=kind, json=event)

    @classmethod
    def transaction(cls, transaction: Mapping[str, Any]) -> Item:
        return cls(type="transaction", json=transaction)

    @classmethod
    def attachment(
        cls,
        data: bytes | str,
        filename: str,
        content_type: str | None = None,
        attachment_type: str | None = None,
    ) -> Item:
        headers: dict[str, Any] = {"filename": filename}
        if content_type:
            headers["content_type"] = content_type
        if attachment_type:
            headers["attachment_type"] = attachment_type
        return cls(headers, data, type="attachment")

    @classmethod
    def session(cls, session: Mapping[str, Any]) -> Item:
        return cls(type="session", json=session)

    @classmethod
    def check_in(cls, check_in: Mapping[str, Any]) -> Item:
        return cls(type="check_in", json=check_in)

    @classmethod
    def client_report(cls, report: Mapping[str, Any]) -> Item:
        return cls(type="client_report", json=report)

    @classmethod
    def container(cls, type: str, items: Iterable[Any]) -> Item:
        """A log / span / trace_metric container with ``item_count`` and ``content_type``."""
        kinds = {"log": "log", "span": "span.v2", "trace_metric": "trace-metric"}
        if type not in kinds:
            raise ValueError(f"no container item of type {type!r}; expected one of {list(kinds)}")
        values = list(items)
        headers = {
            "item_count": len(values),
            "content_type": f"application/vnd.sentry.items.{kinds[type]}+json",
        }
        return cls(headers, type=type, json={"items": values})

    @classmethod
    def logs(cls, logs: Iterable[Mapping[str, Any]]) -> Item:
        return cls.container("log", logs)


class Envelope:
    """Envelope ``headers`` and a list of ``items``."""

    __slots__ = ("_raw_header", "headers", "items")

    def __init__(
        self, headers: Mapping[str, Any] | None = None, items: Iterable[Item] = ()
    ) -> None:
        self.headers: dict[str, Any] = dict(headers) if headers else {}
        self.items: list[Item] = list(items)
        self._raw_header: bytes | None = None

    # -- builders ---------------------------------------------------------------------------

    @classmethod
    def for_event(
        cls,
        event: Mapping[str, Any],
        attachments: Iterable[Item] = (),
        headers: Mapping[str, Any] | None = None,
    ) -> Envelope:
        """An envelope for one event or transaction; gives it an ``event_id`` if it has none."""
        event_id = event.get("event_id")
        if event_id is None:
            event = {**event, "event_id": new_event_id()}
        else:
            try:
                normalized = normalize_event_id(event_id)
            except ValueError:
                raise ValueError(f"event_id {event_id!r} is not a UUID") from None
            if normalized != event_id:
                event = {**event, "event_id": normalized}
        env_headers = {"event_id": event["event_id"], **(headers or {})}
        return cls(env_headers, [Item.event(event), *attachments])

    def add_item(self, item: Item) -> Envelope:
        """Append an item; returns the envelope, so calls chain."""
        self.items.append(item)
        return self

    @property
    def event_id(self) -> str | None:
        value = self.headers.get("event_id")
        return value if isinstance(value, str) else None

    def __repr__(self) -> str:
        types = ",".join(item.headers.get("type", "?") for item in self.items)
        return f"<Envelope event_id={self.event_id!r} items=[{types}]>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return self.headers == other.headers and self.items == other.items

    __hash__ = None  # type: ignore[assignment]

    # -- writing ----------------------------------------------------------------------------

    def header_bytes(self) -> bytes:
        """The envelope header line as sent (the original bytes while unchanged)."""
        raw = self._raw_header
        if raw is not None and _loads_or_none(raw) == self.headers:
            return raw
        return dumps(self.headers)

    def iter_chunks(self) -> Iterator[bytes]:
        """The serialized envelope as a sequence of byte strings."""
        yield self.header_bytes()
        for item in self.items:
            yield b"\n"
            yield item.header_bytes()
            yield b"\n"
            yield item.payload

    def serialize(self) -> bytes:
        """The envelope as bytes, exact to the envelope grammar."""
        return b"".join(self.iter_chunks())

    def stamped_chunks(self, sent_at: str) -> list[bytes]:
        """The bytes of ``serialize()`` with ``sent_at`` set in the envelope header (to send
        it), without a copy of the envelope, in pieces (a compressor takes them as they are:
        a large payload is not copied into one string first)."""
        chunks = [_stamped_header(self.headers, sent_at)]
        for item in self.items:
            payload = item.payload
            chunks += (b"\n", _item_header(item, payload), b"\n", payload)
        return chunks

    def serialize_into(self, file: IO[bytes]) -> int:
        """Write the envelope to a binary file; returns the number of bytes written."""
        total = 0
        for chunk in self.iter_chunks():
            file.write(chunk)
            total += len(chunk)
        return total

    # -- reading ----------------------------------------------------------------------------

    @classmethod
    def deserialize(cls, data: bytes | bytearray | memoryview) -> Envelope:
        """Parse a whole envelope; malformed input raises EnvelopeError with the offset."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes, not {type(data).__name__}")
        return cls.deserialize_from(io.BytesIO(data))

    @classmethod
    def deserialize_from(cls, file: IO[bytes]) -> Envelope:
        """Parse an envelope from a binary file, reading it a line or a payload at a time."""
        from .parse import Parser  # the parser builds Envelopes: imported here, not at the top

        return Parser(file).envelope()


def _without_length(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in headers.items() if k != "length"}


def _loads_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _stamped_header(headers: dict[str, Any], sent_at: str) -> bytes:
    """``dumps({**headers, "sent_at": sent_at})``: the same bytes, without the copy of the
    headers when they hold no ``sent_at`` yet (``sent_at`` is RFC 3339: nothing to escape)."""
    if not headers or "sent_at" in headers:
        return dumps({**headers, "sent_at": sent_at})
    return b'%s,"sent_at":"%s"}' % (dumps(headers)[:-1], sent_at.encode("ascii"))


# Item types whose header is often {"type": <type>} alone: that header's bytes up to the
# length, rendered once (a bounded table: only these types, never a caller's own strings).
_TYPE_ONLY_HEADS = {
    kind: dumps({"type": kind})[:-1] + b',"length":'
    for kind in ("event", "transaction", "attachment", "session", "sessions", "log", "span")
}


def _item_header(item: Item, payload: bytes) -> bytes:
    """``item.header_bytes()`` for its ``payload``."""
    raw = item._raw_header
    if raw is not None and _raw_still_valid(raw, item.headers, payload):
        return raw
    headers = item.headers
    if len(headers) == 1:
        prefix = _TYPE_ONLY_HEADS.get(headers.get("type"))  # type: ignore[arg-type]
        if prefix is not None:
            return b"%s%d}" % (prefix, len(payload))
    return dumps({**headers, "length": len(payload)})


def _raw_still_valid(raw: bytes, headers: Mapping[str, Any], payload: bytes) -> bool:
    parsed = _loads_or_none(raw)
    if not isinstance(parsed, dict) or _without_length(parsed) != _without_length(headers):
        return False
    if "length" in parsed:
        return bool(parsed["length"] == len(payload))
    return b"\n" not in payload
