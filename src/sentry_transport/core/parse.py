"""The envelope parser: reads a binary file a line or a payload at a time.

Malformed input raises ``EnvelopeError`` with the byte offset where it was found, never
anything else. A payload's ``length`` header is a claim: it is read in bounded pieces, so a
hostile claim reserves no memory that has not arrived.
"""

from __future__ import annotations

import io
import json
from typing import IO, Any

from .envelope import _MAX_LENGTH, Envelope, Item
from .errors import EnvelopeError

# The most one payload read asks of the file. A ``length`` header is only a claim: reading
# a large payload in pieces makes the result grow as bytes arrive, instead of reserving the
# claimed size up front (BufferedReader.read(n) allocates n bytes before reading any).
_READ_CHUNK = 1024 * 1024


class Parser:
    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.offset = 0

    def envelope(self) -> Envelope:
        line = self._readline()
        if not line:
            raise EnvelopeError("empty envelope: expected a header line", 0)
        raw, headers = self._headers(line, "envelope")
        envelope = Envelope(headers)
        envelope._raw_header = raw
        while True:
            start = self.offset
            line = self._readline()
            if not line:
                return envelope
            if line in (b"\n", b"\r\n") and not self._peek():
                return envelope  # a final blank line after the last item
            envelope.items.append(self._item(line, start))

    def _item(self, line: bytes, start: int) -> Item:
        raw, headers = self._headers(line, "item", start)
        kind = headers.get("type")
        if not isinstance(kind, str):
            raise EnvelopeError("item header has no string 'type'", start)
        length = headers.get("length")
        if length is None:
            if not line.endswith(b"\n"):
                payload = b""  # header at end of input: empty payload
            else:
                payload = self._readline()
                if payload.endswith(b"\n"):
                    payload = payload[:-1]
        else:
            if type(length) is not int or not 0 <= length <= _MAX_LENGTH:
                raise EnvelopeError(
                    f"item 'length' must be an integer 0..2^32-1, not {length!r}", start
                )
            if not line.endswith(b"\n"):
                if length:
                    raise EnvelopeError(
                        f"item declares {length} bytes past the end of input", self.offset
                    )
                payload = b""
            else:
                payload_start = self.offset
                payload = self._read(length)
                if len(payload) < length:
                    raise EnvelopeError(
                        f"item declares {length} payload bytes but only {len(payload)} remain",
                        payload_start,
                    )
                after = self._read(1)
                if after not in (b"", b"\n"):
                    raise EnvelopeError(
                        "expected a newline or the end of input after a payload with 'length'",
                        self.offset - 1,
                    )
        item = Item(headers, payload)
        item._raw_header = raw
        return item

    def _headers(
        self, line: bytes, what: str, start: int | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        at = self.offset - len(line) if start is None else start
        raw = line[:-1] if line.endswith(b"\n") else line
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise EnvelopeError(
                f"{what} header is not UTF-8: {exc.reason}", at + exc.start
            ) from None
        except json.JSONDecodeError as exc:
            raise EnvelopeError(
                f"{what} header is not valid JSON: {exc.msg}", at + exc.pos
            ) from None
        except (ValueError, RecursionError) as exc:
            raise EnvelopeError(f"{what} header is not valid JSON: {exc}", at) from None
        if not isinstance(value, dict):
            raise EnvelopeError(
                f"{what} header must be a JSON object, not {type(value).__name__}", at
            )
        return raw, value

    def _readline(self) -> bytes:
        line = self.file.readline()
        self.offset += len(line)
        return line

    def _read(self, n: int) -> bytes:
        if n <= _READ_CHUNK or type(self.file) is io.BytesIO:
            # a BytesIO returns (and allocates) at most what it holds, whatever n says
            data = self.file.read(n) if n else b""
        else:
            pieces: list[bytes] = []
            left = n
            while left:
                piece = self.file.read(min(left, _READ_CHUNK))
                if not piece:
                    break  # the input ended early: the caller reports the shortfall
                pieces.append(piece)
                left -= len(piece)
            data = b"".join(pieces)
        self.offset += len(data)
        return data

    def _peek(self) -> bool:
        """Whether any input is left (consumes nothing)."""
        if not self.file.seekable():
            chunk = self.file.read(1)
            if chunk:
                raise EnvelopeError("blank line where an item header was expected", self.offset - 1)
            return False
        here = self.file.tell()
        more = bool(self.file.read(1))
        self.file.seek(here)
        return more
