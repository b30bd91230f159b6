"""``LeanServer``: a Sentry-style ingest front end that does little per request, for benchmarks.

How it works: one ``asyncio.Protocol`` per connection keeps a byte buffer and a small state
machine (head, Content-Length body, chunk-size line, chunk data, chunk CRLF, trailer). Each
``data_received`` parses every complete request the buffer holds; a body is counted and
skipped, never kept, decompressed or parsed. A request's answer (route, method and
``sentry_key`` checked from the head) goes on the connection's queue, due ``latency``
seconds after its body was read; one ``loop.call_at`` timer per connection writes the due
answers in order, all in one ``write``. At most ``_READ_AHEAD`` answers wait on a connection,
and reading pauses while the client does not read its answers, so memory stays bounded (one
read chunk, 64 KiB of head). A framing error is answered (400, 413, 431, 501) in order, then
the connection is half-closed and its input drained for a second, so the answer is not lost
to an RST.
"""

from __future__ import annotations

import asyncio
import collections
import re
from typing import Any
from urllib.parse import parse_qsl

from ._http import MAX_HEAD, _detail, _format_host, _HttpError, _reason
from ._server import _ServerThread

__all__ = ["MAX_LEAN_BODY", "LeanServer"]

MAX_LEAN_BODY = 200 * 1024 * 1024  # by Content-Length, or the chunks' total
_READ_AHEAD = 64  # answers waiting on one connection before reading pauses
_LINGER = 1.0
_EVENT_ID = "5e1f0c0ffee0c0ffee0c0ffee0c0ffee"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")
_WANTED = ("content-length", "transfer-encoding", "connection", "x-sentry-auth")
_NAMES: dict[str, str] = {}  # header names seen, valid tokens: lower case, "" if not wanted
_KEY = re.compile(r"(?:\A(?:[Ss]entry +)?|,)[ \t]*sentry_key[ \t]*=[ \t]*([^, \t]*)")
_PATH = re.compile(r"/api/[0-9]{1,20}/envelope/\Z")
_DIGITS = re.compile(r"[0-9]{1,20}\Z")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")
_HEAD, _BODY, _SIZE, _DATA, _CRLF, _TRAILER, _DONE = range(7)


