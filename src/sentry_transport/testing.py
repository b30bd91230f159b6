# A local Sentry-compatible sink (and a tiny HTTP proxy) for tests and benchmarks.
#
# How it works: each server runs an asyncio event loop in its own daemon thread and serves
# connections with ``asyncio.start_server`` streams. Requests are parsed by the small HTTP/1.1
# reader below (request line, headers, Content-Length or chunked bodies, keep-alive). For each
# request the sink pops the next scripted behaviour (or uses ``default``), decodes the body,
# parses the envelope and answers, resets, hangs or closes as told. Everything it records
# lives behind one ``threading.Condition``, so test threads read copies and wait without
# polling. ``stop()`` ends the loop, aborts every connection and joins the thread.
"""A local Sentry-compatible server (``Sink``), an HTTP proxy (``Proxy``) and a pytest fixture.

    with Sink() as sink:
        transport = make_transport(sink.dsn)
        transport.capture_envelope(envelope)
        transport.flush(5)
        assert sink.wait_for(1)
        assert sink.envelopes[0].event_id == envelope.event_id

Script failures with ``sink.script(Respond(429, {"Retry-After": "1"}), Reset(), Hang(2))``:
each request takes the next behaviour, then ``sink.default`` applies. Run a sink in the
foreground with ``python -m sentry_transport.testing [--port P] [--latency S] [--quiet]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http
import ipaddress
import json
import queue
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlsplit

from .core.compress import decompress
from .core.envelope import Envelope

try:
    import pytest
except ImportError:  # pragma: no cover - the fixture is only defined with pytest installed
    _HAVE_PYTEST = False
else:
    _HAVE_PYTEST = True

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "Behaviour",
    "Close",
    "Hang",
    "Proxy",
    "Received",
    "Reset",
    "Respond",
    "Sink",
    "main",
]

MAX_HEAD = 64 * 1024  # request line + headers (and each chunk-size or trailer line)
MAX_BODY = 250 * 1024 * 1024  # raw request body
_START_TIMEOUT = 10.0
_JOIN_TIMEOUT = 5.0
_WRITE_TIMEOUT = 30.0
_LINGER_SECONDS = 1.0
_PROXY_TIMEOUT = 60.0
_ZERO_ID = "0" * 32


# -- behaviours ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Respond:
    """Answer ``status`` after ``delay`` seconds; ``body`` None means a small JSON body."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError(f"Respond status must be a final status 200..599, not {self.status}")
        if self.delay < 0:
            raise ValueError("Respond delay must be >= 0")
        headers = dict(self.headers)
        for name, value in headers.items():
            if _UNSAFE.search(name) or _UNSAFE.search(value) or not name:
                raise ValueError(f"bad response header {name!r}: {value!r}")
        object.__setattr__(self, "headers", headers)


@dataclass(frozen=True)
class Reset:
    """Read ``after`` bytes of the request body, then abort the connection with a TCP RST."""

    after: int = 0


