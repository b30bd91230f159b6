"""HTTP/1.1 request reading and answer writing for the sink and the proxy.

How it works: ``_read_head`` reads up to the blank line that ends a request head (the
stream's limit, ``MAX_HEAD``, bounds it) and ``_parse_head`` splits it into method, target,
version and lower-cased headers, deciding keep-alive and the path and query. ``_body_length``
reads the framing headers (Content-Length, or ``chunked``; anything else is refused) and
``_read_body`` reads that many bytes or the chunks, never more than ``MAX_BODY``. Problems
raise ``_HttpError`` with the status to answer. ``_render`` writes an answer with a
Content-Length; ``_lingering_close`` closes a connection whose body was left unread without
turning the close into an RST that could destroy the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import re
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # request line + headers (and each chunk-size or trailer line)
MAX_BODY = 250 * 1024 * 1024  # raw request body
_LINGER_SECONDS = 1.0


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Head:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    keep_alive: bool
    path: str = ""
    query: str = ""


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]{1,20}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


def _parse_head(raw: bytes) -> _Head:
    """Parse a request head (without the final blank line); raises _HttpError."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise _HttpError(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise _HttpError(505, f"unsupported HTTP version {version[:20]!r}")
        raise _HttpError(400, f"malformed request line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _HttpError(400, f"malformed header line {line[:80]!r}")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)
    head = _Head(method, target, version, headers, keep_alive)
    if target.startswith("/"):
        path, _, head.query = target.partition("?")
        head.path = path
    elif target[:7].lower() == "http://" or target[:8].lower() == "https://":
        try:
            url = urlsplit(target)
        except ValueError:
            raise _HttpError(400, f"malformed request target {target[:80]!r}") from None
        head.path, head.query = url.path or "/", url.query
    elif head.method in ("CONNECT", "OPTIONS"):
        head.path = target  # authority-form or "*"
    else:
        raise _HttpError(400, f"malformed request target {target[:80]!r}")
    return head


def _body_length(headers: Mapping[str, str]) -> int | None:
    """The declared body length; None for a chunked body. Raises _HttpError."""
    encoding = headers.get("transfer-encoding")
    length = headers.get("content-length")
    if encoding is not None:
        if length is not None:
            raise _HttpError(400, "both Transfer-Encoding and Content-Length")
        codings = [c.strip().lower() for c in encoding.split(",")]
        if codings != ["chunked"]:
            raise _HttpError(501, f"unsupported Transfer-Encoding {encoding[:80]!r}")
        return None
    if length is None:
        return 0
    values = {v.strip() for v in length.split(",")}
    value = values.pop()
    if values or not _DIGITS.fullmatch(value):
        raise _HttpError(400, f"bad Content-Length {length[:80]!r}")
    size = int(value)
    if size > MAX_BODY:
        raise _HttpError(413, f"body of {size} bytes is over the limit of {MAX_BODY}")
    return size


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The next request head without its blank line; None at a clean end of input."""
    while True:
        try:
            data = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip(b"\r\n"):
                raise _HttpError(400, "connection closed in the middle of a request head") from None
            return None
        except asyncio.LimitOverrunError:
            raise _HttpError(431, f"request head over {MAX_HEAD} bytes") from None
        head = data[:-4].lstrip(b"\r\n")  # tolerate blank lines between requests
        if head:
            return head


async def _read_body(reader: asyncio.StreamReader, length: int | None, upto: int = -1) -> bytes:
    """Read a body of ``length`` bytes (None: chunked), stopping after ``upto`` if >= 0."""
    if upto == 0:
        return b""
    if length is not None:
        return await reader.readexactly(length if upto < 0 else min(length, upto))
    parts: list[bytes] = []
    total = 0
    while True:
        line = await _read_line(reader)
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if not _HEX.fullmatch(size_text):
            raise _HttpError(400, f"bad chunk size line {line[:40]!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > MAX_BODY:
            raise _HttpError(413, f"chunked body over the limit of {MAX_BODY} bytes")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _HttpError(400, "missing CRLF after chunk data")
        if 0 <= upto <= total:
            return b"".join(parts)[:upto]
    trailer = 0
    while True:  # trailer fields, ignored
        line = await _read_line(reader)
        if not line:
            break
        trailer += len(line)
        if trailer > MAX_HEAD:
            raise _HttpError(431, f"chunked trailer over {MAX_HEAD} bytes")
    body = b"".join(parts)
    return body if upto < 0 else body[:upto]


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return (await reader.readuntil(b"\r\n"))[:-2]
    except asyncio.LimitOverrunError:
        raise _HttpError(431, f"chunk line over {MAX_HEAD} bytes") from None


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _render(
    status: int,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    close: bool = False,
    head_only: bool = False,
    line_end: str = "\r\n",
) -> bytes:
    """An answer's bytes; ``line_end``: CRLF, or a bare LF (as a sloppy server writes it)."""
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    for name, value in headers:
        if name.lower() not in ("content-length", "connection", "transfer-encoding"):
            lines.append(f"{name}: {value}")
    if status in (204, 304):
        body = b""
    else:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    head = line_end.join(lines) + line_end * 2
    return head.encode("latin-1") + (b"" if head_only else body)


def _detail(message: str) -> bytes:
    return json.dumps({"detail": message}).encode()


def _set_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _lingering_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close after an answer sent before the body was read, without the RST that closing
    with unread input causes (which could destroy the answer before the client reads it)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.drain(), _LINGER_SECONDS)
        if writer.can_write_eof():
            writer.write_eof()
        deadline = time.monotonic() + _LINGER_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            if not await asyncio.wait_for(reader.read(65536), left):
                break
    writer.close()


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
