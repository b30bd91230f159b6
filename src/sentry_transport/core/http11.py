"""A small sans-I/O HTTP/1.1 client codec: request bytes out, response parsed from bytes in.

Drivers (blocking sockets, asyncio streams, ...) write ``render_request(...)`` and feed what
they receive to ``ResponseParser.feed`` until it returns a ``Response``; ``eof()`` finishes a
body delimited by the connection closing. Bodies are read but kept only up to
``MAX_KEPT_BODY`` (the server's answer is not needed beyond that); headers are bounded so a
hostile server cannot make a worker buffer without end.

Lines end with CRLF; a bare LF is read as a line end too (RFC 9112 section 2.2 lets a
recipient do so, and http.client, hence requests and urllib3, does), in the head and in a
chunked body's framing. A CR anywhere else in the head is refused (HttpProtocolError).
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import HttpProtocolError

MAX_HEAD = 64 * 1024
MAX_KEPT_BODY = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
_FRAMING = frozenset({"connection", "transfer-encoding", "content-length"})


class Response(NamedTuple):
    """A response as read (a tuple: made once per answer, cheaply)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    keep_alive: bool

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


_new_response = tuple.__new__


def _head_end(data: bytes | bytearray, since: int = 0) -> tuple[int, int]:
    """(where the head ends, where what follows it starts): the first empty line at or past
    ``since``, whether lines end with CRLF or a bare LF; (-1, -1) while there is none yet.
    Two searches in C: a head that arrives a few bytes at a time is not scanned line by
    line in Python on every piece (a hostile server could make that cost seconds)."""
    bare = data.find(b"\n\n", since)
    crlf = data.find(b"\n\r\n", since)
    if bare < 0 and crlf < 0:
        return -1, -1
    if crlf < 0 or 0 <= bare < crlf:
        end, start = bare, bare + 2
    else:
        end, start = crlf, crlf + 3
    return (end - 1 if data[end - 1 : end] == b"\r" else end), start


def _head_lines(head: str) -> list[str]:
    """The lines of a head (``_head_end``'s, the last line's end taken off already), each
    without its CRLF or LF."""
    lines = head.split("\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if i < last and line.endswith("\r"):
            line = lines[i] = line[:-1]
        if "\r" in line:
            raise HttpProtocolError(f"a bare CR in the response head: {line[:80]!r}")
    return lines


def _line_end(data: bytes | bytearray) -> tuple[int, int]:
    """(where the first line ends without its CRLF or LF, where the next begins), or
    (-1, -1) while there is no line end yet."""
    end = data.find(b"\n")
    if end < 0:
        return -1, -1
    return (end - 1 if data[end - 1 : end] == b"\r" else end), end + 1


class StaleConnection(ConnectionError):
    """A reused keep-alive connection was closed by the server before any answer byte: the
    request may be sent again once on a new connection."""


def render_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} contains CR or LF")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _digits(text: str) -> bool:
    # str.isdigit() alone accepts "²" (latin-1 0xB2), which int() then refuses.
    return text.isascii() and text.isdigit()


class HeadMemo:
    """The last answer head ``quick_response`` parsed on a connection, and what it said: a
    server's answers repeat their head (the Date header changes once a second), so most
    are read with one bytes comparison. One per connection (not shared between threads)."""

    __slots__ = ("head", "parsed")

    def __init__(self) -> None:
        self.head = b""
        self.parsed: tuple[int, str, tuple[tuple[str, str], ...], int, bool] | None = None


def quick_response(data: bytes, memo: HeadMemo | None = None) -> tuple[Response, bytes] | None:
    """The common answer, read in one go: when ``data`` holds a whole final response with a
    Content-Length body (or none, for 204/304), it and the bytes past it; else None, and
    ``ResponseParser`` reads it (it also gives every error). Same values as the parser.
    ``memo``: the connection's last head, to skip parsing one seen before."""
    known = memo.head if memo is not None else b""
    if known and data.startswith(known) and data.startswith(b"\r\n\r\n", len(known)):
        end = len(known)  # the head seen last, whole: no search, no copy
        parsed = memo.parsed  # type: ignore[union-attr]
    else:
        end = data.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            return None
        head = data[:end]
        if head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\n"):
            return None  # a bare LF or CR: the parser reads it (a bare LF may end a head sooner)
        parsed = _quick_head(head)
        if memo is not None:
            memo.head, memo.parsed = head, parsed
    if parsed is None:
        return None
    status, reason, headers, length, keep_alive = parsed
    start = end + 4
    if len(data) < start + length:
        return None
    body = data[start : start + min(length, MAX_KEPT_BODY)]
    # (tuple.__new__: the same Response without the named tuple's Python-level __new__)
    return _new_response(Response, (status, reason, headers, body, keep_alive)), data[
        start + length :
    ]