def _render(status: int, body: bytes, close: bool) -> bytes:
    head = f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "")
    return (head + "\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    def __init__(self, server: LeanServer) -> None:
        self.server = server
        self.latency = server.latency
        self.buf = bytearray()
        self.mode = _HEAD
        self.need = 0  # body or chunk bytes still to skip
        self.chunked = 0  # chunk bytes so far, or trailer bytes
        self.status = 200
        self.close_after = False
        self.pending: collections.deque[tuple[float, bytes, bool]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.read_paused = self.write_paused = self.eof = False
        self.requests = self.body_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.server._opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.mode = _DONE
        if self.timer is not None:
            self.timer.cancel()
        self.pending.clear()
        self.server._closed(self)

    def data_received(self, data: bytes) -> None:
        if self.mode == _DONE:
            return  # lingering: input is drained and dropped
        if self.need > len(data) and not self.buf:  # the middle of a body: count it, no copy
            self._skip(len(data))
            return
        self.buf += data
        self._parse()

    def _skip(self, size: int) -> int:
        """Count ``size`` body bytes as read: the bytes still to skip."""
        self.need -= size
        self.body_bytes += size
        self.server.body_bytes += size
        return self.need

    def eof_received(self) -> bool:
        self.eof = True
        return bool(self.pending)  # answer what was read, then close

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._resume()

    def _pause(self) -> None:
        if not self.read_paused and self.mode != _DONE:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.read_paused and not self.write_paused and len(self.pending) < _READ_AHEAD:
            self.read_paused = False
            self.transport.resume_reading()
            self._parse()  # requests already in the buffer

    def _parse(self) -> None:
        buf, pos = self.buf, 0
        try:
            while pos < len(buf) and self.mode != _DONE:
                mode, left = self.mode, len(buf) - pos
                if mode == _HEAD:
                    if self.write_paused or (len(self.pending) >= _READ_AHEAD and self.latency):
                        self._pause()
                        break
                    if len(self.pending) >= _READ_AHEAD:
                        self._flush()
                    if buf[pos] in b"\r\n":  # blank lines between requests are tolerated
                        pos += 1
                        continue
                    end = buf.find(b"\r\n\r\n", pos, pos + MAX_HEAD + 4)
                    if end < 0:
                        if left > MAX_HEAD + 3:
                            raise _HttpError(431, f"request head over {MAX_HEAD} bytes")
                        break
                    self._head(buf[pos:end].decode("latin-1"))
                    pos = end + 4
                elif mode in (_BODY, _DATA):
                    take = min(self.need, left)
                    pos += take
                    if self._skip(take):
                        continue
                    if mode == _BODY:
                        self._finish()
                    else:
                        self.mode = _CRLF  # then the CRLF line after the chunk's data
                else:  # a line: the CRLF after chunk data, a chunk size, a trailer
                    end = buf.find(b"\r\n", pos, pos + MAX_HEAD + 2)
                    if end < 0:
                        if left > MAX_HEAD + 1:
                            raise _HttpError(431, f"chunk line over {MAX_HEAD} bytes")
                        break
                    line, pos = bytes(buf[pos:end]), end + 2
                    if mode == _CRLF:  # the end of a chunk's data
                        if line:
                            raise _HttpError(400, "missing CRLF after chunk data")
                        self.mode = _SIZE
                    elif mode == _SIZE:
                        self._chunk_size(line)
                    elif not line:
                        self._finish()
                    else:
                        self.chunked += len(line) + 2
                        if self.chunked > MAX_HEAD:
                            raise _HttpError(431, f"chunked trailer over {MAX_HEAD} bytes")
        except _HttpError as exc:
            self._queue(_render(exc.status, _detail(exc.message), True), True)
            self.server.statuses[exc.status] += 1
            self.mode = _DONE
        del buf[:pos]
        if self.mode == _DONE:
            buf.clear()
        if not self.latency:
            self._flush()
        elif self.pending and self.timer is None:
            self.timer = self.loop.call_at(self.pending[0][0], self._flush)

    def _head(self, text: str) -> None:
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not _TOKEN.match(parts[0]) or parts[2] not in _VERSIONS:
            raise _HttpError(400, f"malformed request line {lines[0][:80]!r}")
        method, target, version = parts
        length = encoding = auth = None
        connection = ""
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            key = _NAMES.get(name)
            if key is None or not colon:
                if not colon or not _TOKEN.match(name):
                    raise _HttpError(400, f"malformed header line {line[:80]!r}")
                key = name.lower() if name.lower() in _WANTED else ""
                if len(_NAMES) < 10_000:  # names repeat: each is checked once
                    _NAMES[name] = key
            if not key:
                continue
            value = value.strip(" \t")
            if key == "content-length":
                if length is not None and length != value:
                    raise _HttpError(400, "conflicting Content-Length headers")
                length = value
            elif key == "transfer-encoding":
                encoding = value if encoding is None else f"{encoding}, {value}"
            elif key == "connection":
                connection += "," + value.lower()
            else:
                auth = value
        tokens = {token.strip() for token in connection.split(",")} if connection else ()
        self.close_after = "close" in tokens or (
            version == "HTTP/1.0" and "keep-alive" not in tokens
        )
        path, _, query = target.partition("?")
        if not _PATH.match(path):
            self.status = 404
        elif method != "POST":
            self.status = 405
        else:
            self.status = 200 if self.server._authorized(auth, query) else 401
        if encoding is not None:
            if length is not None:
                raise _HttpError(400, "both Transfer-Encoding and Content-Length")
            if encoding.lower() != "chunked":
                raise _HttpError(501, f"unsupported Transfer-Encoding {encoding[:80]!r}")
            self.mode, self.chunked = _SIZE, 0
        elif length is not None and not _DIGITS.match(length):
            raise _HttpError(400, f"bad Content-Length {length[:80]!r}")
        elif length is not None and int(length) > MAX_LEAN_BODY:
            raise _HttpError(413, f"body of {length} bytes is over the limit of {MAX_LEAN_BODY}")
        elif length is not None and int(length):
            self.mode, self.need = _BODY, int(length)
        else:
            self._finish()

    def _chunk_size(self, line: bytes) -> None:
        text = line.split(b";", 1)[0].strip(b" \t")
        if not _HEX.match(text):
            raise _HttpError(400, f"bad chunk size line {line[:40]!r}")
        size = int(text, 16)
        if not size:
            self.mode, self.chunked = _TRAILER, 0
        elif self.chunked + size > MAX_LEAN_BODY:
            raise _HttpError(413, f"chunked body over the limit of {MAX_LEAN_BODY} bytes")
        else:
            self.mode, self.need, self.chunked = _DATA, size, self.chunked + size

    def _finish(self) -> None:
        """The request is read: count it and queue its answer."""
        self.requests += 1
        server = self.server
        server.requests += 1
        server.statuses[self.status] += 1
        self._queue(server._answers[self.status, self.close_after], self.close_after)
        self.mode = _DONE if self.close_after else _HEAD

    def _queue(self, answer: bytes, close: bool) -> None:
        due = self.loop.time() + self.latency if self.latency else 0.0
        self.pending.append((due, answer, close))

    def _flush(self) -> None:
        """Write the answers that are due, in order, then wait for the next one's time."""
        self.timer = None
        pending = self.pending
        if not pending or self.transport.is_closing():
            return
        now = self.loop.time() if self.latency else 0.0
        out: list[bytes] = []
        close = False
        while pending and pending[0][0] <= now and not close:
            _, answer, close = pending.popleft()
            out.append(answer)
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close:
            self._linger()
        elif pending:
            self.timer = self.loop.call_at(pending[0][0], self._flush)
        elif self.eof:
            self.transport.close()
        self._resume()

    def _linger(self) -> None:
        """Close after the last answer without an RST: half-close, drain input for a while."""
        self.mode = _DONE
        self.pending.clear()
        if self.eof:  # the client is done sending: nothing to drain
            self.transport.close()
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.timer = self.loop.call_later(_LINGER, self.transport.close)


class LeanServer(_ServerThread):
    """A benchmark server: answers ``POST /api/<digits>/envelope/`` with the right
    ``sentry_key`` 200 ``{"id": ...}`` without looking at the body; counts requests and body
    bytes in total (attributes ``requests``, ``body_bytes``, ``statuses``) and per connection
    (``stats()``). ``latency``: each answer is due that many seconds after its request."""

    _thread_name = "sentry-transport-lean"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        project_id: str = "42",
        public_key: str = "public",
        latency: float = 0.0,
    ) -> None:
        super().__init__(host, port, None)
        if not latency >= 0:
            raise ValueError("latency must be >= 0")
        self.project_id, self.public_key, self.latency = project_id, public_key, latency
        self.requests = self.body_bytes = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self._open: set[_Connection] = set()
        self._ended: collections.deque[tuple[int, int]] = collections.deque(maxlen=1000)
        self._answers = {
            (status, close): _render(status, body, close)
            for status, body in [(200, f'{{"id":"{_EVENT_ID}"}}'.encode())]
            + [(s, _detail(_reason(s))) for s in (401, 404, 405)]
            for close in (False, True)
        }

    @property
    def dsn(self) -> str:
        """The DSN to give a transport, e.g. ``http://public@127.0.0.1:PORT/42``."""
        return f"http://{self.public_key}@{_format_host(self._host)}:{self.port}/{self.project_id}"

    def stats(self) -> dict[str, Any]:
        """Totals, and (requests, body bytes) per connection: open ones, then the last 1,000
        closed ones, oldest first."""
        with self._cond:
            ended = list(self._ended)
            still = [(c.requests, c.body_bytes) for c in self._open]
        return {
            "connections": self.connections,
            "open": len(still),
            "requests": self.requests,
            "body_bytes": self.body_bytes,
            "statuses": dict(self.statuses),
            "per_connection": ended + still,
        }

    def _authorized(self, auth: str | None, query: str) -> bool:
        if auth is not None and self.public_key in _KEY.findall(auth):
            return True
        return "sentry_key" in query and ("sentry_key", self.public_key) in parse_qsl(query)

    def _opened(self, connection: _Connection) -> None:
        with self._cond:
            self._connections += 1
            self._open.add(connection)

    def _closed(self, connection: _Connection) -> None:
        with self._cond:
            if connection in self._open:
                self._open.discard(connection)
                self._ended.append((connection.requests, connection.body_bytes))

    async def _listen(self, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Connection(self), self._host, port, backlog=1024)

    def _abort_connections(self) -> None:
        with self._cond:
            connections = list(self._open)
        for connection in connections:
            connection.transport.abort()
