"""``Sink``: a local Sentry-compatible ingest server that records what it receives.

How it works: each connection is served by a loop of ``_one_request`` calls on the
server's event loop (see ``_server``). A request's head is read and parsed (``_http``),
the next scripted behaviour is taken, and the body is read: all of it, or only the first
``Reset.after`` bytes before an RST. The body is then decoded and parsed as an envelope
(``_decoding``); small bodies are handled on the loop, larger ones on one worker thread so
the loop keeps serving other connections while a big body is expanded. The request is
recorded (``_record``) and the behaviour carried out: an answer (after checking the path,
method and ``sentry_key``), a hang, or a close. A body that decodes to more than
``max_decompressed`` bytes is refused with 413 where a 2xx answer was due.

Pipelined requests (several sent before the first answer) are read while earlier ones wait
out their latency: each answer is due ``latency`` (+ its delay) after its own request was
read, and answers go out in request order, each behaviour after the one before it.
``answers_per_connection`` (0: no limit) closes a connection after that many answers,
without saying so in the last one (a server that does not pipeline may drop the rest).
``line_end`` is what ends the lines of the answers' heads: CRLF, or ``"\n"`` for a server
that writes bare LFs (RFC 9112 lets a client read those as line ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl

from ._decoding import INLINE_LIMIT, MAX_DECOMPRESSED, Decoded, decode
from ._http import (
    _body_length,
    _detail,
    _format_host,
    _Head,
    _HttpError,
    _lingering_close,
    _parse_head,
    _read_body,
    _read_head,
    _reason,
    _render,
    _set_rst,
)
from ._record import Behaviour, Close, Hang, Reset, Respond, _Recorder, _Slot

__all__ = ["Sink"]

_WRITE_TIMEOUT = 30.0
_READ_AHEAD = 64  # requests read on one connection before the oldest is answered, at most
_ZERO_ID = "0" * 32


class Sink(_Recorder):
    """A Sentry-compatible ingest server on a local port, recording what it receives.

    ``max_decompressed`` bounds a body after its Content-Encoding is undone (default
    ``MAX_DECOMPRESSED``, 200 MiB, Relay's limit for a decompressed envelope): decoding stops
    once the output passes it and the request is answered 413 where a 2xx answer was due,
    recorded with ``decoded`` and ``envelope`` None and the reason in ``error``. The raw
    body is bounded separately by ``MAX_BODY``.
    """

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
        max_decompressed: int = MAX_DECOMPRESSED,
    ) -> None:
        super().__init__(host, port, ssl_context)
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if max_decompressed < 0:
            raise ValueError("max_decompressed must be >= 0")
        self.project_id = project_id
        self.public_key = public_key
        self.latency = latency
        self.max_decompressed = max_decompressed
        self._envelope_path = f"/api/{project_id}/envelope/"
        self.answers_per_connection = 0  # close a connection after this many answers (0: never)
        self.line_end = "\r\n"  # of the answers' heads: "\n" for a server writing bare LFs
        self._most_in_flight = 0
        self._unasked_written = 0
        self._decoder: ThreadPoolExecutor | None = None  # made by the loop when first needed

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"<Sink {where} requests={len(self._requests)} envelopes={len(self._envelopes)}>"

    @property
    def most_in_flight(self) -> int:
        """The most requests that arrived on one connection before the earlier ones there
        were answered (2 or more: the client pipelines)."""
        with self._cond:
            return self._most_in_flight

    @property
    def unasked_written(self) -> int:
        """How many ``Respond.unasked`` writes have been made."""
        with self._cond:
            return self._unasked_written

    def _write_unasked(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if not writer.transport.is_closing():
            writer.write(data)
            with self._cond:
                self._unasked_written += 1

    @property
    def dsn(self) -> str:
        """The DSN to give a transport, e.g. ``http://public@127.0.0.1:PORT/42``."""
        scheme = "https" if self._ssl_context is not None else "http"
        host = _format_host(self._host)
        return f"{scheme}://{self.public_key}@{host}:{self.port}/{self.project_id}"

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            super()._run(ready, failure)
        finally:
            decoder, self._decoder = self._decoder, None
            if decoder is not None:  # a body still being decoded finishes on its own
                decoder.shutdown(wait=False, cancel_futures=True)

    async def _decode(self, headers: Mapping[str, str], body: bytes) -> Decoded:
        """Decode on the loop while the output stays small, else on the worker thread."""
        limit = self.max_decompressed
        if len(body) <= INLINE_LIMIT:
            quick = decode(headers, body, min(limit, INLINE_LIMIT))
            if quick.refusal != 413 or limit <= INLINE_LIMIT:
                return quick
        if self._decoder is None:
            self._decoder = ThreadPoolExecutor(1, f"{self._thread_name}-decode")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decoder, decode, headers, body, limit)

    # -- serving -----------------------------------------------------------------------------

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        previous: asyncio.Future[bool] | None = None  # the last answer, in order
        waiting: list[asyncio.Future[bool]] = []
        limit = self.answers_per_connection
        count = 0
        try:
            while True:
                waiting = [answer for answer in waiting if not answer.done()]
                if len(waiting) >= _READ_AHEAD:
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    continue
                count += 1
                ends_after = bool(limit) and count >= limit
                step = await self._one_request(reader, writer, number, previous, ends_after)
                if step is None:
                    break
                previous, more = step
                waiting = [answer for answer in waiting if not answer.done()] + [previous]
                if len(waiting) > 1:
                    with self._cond:
                        self._most_in_flight = max(self._most_in_flight, len(waiting))
                if not more:
                    break
            if previous is not None:
                await previous  # the connection ends once its answers are out
        except BaseException:  # stop(), or the client went away
            for answer in waiting:
                answer.cancel()
            raise

    async def _one_request(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        number: int,
        previous: asyncio.Future[bool] | None,
        ends_after: bool = False,
    ) -> tuple[asyncio.Future[bool], bool] | None:
        """Read one request and start its answer, which waits for ``previous``: the answer
        and whether to read another request; None once the connection is done."""
        try:
            raw = await _read_head(reader)
            if raw is None:
                return None
            head = _parse_head(raw)
        except _HttpError as exc:
            await _after(previous)
            self._record_error(f"connection {number}: {exc.message}")
            await self._answer_error(reader, writer, exc.status, exc.message)
            return None
        arrived = time.monotonic()
        try:
            length = _body_length(head.headers)
        except _HttpError as exc:
            await _after(previous)
            slot = self._add(
                head, b"", None, None, exc.message, Respond(exc.status), number, arrived
            )
            self._finish(slot, exc.status)
            await self._answer_error(reader, writer, exc.status, exc.message)
            return None

        with self._cond:
            behaviour = self._script.popleft() if self._script else self.default
        if head.version == "HTTP/1.1" and head.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        if isinstance(behaviour, Respond) and behaviour.early:
            await _after(previous)
            message = "answered before the body was read"
            slot = self._add(head, b"", None, None, message, behaviour, number, arrived)
            self._finish(slot, behaviour.status)
            body = behaviour.body if behaviour.body is not None else _detail(message)
            headers = [*behaviour.headers.items(), ("Content-Type", "application/json")]
            writer.write(_render(behaviour.status, headers, body, True))
            with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT)
            writer.close()  # the body unread: the kernel resets the connection
            return None

        if isinstance(behaviour, Reset):
            try:
                body = await _read_body(reader, length, max(behaviour.after, 0))
            except _HttpError:
                body = b""
            except asyncio.IncompleteReadError as exc:
                body = exc.partial
            await _after(previous)
            slot = self._add(head, body, None, None, None, behaviour, number, arrived)
            _set_rst(writer)
            writer.transport.abort()
            self._finish(slot, None)
            return None

        try:
            body = await _read_body(reader, length)
        except _HttpError as exc:
            await _after(previous)
            slot = self._add(head, b"", None, None, exc.message, behaviour, number, arrived)
            self._finish(slot, exc.status)
            await self._answer_error(reader, writer, exc.status, exc.message)
            return None
        except asyncio.IncompleteReadError as exc:
            cut = f"the connection closed after {len(exc.partial)} bytes of the body"
            slot = self._add(head, exc.partial, None, None, cut, behaviour, number, arrived)
            self._finish(slot, None)
            return None

        result = await self._decode(head.headers, body)
        slot = self._add(
            head, body, result.decoded, result.envelope, result.error, behaviour, number, arrived
        )
        read = time.monotonic()  # the answer is due ``latency`` after this, as when not pipelined
        answer = asyncio.ensure_future(
            self._carry_out(
                previous, reader, writer, slot, head, behaviour, result, read, ends_after
            )
        )
        ends = isinstance(behaviour, (Hang, Close)) or ends_after or _closes(head, behaviour)
        return answer, not ends

    async def _carry_out(
        self,
        previous: asyncio.Future[bool] | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        slot: _Slot,
        head: _Head,
        behaviour: Behaviour,
        result: Decoded,
        read: float,
        ends_after: bool,
    ) -> bool:
        """The behaviour, once the answers before it are out: whether the connection goes on."""
        if previous is not None and not await previous:
            self._update(slot, error="the connection ended before the answer")
            self._finish(slot, None)
            return False
        if isinstance(behaviour, Hang):
            await asyncio.sleep(max(behaviour.seconds, 0.0))
            writer.close()
            self._finish(slot, None)
            return False
        if isinstance(behaviour, Close):
            writer.close()
            self._finish(slot, None)
            return False
        assert isinstance(behaviour, Respond)
        going = await self._respond(reader, writer, slot, head, behaviour, result, read)
        if going and ends_after:
            await _lingering_close(reader, writer)  # requests behind it: unread, no reset
            return False
        return going

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
        result: Decoded,
        read: float,
    ) -> bool:
        envelope, error = result.envelope, result.error
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
            problem = (result.refusal, error, [])
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
        wait = read + self.latency + delay - time.monotonic()  # from its own reading
        if wait > 0:
            await asyncio.sleep(wait)
        if reader.at_eof() or writer.transport.is_closing():
            self._update(slot, error="the client closed the connection before the answer")
            self._finish(slot, None)
            return False
        accepted = envelope if 200 <= status < 300 else None
        self._finish(slot, status, accepted)  # recorded before the client can see the answer
        try:
            answer = _render(status, headers, body, close, head.method == "HEAD", self.line_end)
            writer.write(answer)
            if writer.transport.get_write_buffer_size():
                await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT)
        except (ConnectionError, asyncio.TimeoutError) as exc:
            self._unfinish(slot, accepted, f"the answer could not be written: {exc!r}")
            writer.transport.abort()
            return False
        if close:
            await _lingering_close(reader, writer)  # pipelined requests behind it: no reset
            return False
        if behaviour.unasked:
            asyncio.get_running_loop().call_later(
                behaviour.unasked_after, self._write_unasked, writer, behaviour.unasked
            )
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


async def _after(previous: asyncio.Future[bool] | None) -> None:
    """Let the answers before this point go out first."""
    if previous is not None:
        await previous


def _closes(head: _Head, behaviour: Behaviour) -> bool:
    """Whether the answer will end the connection (the request or the answer says close)."""
    if not head.keep_alive:
        return True
    headers = behaviour.headers.items() if isinstance(behaviour, Respond) else ()
    return any(name.lower() == "connection" and "close" in value.lower() for name, value in headers)