@dataclass(frozen=True)
class Hang:
    """Read the request, answer nothing for ``seconds`` (or until stop()), then close."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Close:
    """Read the request, then close the connection without answering."""


Behaviour: TypeAlias = Respond | Reset | Hang | Close

_UNSAFE = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True)
class Received:
    """One request as the sink saw it, and what it did about it."""

    method: str
    path: str  # without the query string (absolute-form targets are reduced to their path)
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes  # raw, as sent (only the first ``Reset.after`` bytes for a Reset)
    decoded: bytes | None  # after Content-Encoding; None if decoding failed
    envelope: Envelope | None  # None if the decoded body is not an envelope
    error: str | None  # why decoding or parsing failed, or what went wrong with the request
    status: int | None  # what the sink answered; None if it never answered
    behaviour: Behaviour
    target: str = ""  # the request target as sent
    query: str = ""
    connection: int = 0  # 1-based number of the TCP connection it arrived on
    time: float = 0.0  # time.monotonic() when its head had been read


# -- HTTP/1.1 request reading ----------------------------------------------------------------


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
) -> bytes:
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
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


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


# -- the server thread -----------------------------------------------------------------------

_S = TypeVar("_S", bound="_ServerThread")


class _ServerThread:
    """An asyncio server in a daemon thread: start(), stop(), context manager, port."""

    _thread_name = "sentry-transport-server"

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"host must be an IP address such as 127.0.0.1, not {host!r}"
            ) from None
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, not {port}")
        self._host = host
        self._requested_port = port
        self._ssl_context = ssl_context
        self._cond = threading.Condition()
        self._life = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._port: int | None = None
        self._connections = 0
        self._errors: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self: _S) -> _S:
        """Start serving (idempotent); the port is bound when this returns.

        After stop(), start() binds the same port again, so a DSN stays valid.
        """
        with self._life:
            if self._thread is not None:
                return self
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._run, args=(ready, failure), name=self._thread_name, daemon=True
            )
            thread.start()
            if not ready.wait(_START_TIMEOUT):
                self._request_stop()
                thread.join(_JOIN_TIMEOUT)
                raise RuntimeError(f"{type(self).__name__} did not start in {_START_TIMEOUT} s")
            if failure:
                thread.join(_JOIN_TIMEOUT)
                raise failure[0]
            self._thread = thread
        return self

    def stop(self) -> None:
        """Close the server and every connection and join the thread (idempotent)."""
        with self._life:
            thread = self._thread
            if thread is None:
                return
            self._request_stop()
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT)
            self._thread = None

    def _request_stop(self) -> None:
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(event.set)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"the {type(self).__name__} has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:PORT``."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{_format_host(self._host)}:{self.port}"

    @property
    def connections(self) -> int:
        """How many TCP connections have been accepted so far."""
        with self._cond:
            return self._connections

    @property
    def errors(self) -> list[str]:
        """Problems with connections or requests that could not be recorded as a request."""
        with self._cond:
            return list(self._errors)

    # -- the loop thread ---------------------------------------------------------------------

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(ready, failure))
        except BaseException as exc:  # pragma: no cover - _main catches what it expects
            if not ready.is_set():
                failure.append(exc)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None
            ready.set()

    async def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        self._stop_event = asyncio.Event()
        port = self._requested_port or self._port or 0
        try:
            server = await asyncio.start_server(
                self._accept,
                self._host,
                port,
                ssl=self._ssl_context,
                limit=MAX_HEAD,
                backlog=1024,
            )
        except Exception as exc:
            failure.append(exc)
            ready.set()
            return
        self._port = int(server.sockets[0].getsockname()[1])
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [task for task in self._tasks if not task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", "event loop error"))
        self._record_error(f"{message}: {exc!r}" if exc is not None else message)

    def _record_error(self, message: str) -> None:
        with self._cond:
            self._errors.append(message)
            self._cond.notify_all()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        with self._cond:
            self._connections += 1
            number = self._connections
        try:
            await self._serve(reader, writer, number)
        except asyncio.CancelledError:
            pass  # stop()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass  # the client went away
        except Exception as exc:
            self._record_error(f"connection {number}: {type(exc).__name__}: {exc}")
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        raise NotImplementedError


# -- the sink --------------------------------------------------------------------------------


class Sink(_ServerThread):
    """A Sentry-compatible ingest server on a local port, recording what it receives."""

    _thread_name = "sentry-transport-sink"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        project_id: str = "42",
        public_key: str = "public",
        latency: float = 0.0,
    ) -> None:
        super().__init__(host, port, ssl_context)
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self.project_id = project_id
        self.public_key = public_key
        self.latency = latency
        self.default: Behaviour = Respond(200)
        self._envelope_path = f"/api/{project_id}/envelope/"
        self._script: deque[Behaviour] = deque()
        self._requests: list[Received] = []
        self._envelopes: list[Envelope] = []
        self._generation = 0
        self._observer: Callable[[Received], None] | None = None  # called when finished
        self._keep = True  # False: record nothing (the command line, which only prints)

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"<Sink {where} requests={len(self._requests)} envelopes={len(self._envelopes)}>"

    @property
    def dsn(self) -> str:
        """The DSN to give a transport, e.g. ``http://public@127.0.0.1:PORT/42``."""
        scheme = "https" if self._ssl_context is not None else "http"
        host = _format_host(self._host)
        return f"{scheme}://{self.public_key}@{host}:{self.port}/{self.project_id}"

    @property
    def envelopes(self) -> list[Envelope]:
        """Envelopes of requests answered 2xx, in arrival order (a copy).

        An envelope is added just before its answer is written, so a client never sees the
        answer first; it is taken out again if the answer cannot be written, and never added
        if the client left before the answer (e.g. during a ``Respond.delay``).
        """
        with self._cond:
            return list(self._envelopes)

    @property
    def requests(self) -> list[Received]:
        """Every request received, in arrival order (a copy)."""
        with self._cond:
            return list(self._requests)

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours: each request takes the next one; then ``default`` applies."""
        for behaviour in behaviours:
            if not isinstance(behaviour, (Respond, Reset, Hang, Close)):
                raise TypeError(f"not a behaviour: {behaviour!r}")
        with self._cond:
            self._script.extend(behaviours)

    @property
    def pending(self) -> int:
        """How many scripted behaviours are still queued."""
        with self._cond:
            return len(self._script)

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` envelopes have been accepted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._envelopes) >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` requests have arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= count, timeout)

    def clear(self) -> None:
        """Forget recorded requests, envelopes and errors (the script and default stay)."""
        with self._cond:
            self._requests.clear()
            self._envelopes.clear()
            self._errors.clear()
            self._generation += 1

    # -- serving -----------------------------------------------------------------------------

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        while await self._one_request(reader, writer, number):
            pass

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> bool:
        """Serve one request; whether the connection stays open for another."""
        try:
            raw = await _read_head(reader)
            if raw is None:
                return False
            head = _parse_head(raw)
        except _HttpError as exc:
            self._record_error(f"connection {number}: {exc.message}")
            await self._answer_error(reader, writer, exc.status, exc.message)
            return False
        arrived = time.monotonic()
        try:
            length = _body_length(head.headers)
        except _HttpError as exc:
            slot = self._add(
                head, b"", None, None, exc.message, Respond(exc.status), number, arrived
            )
            self._finish(slot, exc.status)
            await self._answer_error(reader, writer, exc.status, exc.message)
            return False

        with self._cond:
            behaviour = self._script.popleft() if self._script else self.default
        if head.version == "HTTP/1.1" and head.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        if isinstance(behaviour, Reset):
            try:
                body = await _read_body(reader, length, max(behaviour.after, 0))
            except _HttpError:
                body = b""
            except asyncio.IncompleteReadError as exc:
                body = exc.partial
            slot = self._add(head, body, None, None, None, behaviour, number, arrived)
            _set_rst(writer)
            writer.transport.abort()
            self._finish(slot, None)
            return False

        try:
            body = await _read_body(reader, length)
        except _HttpError as exc:
            slot = self._add(head, b"", None, None, exc.message, behaviour, number, arrived)
            self._finish(slot, exc.status)
            await self._answer_error(reader, writer, exc.status, exc.message)
            return False
        except asyncio.IncompleteReadError as exc:
            cut = f"the connection closed after {len(exc.partial)} bytes of the body"
            slot = self._add(head, exc.partial, None, None, cut, behaviour, number, arrived)
            self._finish(slot, None)
            return False

        decoded, envelope, error = _decode(head.headers, body)
        slot = self._add(head, body, decoded, envelope, error, behaviour, number, arrived)

        if isinstance(behaviour, Hang):
            await asyncio.sleep(max(behaviour.seconds, 0.0))
            writer.close()
            self._finish(slot, None)
            return False
        if isinstance(behaviour, Close):
            writer.close()
            self._finish(slot, None)
            return False
        return await self._respond(reader, writer, slot, head, behaviour, envelope, error)

    def _authorized(self, head: _Head) -> bool:
        auth = head.headers.get("x-sentry-auth")
        if auth is not None:
            text = auth[7:] if auth[:7].lower() == "sentry " else auth
            for part in text.split(","):
                name, _, value = part.strip().partition("=")
                if name.strip() == "sentry_key" and value.strip() == self.public_key:
                    return True
        if "sentry_key" in head.query:
            for name, value in parse_qsl(head.query, keep_blank_values=True):
                if name == "sentry_key" and value == self.public_key:
                    return True
        return False

    async def _respond(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        slot: _Slot,
        head: _Head,
        behaviour: Respond,
        envelope: Envelope | None,
        error: str | None,
    ) -> bool:
        status = behaviour.status
        headers = list(behaviour.headers.items())
        body = behaviour.body
        delay = behaviour.delay
        problem: tuple[int, str, list[tuple[str, str]]] | None = None
        if head.path != self._envelope_path:
            problem = (404, f"no such endpoint {head.path[:200]!r}", [])
        elif head.method != "POST":
            problem = (405, f"method {head.method} not allowed", [("Allow", "POST")])
        elif not self._authorized(head):
            problem = (401, "missing or wrong sentry_key (X-Sentry-Auth or ?sentry_key=)", [])
        elif 200 <= status < 300 and error is not None:
            problem = (400, error, [])
        if problem is not None:
            status, message, headers = problem
            body, delay, envelope = _detail(message), 0.0, None
            headers.append(("Content-Type", "application/json"))
            if error is None:
                self._update(slot, error=message)
        if body is None:  # a JSON body like Sentry's
            if 200 <= status < 300:
                event_id = envelope.event_id if envelope is not None else None
                body = b'{"id":%s}' % json.dumps(event_id or _ZERO_ID).encode()
            else:
                body = _detail(_reason(status))
            if not any(name.lower() == "content-type" for name, _ in headers):
                headers.append(("Content-Type", "application/json"))
        close = not head.keep_alive or any(
            name.lower() == "connection" and "close" in value.lower() for name, value in headers
        )
        wait = self.latency + delay
        if wait > 0:
            await asyncio.sleep(wait)
        if reader.at_eof() or writer.transport.is_closing():
            self._update(slot, error="the client closed the connection before the answer")
            self._finish(slot, None)
            return False
        accepted = envelope if 200 <= status < 300 else None
        self._finish(slot, status, accepted)  # recorded before the client can see the answer
        try:
            writer.write(_render(status, headers, body, close, head.method == "HEAD"))
            if writer.transport.get_write_buffer_size():
                await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT)
        except (ConnectionError, asyncio.TimeoutError) as exc:
            self._unfinish(slot, accepted, f"the answer could not be written: {exc!r}")
            writer.transport.abort()
            return False
        if close:
            writer.close()
            return False
        return True

    async def _answer_error(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, message: str
    ) -> None:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if not writer.transport.is_closing():
            body = _detail(message)
            writer.write(_render(status, [("Content-Type", "application/json")], body, True))
        await _lingering_close(reader, writer)

    # -- recording: the loop thread writes under the condition's lock ------------------------

    def _add(
        self,
        head: _Head,
        body: bytes,
        decoded: bytes | None,
        envelope: Envelope | None,
        error: str | None,
        behaviour: Behaviour,
        number: int,
        arrived: float,
    ) -> _Slot:
        record = Received(
            head.method,
            head.path,
            head.headers,
            body,
            decoded,
            envelope,
            error,
            None,
            behaviour,
            target=head.target,
            query=head.query,
            connection=number,
            time=arrived,
        )
        slot = _Slot(record, -1, -1)
        if self._keep:
            with self._cond:
                self._requests.append(record)
                slot.generation, slot.index = self._generation, len(self._requests) - 1
                self._cond.notify_all()
        return slot

    def _finish(self, slot: _Slot, status: int | None, envelope: Envelope | None = None) -> None:
        """Record the request's final status (and its envelope if it was accepted)."""
        if status is not None:
            slot.record = _with_status(slot.record, status)
        with self._cond:
            if slot.generation == self._generation:  # else: not kept, or cleared meanwhile
                self._requests[slot.index] = slot.record
                if envelope is not None:
                    self._envelopes.append(envelope)
                self._cond.notify_all()
        observer = self._observer
        if observer is not None:
            with contextlib.suppress(Exception):
                observer(slot.record)

    def _unfinish(self, slot: _Slot, envelope: Envelope | None, message: str) -> None:
        with self._cond:
            if slot.generation == self._generation and envelope is not None:
                for i in range(len(self._envelopes) - 1, -1, -1):
                    if self._envelopes[i] is envelope:
                        del self._envelopes[i]
                        break
        self._update(slot, status=None, error=message)

    def _update(self, slot: _Slot, **changes: Any) -> None:
        slot.record = dataclasses.replace(slot.record, **changes)
        with self._cond:
            if slot.generation == self._generation:
                self._requests[slot.index] = slot.record
                self._cond.notify_all()


