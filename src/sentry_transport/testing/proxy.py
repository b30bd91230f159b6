"""``Proxy``: a small HTTP proxy on a local port, for testing transports' proxy support.

How it works: every client connection carries one request. ``CONNECT host:port`` opens a
connection to that port and, after ``200 Connection established``, copies bytes both ways
until each side has finished (so TLS runs through it untouched). A request with an
absolute ``http://`` target is read whole, sent to the target on a fresh connection with
``Connection: close`` and without hop-by-hop headers, and the answer is relayed back before
the client connection is closed. Only 127.0.0.1 and ::1 are reachable through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from ._http import (
    _DIGITS,
    MAX_HEAD,
    _body_length,
    _Head,
    _HttpError,
    _lingering_close,
    _parse_head,
    _read_body,
    _read_head,
    _render,
)
from ._server import _ServerThread

__all__ = ["Proxy"]

_PROXY_TIMEOUT = 60.0
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