def _quick_head(
    head: bytes,
) -> tuple[int, str, tuple[tuple[str, str], ...], int, bool] | None:
    """(status, reason, headers, body length, keep-alive) of a plain final answer's head."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not _digits(code) or rest[3:4] not in ("", " "):
        return None
    status = int(code)
    if status < 200:
        return None
    headers: list[tuple[str, str]] = []
    length = -1
    connection: str | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        value = value.strip()
        headers.append((name, value))
        lowered = name.lower()
        if lowered == "content-length":
            if length >= 0 or not _digits(value):
                return None
            length = int(value)
        elif lowered == "connection":
            if connection is not None:
                return None
            connection = value.lower()
        elif lowered == "transfer-encoding":
            return None
    if status in (204, 304):
        length = 0
    if not 0 <= length <= MAX_BODY:
        return None
    keep_alive = "close" not in (connection or "") and (
        version == "HTTP/1.1" or "keep-alive" in (connection or "")
    )
    return status, rest[4:], tuple(headers), length, keep_alive


class ResponseParser:
    """Parses one response. ``no_body`` for answers to HEAD/CONNECT. ``data``: bytes already
    received (past the previous response on the connection); ``rest()`` gives what is past
    this one once it is done."""

    def __init__(self, no_body: bool = False, data: bytes = b"") -> None:
        self._buffer = bytearray(data)
        self._no_body = no_body
        self._head: tuple[int, str, tuple[tuple[str, str], ...], bool] | None = None
        self._mode = ""  # "length" | "chunked" | "close"
        self._remaining = 0
        self._body = bytearray()
        self._received = 0
        self._chunk_state = "size"  # "size" | "data" | "crlf" | "trailer"
        self._scanned = 0  # where the search for the head's end goes on from
        self.done: Response | None = None

    def feed(self, data: bytes) -> Response | None:
        if self.done is not None:
            return self.done
        self._buffer += data
        if self._head is None and not self._parse_head():
            return None
        if self._mode == "length":
            self._take(min(self._remaining, len(self._buffer)))
            if self._remaining == 0:
                return self._finish(keep=True)
        elif self._mode == "chunked":
            if self._parse_chunks():
                return self._finish(keep=True)
        elif self._mode == "close":
            self._take(len(self._buffer))
        return None

    def rest(self) -> bytes:
        """The bytes received past the response (the start of the next one, when pipelined)."""
        return bytes(self._buffer) if self.done is not None else b""

    def eof(self) -> Response:
        """The connection closed: finish a close-delimited body, or fail."""
        if self.done is not None:
            return self.done
        if self._head is not None and self._mode == "close":
            return self._finish(keep=False)
        where = "in the headers" if self._head is None else "in the body"
        raise HttpProtocolError(f"connection closed {where} of the response")

    def _take(self, n: int) -> None:
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        self._received += n
        if self._mode == "length":
            self._remaining -= n
        if len(self._body) < MAX_KEPT_BODY:
            self._body += chunk[: MAX_KEPT_BODY - len(self._body)]
        if self._received > MAX_BODY:
            raise HttpProtocolError(f"response body over {MAX_BODY} bytes")

    def _finish(self, keep: bool) -> Response:
        assert self._head is not None
        status, reason, headers, keep_alive = self._head
        self.done = Response(status, reason, headers, bytes(self._body), keep and keep_alive)
        return self.done

    def _parse_head(self) -> bool:
        while True:
            end, start = _head_end(self._buffer, self._scanned)
            # (the empty line's 3 bytes past a head of MAX_HEAD may not all be here yet)
            if end > MAX_HEAD or (end < 0 and len(self._buffer) > MAX_HEAD + 3):
                raise HttpProtocolError(f"response headers over {MAX_HEAD} bytes")
            if end < 0:
                self._scanned = max(0, len(self._buffer) - 2)  # an empty line may end here
                return False
            head = bytes(self._buffer[:end]).decode("latin-1")
            del self._buffer[:start]
            self._scanned = 0  # (an interim answer's: the next head starts afresh)
            lines = _head_lines(head)
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _digits(parts[1]):
                raise HttpProtocolError(f"malformed status line {lines[0][:80]!r}")
            if len(parts[1]) != 3:  # three digits (RFC 9112): "0200" is no 200
                raise HttpProtocolError(f"status {parts[1][:10]!r} is not three digits")
            version, status = parts[0], int(parts[1])
            if status < 100:
                raise HttpProtocolError(f"status {status} out of range")
            headers: list[tuple[str, str]] = []
            framing: dict[str, list[str]] = {}  # the headers that decide keep-alive and the body
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if not colon or not name or name != name.strip():
                    raise HttpProtocolError(f"malformed header line {line[:80]!r}")
                value = value.strip()
                headers.append((name, value))
                lowered = name.lower()
                if lowered in _FRAMING:
                    framing.setdefault(lowered, []).append(value)
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (100 Continue): the real one follows
            connection = ",".join(framing.get("connection", ())).lower()
            keep_alive = "close" not in connection and (
                version != "HTTP/1.0" or "keep-alive" in connection
            )
            self._head = (status, parts[2] if len(parts) > 2 else "", tuple(headers), keep_alive)
            self._choose_mode(status, framing)
            return True

    def _choose_mode(self, status: int, framing: dict[str, list[str]]) -> None:
        encoding = ",".join(framing.get("transfer-encoding", ())).lower()
        lengths = set(framing.get("content-length", ()))
        if self._no_body or status in (204, 304):
            self._mode, self._remaining = "length", 0
        elif "chunked" in encoding:
            self._mode = "chunked"
        elif lengths:
            if len(lengths) != 1 or not _digits(next(iter(lengths))):
                raise HttpProtocolError(f"bad Content-Length {sorted(lengths)!r}")
            self._mode, self._remaining = "length", int(next(iter(lengths)))
            if self._remaining > MAX_BODY:
                raise HttpProtocolError(f"response body over {MAX_BODY} bytes")
        else:
            self._mode = "close"

    def _parse_chunks(self) -> bool:
        while True:
            if self._chunk_state == "size":
                end, start = _line_end(self._buffer)
                if end > 1024 or (end < 0 and len(self._buffer) > 1025):  # (1024 + its CR)
                    raise HttpProtocolError("chunk size line too long")
                if end < 0:
                    return False
                raw = bytes(self._buffer[:end])
                if b"\r" in raw:
                    raise HttpProtocolError(f"a bare CR in a chunk size line: {raw[:20]!r}")
                line = raw.split(b";", 1)[0].strip()
                del self._buffer[:start]
                if not line or len(line) > 16 or line.strip(b"0123456789abcdefABCDEF"):
                    raise HttpProtocolError(f"bad chunk size {line[:20]!r}")
                size = int(line, 16)
                self._remaining = size
                self._chunk_state = "data" if size else "trailer"
            elif self._chunk_state == "data":
                n = min(self._remaining, len(self._buffer))
                chunk = bytes(self._buffer[:n])
                del self._buffer[:n]
                self._remaining -= n
                self._received += n
                if len(self._body) < MAX_KEPT_BODY:
                    self._body += chunk[: MAX_KEPT_BODY - len(self._body)]
                if self._received > MAX_BODY:
                    raise HttpProtocolError(f"response body over {MAX_BODY} bytes")
                if self._remaining:
                    return False
                self._chunk_state = "crlf"
            elif self._chunk_state == "crlf":  # (or a bare LF)
                ending = b"\n" if self._buffer[:1] == b"\n" else b"\r\n"
                if len(self._buffer) < len(ending):
                    return False
                if self._buffer[: len(ending)] != ending:
                    raise HttpProtocolError("missing CRLF after chunk data")
                del self._buffer[: len(ending)]
                self._chunk_state = "size"
            else:  # trailer: lines until an empty one
                end, start = _line_end(self._buffer)
                if end > MAX_HEAD or (end < 0 and len(self._buffer) > MAX_HEAD + 1):
                    raise HttpProtocolError("chunked trailer too long")  # (a line of it)
                if end < 0:
                    return False
                del self._buffer[:start]
                if end == 0:
                    return True