@dataclass
class _Slot:
    """A request being served: its latest record and where it is kept in Sink._requests."""

    record: Received
    generation: int  # -1: not kept
    index: int


def _with_status(record: Received, status: int) -> Received:
    """``dataclasses.replace(record, status=status)``, without its per-call overhead."""
    copy = object.__new__(Received)
    copy.__dict__.update(record.__dict__, status=status)
    return copy


def _decode(
    headers: Mapping[str, str], body: bytes
) -> tuple[bytes | None, Envelope | None, str | None]:
    """The body after Content-Encoding, its envelope, and why either failed."""
    decoded = body
    encoding = headers.get("content-encoding", "")
    if encoding:
        try:
            for coding in reversed([c for c in encoding.split(",") if c.strip()]):
                decoded = decompress(decoded, coding)
        except Exception as exc:
            return None, None, str(exc)
    try:
        return decoded, Envelope.deserialize(decoded), None
    except Exception as exc:
        return decoded, None, f"not an envelope: {exc}"


# -- the proxy -------------------------------------------------------------------------------

_LOCAL_HOSTS = {"127.0.0.1": "127.0.0.1", "::1": "::1", "localhost": "127.0.0.1"}
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


class Proxy(_ServerThread):
    """An HTTP proxy on 127.0.0.1: ``CONNECT`` tunnels and absolute-form forwarding.

    It only connects to 127.0.0.1 or ::1 (anything else gets 403). Each forwarded request
    uses a fresh upstream connection and the client connection is closed after the answer.
    With ``require_auth`` (a full header value such as ``"Basic dXNlcjpwdw=="``), requests
    without that ``Proxy-Authorization`` get 407.
    """

    _thread_name = "sentry-transport-proxy"

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, require_auth: str | None = None
    ) -> None:
        super().__init__(host, port, None)
        self.require_auth = require_auth
        self._seen: list[str] = []
        self._auth: list[str | None] = []

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"<Proxy {where} seen={len(self._seen)}>"

    @property
    def seen(self) -> list[str]:
        """Request lines without the version, e.g. ``"CONNECT 127.0.0.1:1234"`` (a copy)."""
        with self._cond:
            return list(self._seen)

    @property
    def auth(self) -> list[str | None]:
        """The Proxy-Authorization value of each request in ``seen`` (None if absent)."""
        with self._cond:
            return list(self._auth)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._seen) >= count, timeout)

    def clear(self) -> None:
        with self._cond:
            self._seen.clear()
            self._auth.clear()
            self._errors.clear()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        try:
            raw = await _read_head(reader)
            if raw is None:
                return
            head = _parse_head(raw)
        except _HttpError as exc:
            await self._refuse(reader, writer, exc.status, exc.message)
            return
        with self._cond:
            self._seen.append(f"{head.method} {head.target}")
            self._auth.append(head.headers.get("proxy-authorization"))
            self._cond.notify_all()
        if self.require_auth is not None and (
            head.headers.get("proxy-authorization") != self.require_auth
        ):
            await self._refuse(reader, writer, 407, "proxy authentication required")
            return
        if head.method == "CONNECT":
            await self._tunnel(reader, writer, head)
        elif head.target.lower().startswith("http://"):
            await asyncio.wait_for(self._forward(reader, writer, head), _PROXY_TIMEOUT)
        else:
            await self._refuse(reader, writer, 400, "expected CONNECT or an absolute http:// URL")

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, message: str
    ) -> None:
        headers = [("Content-Type", "text/plain")]
        if status == 407:
            headers.append(("Proxy-Authenticate", 'Basic realm="sentry-transport"'))
        writer.write(_render(status, headers, message.encode() + b"\n", close=True))
        await _lingering_close(reader, writer)

    async def _open(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=MAX_HEAD), _PROXY_TIMEOUT
        )

    async def _tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: _Head
    ) -> None:
        host, port = _split_authority(head.target)
        if host is None or port is None:
            await self._refuse(reader, writer, 400, f"bad CONNECT target {head.target[:80]!r}")
            return
        local = _LOCAL_HOSTS.get(host.lower())
        if local is None:
            await self._refuse(reader, writer, 403, "this proxy only connects to 127.0.0.1/::1")
            return
        try:
            up_reader, up_writer = await self._open(local, port)
        except (OSError, asyncio.TimeoutError) as exc:
            await self._refuse(reader, writer, 502, f"cannot connect to {head.target}: {exc}")
            return
        self._writers.add(up_writer)
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: _Head
    ) -> None:
        url = urlsplit(head.target)
        try:
            host, port = url.hostname, url.port or 80
        except ValueError:
            host, port = None, 0
        if not host:
            await self._refuse(reader, writer, 400, f"bad target {head.target[:80]!r}")
            return
        local = _LOCAL_HOSTS.get(host.lower())
        if local is None:
            await self._refuse(reader, writer, 403, "this proxy only connects to 127.0.0.1/::1")
            return
        try:
            length = _body_length(head.headers)
            if head.version == "HTTP/1.1" and (
                head.headers.get("expect", "").lower() == "100-continue"
            ):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await _read_body(reader, length)
        except _HttpError as exc:
            await self._refuse(reader, writer, exc.status, exc.message)
            return
        try:
            up_reader, up_writer = await self._open(local, port)
        except (OSError, asyncio.TimeoutError) as exc:
            await self._refuse(reader, writer, 502, f"cannot connect to {url.netloc}: {exc}")
            return
        self._writers.add(up_writer)
        try:
            target = (url.path or "/") + (f"?{url.query}" if url.query else "")
            lines = [f"{head.method} {target} HTTP/1.1"]
            if "host" not in head.headers:
                lines.append(f"Host: {url.netloc}")
            for name, value in head.headers.items():
                if name not in _HOP_BY_HOP and name != "expect":
                    lines.append(f"{name}: {value}")
            lines.append(f"Content-Length: {len(body)}")
            lines.append("Connection: close")
            up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await up_writer.drain()
            try:
                answer = await up_reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await self._refuse(reader, writer, 502, "the server sent no valid answer")
                return
            out: list[bytes] = []
            length = None  # None: the body runs to the end of the upstream connection
            for line in answer[:-4].split(b"\r\n"):
                field_name, _, field_value = line.partition(b":")
                field_name = field_name.strip().lower()
                if field_name == b"content-length" and field_value.strip().isdigit():
                    length = int(field_value)
                if field_name not in (b"connection", b"keep-alive", b"proxy-connection"):
                    out.append(line)
            out.append(b"Connection: close")
            writer.write(b"\r\n".join(out) + b"\r\n\r\n")
            status = answer[9:12]
            if head.method == "HEAD" or status in (b"204", b"304"):
                length = 0
            if length is None or b"chunked" in answer.lower():
                await _copy(up_reader, writer)
            else:
                with contextlib.suppress(asyncio.IncompleteReadError):
                    writer.write(await up_reader.readexactly(length))
            await writer.drain()
            writer.close()
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()


def _split_authority(target: str) -> tuple[str | None, int | None]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = target.rpartition(":")
    if not host or not _DIGITS.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        return None, None
    return host, int(port_text)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of input, then pass the half-close on; on an error drop the writer."""
    try:
        await _copy(reader, writer)
        if writer.can_write_eof() and not writer.transport.is_closing():
            writer.write_eof()
    except (OSError, asyncio.IncompleteReadError):
        writer.transport.abort()


# -- pytest ----------------------------------------------------------------------------------

if _HAVE_PYTEST:

    @pytest.fixture
    def sentry_sink() -> Iterator[Sink]:
        """A started ``Sink`` on 127.0.0.1, stopped after the test."""
        sink = Sink().start()
        try:
            yield sink
        finally:
            sink.stop()


# -- command line ----------------------------------------------------------------------------


def _describe(record: Received) -> str:
    envelope = record.envelope
    event_id = (envelope.event_id if envelope is not None else None) or "-"
    types = ",".join(item.type for item in envelope.items) if envelope is not None else "-"
    status = "-" if record.status is None else str(record.status)
    line = f"{event_id} {types or '-'} {status}"
    if record.error:
        line += f" ({record.error})"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    """Run a sink in the foreground: print its DSN, then a line per request, until a signal."""
    parser = argparse.ArgumentParser(
        prog="python -m sentry_transport.testing",
        description="A local Sentry-compatible server that accepts and prints envelopes.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--project-id", default="42")
    parser.add_argument("--public-key", default="public")
    parser.add_argument("--quiet", action="store_true", help="print only the DSN")
    args = parser.parse_args(argv)

    done = threading.Event()
    lines: queue.SimpleQueue[Received | None] = queue.SimpleQueue()

    def on_signal(signum: int, frame: object) -> None:
        done.set()
        lines.put(None)  # wake the loop below

    try:
        sink = Sink(
            host=args.host,
            port=args.port,
            project_id=args.project_id,
            public_key=args.public_key,
            latency=args.latency,
        )
    except ValueError as exc:
        parser.error(str(exc))
    sink._keep = False  # a long-running sink must not grow without end
    if not args.quiet:
        sink._observer = lines.put
    try:
        sink.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        print(sink.dsn, flush=True)
        while not done.is_set():
            try:
                record = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if record is not None:
                print(_describe(record), flush=True)
    finally:
        sink.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
