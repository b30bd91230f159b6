"""The local sink and proxy of sentry_transport.testing, driven by plain http.client and sockets."""

from __future__ import annotations

import datetime
import functools
import gzip
import http.client
import json
import math
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Mapping

import pytest

import sentry_transport.testing.sink as sink_module
from sentry_transport import Envelope, Item, make_transport
from sentry_transport.core import jsonenc
from sentry_transport.core.compress import compress, decompress
from sentry_transport.testing import (
    MAX_DECOMPRESSED,
    MAX_HEAD,
    Close,
    Hang,
    Proxy,
    Received,
    Reset,
    Respond,
    Sink,
)
from sentry_transport.testing._decoding import INLINE_LIMIT, Decoded, decode

pytestmark = pytest.mark.network

AUTH = {"X-Sentry-Auth": "Sentry sentry_version=7, sentry_client=test/1.0, sentry_key=public"}
PATH = "/api/42/envelope/"
_WHEN = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)


def make_envelope(message: str = "hello") -> Envelope:
    return Envelope.for_event({"message": message}, [Item.attachment(b"data", "a.txt")])


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as started:
        yield started


def connect(sink: Sink, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(sink.host, sink.port, timeout=timeout)


def post(
    conn: http.client.HTTPConnection,
    body: bytes,
    headers: dict[str, str] | None = None,
    path: str = PATH,
) -> tuple[int, dict[str, str], bytes]:
    conn.request("POST", path, body, {**AUTH, **(headers or {})})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def post_once(sink: Sink, body: bytes, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    conn = connect(sink)
    try:
        return post(conn, body, **kwargs)  # type: ignore[arg-type]
    finally:
        conn.close()


def raw_request(sink: Sink, body: bytes, extra: str = "", target: str = PATH) -> bytes:
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {sink.host}:{sink.port}\r\n"
        f"X-Sentry-Auth: {AUTH['X-Sentry-Auth']}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


class Raw:
    """A raw client socket that keeps what it received past one response."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.buffer = b""

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, size: int = 65536) -> bytes:
        if self.buffer:
            data, self.buffer = self.buffer[:size], self.buffer[size:]
            return data
        return self.sock.recv(size)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed after {self.buffer!r}"
        self.buffer += chunk

    def until(self, separator: bytes) -> bytes:
        while separator not in self.buffer:
            self._fill()
        data, _, self.buffer = self.buffer.partition(separator)
        return data + separator

    def response(self) -> tuple[bytes, bytes]:
        """One response with a Content-Length: (head, body)."""
        head = self.until(b"\r\n\r\n")[:-4]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return head, body


# -- the basics ------------------------------------------------------------------------------


def test_round_trip_records_and_parses_the_envelope(sink: Sink) -> None:
    envelope = make_envelope()
    status, headers, body = post_once(sink, envelope.serialize())

    assert status == 200
    assert json.loads(body) == {"id": envelope.event_id}
    assert headers["Content-Length"] == str(len(body))
    assert sink.envelopes == [envelope]
    [received] = sink.requests
    assert isinstance(received, Received)
    assert (received.method, received.path, received.status) == ("POST", PATH, 200)
    assert received.headers["x-sentry-auth"] == AUTH["X-Sentry-Auth"]
    assert received.body == received.decoded == envelope.serialize()
    assert received.envelope == envelope
    assert received.error is None
    assert received.behaviour == Respond(200)
    assert sink.dsn == f"http://public@127.0.0.1:{sink.port}/42"
    assert sink.url == f"http://127.0.0.1:{sink.port}"


def test_answer_without_event_id_uses_zeros(sink: Sink) -> None:
    envelope = Envelope({}, [Item(type="session", json={"sid": "x"})])
    status, _, body = post_once(sink, envelope.serialize())
    assert status == 200
    assert json.loads(body) == {"id": "0" * 32}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_compressed_bodies_are_decoded(sink: Sink, encoding: str) -> None:
    raw = make_envelope("compressed " * 50).serialize()
    sent = compress(raw, encoding)
    assert sent != raw
    status, _, _ = post_once(sink, sent, headers={"Content-Encoding": encoding})

    assert status == 200
    [received] = sink.requests
    assert received.body == sent
    assert received.decoded == raw
    assert sink.envelopes == [Envelope.deserialize(raw)]


@pytest.mark.parametrize("json_path", ["orjson", "stdlib"])
def test_zstd_bodies_from_a_transport_decode_in_the_sink(
    sink: Sink, json_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast extra's pair (orjson JSON, zstd body) through a real transport and the sink."""
    pytest.importorskip("zstandard")
    fast = pytest.importorskip("orjson") if json_path == "orjson" else None
    monkeypatch.setattr(jsonenc, "accelerator", fast)
    event = {
        "message": {"formatted": "zstd ✓ " * 400},  # well over the compression threshold
        "extra": {"ratio": math.nan, "huge": 2**70, "by_code": {404: 2}, "when": _WHEN},
    }
    transport = make_transport("sync+" + sink.dsn, compression="zstd")
    transport.capture_envelope(Envelope.for_event(event))
    assert transport.flush(5)
    transport.close(5)
    [received] = sink.requests
    assert received.headers["content-encoding"] == "zstd"
    assert received.error is None and received.envelope is not None
    sent = received.envelope.items[0].json
    assert sent["message"] == event["message"]
    assert sent["extra"] == {
        "ratio": None,
        "huge": 2**70,
        "by_code": {"404": 2},
        "when": "2026-12-01 00:00:00+00:00",
    }


def test_raw_deflate_is_decoded(sink: Sink) -> None:
    raw = make_envelope().serialize()
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    status, _, _ = post_once(
        sink, packer.compress(raw) + packer.flush(), headers={"Content-Encoding": "deflate"}
    )
    assert status == 200
    assert sink.requests[0].decoded == raw


def test_undecodable_body_is_answered_400(sink: Sink) -> None:
    status, _, body = post_once(sink, b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert status == 400
    [received] = sink.requests
    assert received.decoded is None and received.envelope is None
    assert received.error and "gzip" in received.error
    assert received.status == 400
    assert "detail" in json.loads(body)
    assert sink.envelopes == []


def test_bad_envelope_is_answered_400(sink: Sink) -> None:
    status, _, _ = post_once(sink, b"this is not json\n")
    assert status == 400
    [received] = sink.requests
    assert received.envelope is None
    assert received.decoded == b"this is not json\n"
    assert received.error and "not an envelope" in received.error
    assert sink.envelopes == []


def test_keep_alive_serves_many_requests_on_one_connection(sink: Sink) -> None:
    envelopes = [make_envelope(str(i)) for i in range(5)]
    conn = connect(sink)
    try:
        for envelope in envelopes:
            assert post(conn, envelope.serialize())[0] == 200
    finally:
        conn.close()
    assert sink.connections == 1
    assert sink.envelopes == envelopes
    assert {r.connection for r in sink.requests} == {1}


def test_pipelined_requests_are_answered_in_order(sink: Sink) -> None:
    first, second = make_envelope("1"), make_envelope("2")
    with Raw(sink.port) as sock:
        sock.sendall(raw_request(sink, first.serialize()) + raw_request(sink, second.serialize()))
        assert json.loads(sock.response()[1]) == {"id": first.event_id}
        assert json.loads(sock.response()[1]) == {"id": second.event_id}
    assert sink.envelopes == [first, second]


def test_pipelined_requests_wait_out_their_latency_together_in_order() -> None:
    with Sink(latency=0.3) as sink:
        sink.script(Respond(201), Respond(202, delay=0.1), Respond(203))
        with Raw(sink.port) as sock:
            sock.sendall(
                b"".join(raw_request(sink, make_envelope(str(i)).serialize()) for i in (1, 2, 3))
            )
            heads = [sock.response()[0].split(b"\r\n")[0] for _ in range(3)]
        assert heads == [
            b"HTTP/1.1 201 Created",
            b"HTTP/1.1 202 Accepted",
            b"HTTP/1.1 203 Non-Authoritative Information",
        ]
        assert sink.most_in_flight == 3  # all three read before the first was answered
        answered = [request.time for request in sink.requests]
        assert max(answered) - min(answered) < 0.25  # read as they came, not after each answer


def test_answers_per_connection_closes_after_that_many_without_saying_so(sink: Sink) -> None:
    sink.answers_per_connection = 2
    with Raw(sink.port) as sock:
        sock.sendall(
            b"".join(raw_request(sink, make_envelope(str(i)).serialize()) for i in (1, 2, 3))
        )
        heads = [sock.response()[0] for _ in range(2)]
        assert not sock.sock.recv(65536)  # then the end of the stream
    assert all(b"connection: close" not in head.lower() for head in heads)
    assert [request.status for request in sink.requests] == [200, 200]  # the third never read


def test_connection_close_is_honoured(sink: Sink) -> None:
    with Raw(sink.port) as sock:
        sock.sendall(raw_request(sink, make_envelope().serialize(), "Connection: close\r\n"))
        head, _ = sock.response()
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Connection: close" in head
        assert sock.recv(1024) == b""  # the sink closed its end


def test_http_10_without_keep_alive_is_closed(sink: Sink) -> None:
    body = make_envelope().serialize()
    request = raw_request(sink, body).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    with Raw(sink.port) as sock:
        sock.sendall(request)
        assert sock.response()[0].startswith(b"HTTP/1.1 200 ")
        assert sock.recv(1024) == b""


def test_chunked_request_body(sink: Sink) -> None:
    raw = make_envelope().serialize()
    pieces = [raw[:10], raw[10:50], raw[50:]]
    conn = connect(sink)
    try:
        conn.request("POST", PATH, iter(pieces), AUTH, encode_chunked=True)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    finally:
        conn.close()
    [received] = sink.requests
    assert received.headers["transfer-encoding"] == "chunked"
    assert received.body == raw
    assert sink.envelopes == [Envelope.deserialize(raw)]


def test_chunked_body_with_extensions_and_trailers(sink: Sink) -> None:
    raw = make_envelope().serialize()
    chunked = (
        f"{len(raw[:7]):x};name=value\r\n".encode()
        + raw[:7]
        + f"\r\n{len(raw[7:]):X}\r\n".encode()
        + raw[7:]
        + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Sentry-Auth: {AUTH['X-Sentry-Auth']}\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n"
    with Raw(sink.port) as sock:
        sock.sendall(head.encode() + chunked)
        assert sock.response()[0].startswith(b"HTTP/1.1 200 ")
    assert sink.requests[0].body == raw


def test_absolute_form_target_is_accepted(sink: Sink) -> None:
    target = f"http://127.0.0.1:{sink.port}{PATH}?sentry_key=public"
    with Raw(sink.port) as sock:
        sock.sendall(raw_request(sink, make_envelope().serialize(), target=target))
        assert sock.response()[0].startswith(b"HTTP/1.1 200 ")
    [received] = sink.requests
    assert (received.path, received.query, received.target) == (PATH, "sentry_key=public", target)


def test_expect_100_continue(sink: Sink) -> None:
    body = make_envelope().serialize()
    with Raw(sink.port) as sock:
        sock.sendall(
            raw_request(sink, b"", "Expect: 100-continue\r\n").replace(
                b"Content-Length: 0", f"Content-Length: {len(body)}".encode()
            )
        )
        interim = sock.until(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.response()[0].startswith(b"HTTP/1.1 200 ")


def test_large_body(sink: Sink) -> None:
    envelope = Envelope.for_event({"message": "big"}, [Item.attachment(b"x" * 5_000_000, "big")])
    raw = envelope.serialize()
    status, _, _ = post_once(sink, compress(raw, "gzip"), headers={"Content-Encoding": "gzip"})
    assert status == 200
    assert sink.requests[0].decoded == raw
    assert sink.envelopes == [envelope]


# -- scripted behaviours ---------------------------------------------------------------------


def test_scripted_statuses_and_headers_apply_in_order_then_default(sink: Sink) -> None:
    sink.script(
        Respond(429, {"Retry-After": "7", "X-Sentry-Rate-Limits": "60:error:organization"}),
        Respond(500),
        Respond(201, body=b"created"),
    )
    assert sink.pending == 3
    envelopes = [make_envelope(str(i)) for i in range(4)]
    conn = connect(sink)
    try:
        answers = [post(conn, envelope.serialize()) for envelope in envelopes]
    finally:
        conn.close()

    assert [status for status, _, _ in answers] == [429, 500, 201, 200]
    assert answers[0][1]["Retry-After"] == "7"
    assert answers[0][1]["X-Sentry-Rate-Limits"] == "60:error:organization"
    assert answers[2][2] == b"created"
    assert "Content-Type" not in answers[2][1]  # a scripted body is sent as given
    assert answers[1][1]["Content-Type"] == "application/json"
    assert "Retry-After" not in answers[3][1]
    assert [r.status for r in sink.requests] == [429, 500, 201, 200]
    assert sink.envelopes == envelopes[2:]  # only the 2xx ones
    assert sink.pending == 0
    assert sink.connections == 1  # error answers keep the connection


def test_default_behaviour_can_be_changed(sink: Sink) -> None:
    sink.default = Respond(503)
    assert post_once(sink, make_envelope().serialize())[0] == 503
    assert post_once(sink, make_envelope().serialize())[0] == 503
    assert sink.envelopes == []


def test_scripted_connection_close_header_closes(sink: Sink) -> None:
    sink.script(Respond(200, {"Connection": "close"}))
    with Raw(sink.port) as sock:
        sock.sendall(raw_request(sink, make_envelope().serialize()))
        assert b"Connection: close" in sock.response()[0]
        assert sock.recv(1024) == b""


def test_respond_delay(sink: Sink) -> None:
    sink.script(Respond(200, delay=0.3))
    start = time.monotonic()
    assert post_once(sink, make_envelope().serialize())[0] == 200
    assert time.monotonic() - start >= 0.3
    assert len(sink.envelopes) == 1


def test_latency_applies_to_every_answer() -> None:
    with Sink(latency=0.2) as sink:
        for path in (PATH, "/nowhere"):
            start = time.monotonic()
            post_once(sink, make_envelope().serialize(), path=path)
            assert time.monotonic() - start >= 0.2


def test_delayed_answer_to_a_client_that_left_is_not_counted(sink: Sink) -> None:
    sink.script(Respond(200, delay=0.5))
    conn = connect(sink, timeout=0.1)
    with pytest.raises(TimeoutError):
        post(conn, make_envelope().serialize())
    conn.close()
    time.sleep(0.8)
    [received] = sink.requests
    assert received.status is None
    assert received.error and "closed" in received.error
    assert sink.envelopes == []


def test_reset_aborts_with_rst(sink: Sink) -> None:
    sink.script(Reset())
    conn = connect(sink)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        post(conn, make_envelope().serialize())
    conn.close()
    assert sink.wait_for_requests(1)
    [received] = sink.requests
    assert received.status is None
    assert received.behaviour == Reset()
    assert sink.envelopes == []


def test_reset_after_some_bytes(sink: Sink) -> None:
    sink.script(Reset(after=10))
    body = make_envelope().serialize()
    with Raw(sink.port) as sock:
        sock.sendall(raw_request(sink, body))
        with pytest.raises(ConnectionResetError):  # an RST, not an orderly close
            while sock.recv(1024):
                pass
    assert sink.wait_for_requests(1)
    assert sink.requests[0].body == body[:10]
    assert sink.requests[0].status is None


def test_hang_sends_nothing(sink: Sink) -> None:
    sink.script(Hang(2.0))
    conn = connect(sink, timeout=0.3)
    with pytest.raises(TimeoutError):
        post(conn, make_envelope().serialize())
    conn.close()
    assert sink.wait_for_requests(1)
    assert sink.requests[0].status is None
    assert sink.envelopes == []
    # the next connection is served normally
    assert post_once(sink, make_envelope().serialize())[0] == 200


def test_stop_ends_a_hang_promptly() -> None:
    sink = Sink().start()
    sink.script(Hang(30.0))
    with Raw(sink.port) as sock:
        sock.sendall(raw_request(sink, make_envelope().serialize()))
        assert sink.wait_for_requests(1)
        start = time.monotonic()
        sink.stop()
        assert time.monotonic() - start < 3
        assert sock.recv(1024) == b""


def test_close_closes_without_answer(sink: Sink) -> None:
    sink.script(Close())
    conn = connect(sink)
    with pytest.raises(http.client.RemoteDisconnected):
        post(conn, make_envelope().serialize())
    conn.close()
    [received] = sink.requests
    assert received.status is None and received.behaviour == Close()
    assert received.envelope is not None  # it was read and parsed, just not answered
    assert sink.envelopes == []


def test_script_rejects_non_behaviours(sink: Sink) -> None:
    with pytest.raises(TypeError):
        sink.script(200)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Respond(100)


# -- refusals --------------------------------------------------------------------------------


def test_missing_auth_is_401(sink: Sink) -> None:
    conn = connect(sink)
    try:
        conn.request("POST", PATH, make_envelope().serialize())
        response = conn.getresponse()
        response.read()
        assert response.status == 401
    finally:
        conn.close()
    assert sink.requests[0].status == 401
    assert sink.envelopes == []


def test_wrong_key_is_401_and_query_key_is_accepted(sink: Sink) -> None:
    wrong = {"X-Sentry-Auth": "Sentry sentry_version=7, sentry_key=other"}
    assert post_once(sink, make_envelope().serialize(), headers=wrong)[0] == 401
    conn = connect(sink)
    try:
        conn.request("POST", PATH + "?sentry_version=7&sentry_key=public", b"{}\n")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    finally:
        conn.close()
    assert len(sink.envelopes) == 1


@pytest.mark.parametrize("path", ["/api/43/envelope/", "/api/42/store/", "/"])
def test_wrong_path_is_404(sink: Sink, path: str) -> None:
    assert post_once(sink, make_envelope().serialize(), path=path)[0] == 404
    assert sink.requests[0].status == 404
    assert sink.envelopes == []


def test_get_is_405(sink: Sink) -> None:
    conn = connect(sink)
    try:
        conn.request("GET", PATH, headers=AUTH)
        response = conn.getresponse()
        response.read()
        assert response.status == 405
        assert response.getheader("Allow") == "POST"
    finally:
        conn.close()


def test_oversized_head_is_431(sink: Sink) -> None:
    with Raw(sink.port) as sock:
        sock.sendall(raw_request(sink, b"{}", f"X-Big: {'a' * MAX_HEAD}\r\n"))
        assert sock.response()[0].startswith(b"HTTP/1.1 431 ")
    assert sink.requests == []
    assert sink.errors


def test_oversized_body_is_413_without_reading_it(sink: Sink) -> None:
    with Raw(sink.port) as sock:
        sock.sendall(
            raw_request(sink, b"").replace(b"Content-Length: 0", b"Content-Length: 1" + b"0" * 12)
        )
        assert sock.response()[0].startswith(b"HTTP/1.1 413 ")
    assert sink.requests[0].status == 413


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"garbage\r\n\r\n",
        b"POST /api/42/envelope/ HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /api/42/envelope/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/42/envelope/ HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
        b"POST /api/42/envelope/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_requests_are_400_and_the_sink_keeps_serving(
    sink: Sink, request_bytes: bytes
) -> None:
    with Raw(sink.port) as sock:
        sock.sendall(request_bytes)
        assert sock.response()[0].startswith(b"HTTP/1.1 400 ")
    assert post_once(sink, make_envelope().serialize())[0] == 200


def test_client_vanishing_mid_body_is_recorded(sink: Sink) -> None:
    with Raw(sink.port) as sock:
        sock.sendall(raw_request(sink, b"x" * 100)[:-50])
    assert sink.wait_for_requests(1)
    deadline = time.monotonic() + 5
    while sink.requests[0].error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.requests[0].status is None
    assert "50 bytes" in (sink.requests[0].error or "")


# -- hostile bodies --------------------------------------------------------------------------

MiB = 1024 * 1024
BOMB_SIZE = 1024 * MiB  # what each bomb below expands to
GZIP = {"Content-Encoding": "gzip"}


@functools.cache
def zero_bomb(encoding: str, size: int = BOMB_SIZE) -> bytes:
    """``size`` zero bytes (whole MiB) compressed with ``encoding``, built without holding them.

    gzip and raw deflate repeat one flushed block: after Z_FULL_FLUSH the compressor starts
    afresh, so every further MiB of zeros compresses to the same bytes. br and zstd stream
    the zeros through their compressors a MiB at a time.
    """
    block = bytes(MiB)
    count = size // MiB
    if encoding in ("gzip", "deflate"):
        wbits = 31 if encoding == "gzip" else -15
        packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
        first = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
        again = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
        end = packer.flush()  # the last block, then (gzip) a trailer for 2 MiB
        if encoding == "gzip":
            crc = 0
            for _ in range(count):
                crc = zlib.crc32(block, crc)
            end = end[:-8] + struct.pack("<II", crc, size & 0xFFFFFFFF)
        return first + again * (count - 1) + end
    if encoding == "br":
        brotli = pytest.importorskip("brotli")
        compressor = brotli.Compressor(quality=1)
        parts = [compressor.process(block) for _ in range(count)]
        return b"".join([*parts, compressor.finish()])
    zstandard = pytest.importorskip("zstandard")
    stream = zstandard.ZstdCompressor(level=1).compressobj()
    parts = [stream.compress(block) for _ in range(count)]
    return b"".join([*parts, stream.flush()])


def test_zero_bomb_helper_builds_valid_streams() -> None:
    for encoding in ("gzip", "deflate", "br", "zstd"):
        assert decompress(zero_bomb(encoding, 3 * MiB), encoding) == bytes(3 * MiB), encoding
    assert gzip.decompress(zero_bomb("gzip", 3 * MiB)) == bytes(3 * MiB)  # CRC and size


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    assert match, field
    return int(match.group(1))


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # Linux: VmHWM starts again from the current RSS
    except OSError:
        return False
    return True


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_decompression_bomb_is_refused_413_quickly_with_bounded_memory(encoding: str) -> None:
    bomb = zero_bomb(encoding)
    assert len(bomb) < 2 * MiB
    limit = 8 * MiB  # above what the loop decodes itself, so the worker thread is used
    measure = sys.platform == "linux" and reset_peak_rss()
    before = rss_kib("VmRSS") if measure else 0
    with Sink(max_decompressed=limit) as sink:
        conn = connect(sink)
        try:
            started = time.monotonic()
            status, _, body = post(conn, bomb, {"Content-Encoding": encoding})
            elapsed = time.monotonic() - started
            assert status == 413
            assert (
                json.loads(body)["detail"] == f"{encoding} body decodes to more than {limit} bytes"
            )
            # the body was read whole, so the connection goes on serving
            assert post(conn, make_envelope().serialize())[0] == 200
        finally:
            conn.close()
        first, second = sink.requests
    assert elapsed < 5.0  # bounded work; expanding the whole GiB takes seconds and a GiB
    assert (first.status, first.decoded, first.envelope) == (413, None, None)
    assert first.body == bomb
    assert first.error == f"{encoding} body decodes to more than {limit} bytes"
    assert second.status == 200 and len(sink.envelopes) == 1
    if measure:
        grown = (rss_kib("VmHWM") - before) * 1024
        assert grown < 64 * MiB, f"peak RSS grew by {grown // MiB} MiB"


def test_default_decompressed_limit_is_relays() -> None:
    assert 200 * MiB == MAX_DECOMPRESSED
    assert Sink().max_decompressed == MAX_DECOMPRESSED
    with pytest.raises(ValueError, match="max_decompressed"):
        Sink(max_decompressed=-1)


def test_limit_applies_to_plain_bodies_and_to_each_coding() -> None:
    small = make_envelope().serialize()
    big = make_envelope("x" * 3000).serialize()
    with Sink(max_decompressed=len(big) - 1) as sink:
        assert post_once(sink, small)[0] == 200
        status, _, body = post_once(sink, big)
        assert status == 413 and "over" in json.loads(body)["detail"]
        layered = compress(compress(big, "gzip"), "br")
        status, _, _ = post_once(sink, layered, headers={"Content-Encoding": "gzip, br"})
        assert status == 413
        assert [r.status for r in sink.requests] == [200, 413, 413]
        assert "gzip body decodes to more than" in (sink.requests[2].error or "")


def test_scripted_failures_still_apply_to_an_oversized_body() -> None:
    with Sink(max_decompressed=1000) as sink:
        sink.script(Respond(503))
        status, _, _ = post_once(sink, compress(bytes(5000), "gzip"), headers=GZIP)
        assert status == 503  # like an undecodable body: only a 2xx answer is replaced
        assert "more than 1000 bytes" in (sink.requests[0].error or "")


def test_large_bodies_are_decoded_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    threads: list[str] = []

    def held_decode(headers: Mapping[str, str], body: bytes, limit: int) -> Decoded:
        threads.append(threading.current_thread().name)
        if limit > INLINE_LIMIT:  # only the worker thread's pass is held
            entered.set()
            assert release.wait(10)
        return decode(headers, body, limit)

    monkeypatch.setattr(sink_module, "decode", held_decode)
    big = Envelope.for_event({"message": "big"}, [Item.attachment(bytes(3 * MiB), "zeros")])
    answers: list[int] = []
    with Sink() as sink:
        sender = threading.Thread(
            target=lambda: answers.append(
                post_once(sink, compress(big.serialize(), "gzip"), headers=GZIP)[0]
            )
        )
        sender.start()
        try:
            assert entered.wait(5)
            # the big body is held mid-decode; another connection is served meanwhile
            assert post_once(sink, make_envelope().serialize())[0] == 200
            assert answers == [] and len(sink.envelopes) == 1
        finally:
            release.set()
            sender.join(10)
        assert answers == [200]
        assert sink.envelopes[-1] == big
    assert threads[0] == "sentry-transport-sink"  # the first, capped pass ran on the loop
    assert threads[1].startswith("sentry-transport-sink-decode")


# -- lifecycle and helpers -------------------------------------------------------------------


def test_wait_for_and_clear(sink: Sink) -> None:
    assert not sink.wait_for(1, timeout=0.05)
    post_once(sink, make_envelope().serialize())
    assert sink.wait_for(1, timeout=1)
    assert sink.wait_for_requests(1, timeout=1)
    sink.clear()
    assert sink.envelopes == [] and sink.requests == []
    assert sink.connections == 1


def test_start_is_idempotent_and_restart_keeps_the_port() -> None:
    sink = Sink()
    with pytest.raises(RuntimeError):
        _ = sink.dsn
    assert sink.start() is sink
    assert sink.start() is sink
    port = sink.port
    sink.stop()
    sink.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with sink:
        assert sink.port == port
        assert post_once(sink, make_envelope().serialize())[0] == 200
    assert not sink.running


def test_binding_a_used_port_fails_at_start(sink: Sink) -> None:
    with pytest.raises(OSError):
        Sink(port=sink.port).start()


def test_sentry_sink_fixture(sentry_sink: Sink) -> None:
    assert sentry_sink.running
    assert post_once(sentry_sink, make_envelope().serialize())[0] == 200
    assert sentry_sink.wait_for(1)


def test_the_package_imports_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"  # makes `import pytest` fail
        "import sentry_transport.testing as t\n"
        "print(hasattr(t, 'sentry_sink'), sorted(t.__all__))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    fixture, names = result.stdout.split(" ", 1)
    assert fixture == "False"
    for name in ("MAX_BODY", "MAX_HEAD", "Behaviour", "Close", "Hang", "Proxy", "Received"):
        assert repr(name) in names
    for name in ("Reset", "Respond", "Sink", "main", "MAX_DECOMPRESSED"):
        assert repr(name) in names


def test_tls() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with Sink(ssl_context=server_context) as sink:
        assert sink.dsn.startswith("https://public@127.0.0.1:")
        conn = http.client.HTTPSConnection(sink.host, sink.port, context=client_context, timeout=5)
        try:
            assert post(conn, make_envelope().serialize())[0] == 200
            assert post(conn, make_envelope().serialize())[0] == 200
        finally:
            conn.close()
        assert len(sink.envelopes) == 2 and sink.connections == 1


def test_ipv6() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with Sink(host="::1") as sink:
        assert sink.dsn == f"http://public@[::1]:{sink.port}/42"
        conn = http.client.HTTPConnection("::1", sink.port, timeout=5)
        try:
            assert post(conn, make_envelope().serialize())[0] == 200
        finally:
            conn.close()


# -- the proxy -------------------------------------------------------------------------------


def test_proxy_connect_tunnel(sink: Sink) -> None:
    envelope = make_envelope()
    with Proxy() as proxy, Raw(proxy.port) as sock:
        target = f"127.0.0.1:{sink.port}"
        sock.sendall(
            f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
            "Proxy-Authorization: Basic dXNlcjpwdw==\r\n\r\n".encode()
        )
        established = sock.until(b"\r\n\r\n")
        assert established.startswith(b"HTTP/1.1 200 ")
        for _ in range(2):  # keep-alive through the tunnel
            sock.sendall(raw_request(sink, envelope.serialize()))
            assert sock.response()[0].startswith(b"HTTP/1.1 200 ")
        assert proxy.seen == [f"CONNECT {target}"]
        assert proxy.auth == ["Basic dXNlcjpwdw=="]
    assert sink.envelopes == [envelope, envelope]
    assert sink.connections == 1


def test_proxy_connect_with_http_client_tunnel(sink: Sink) -> None:
    with Proxy() as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        conn.set_tunnel("127.0.0.1", sink.port)
        try:
            assert post(conn, make_envelope().serialize())[0] == 200
        finally:
            conn.close()
        assert proxy.seen == [f"CONNECT 127.0.0.1:{sink.port}"]
        assert proxy.auth == [None]


def test_proxy_forwards_absolute_form(sink: Sink) -> None:
    envelope = make_envelope()
    url = f"http://127.0.0.1:{sink.port}{PATH}"
    with Proxy() as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        try:
            status, headers, body = post(
                conn, envelope.serialize(), headers={"Proxy-Authorization": "Basic abc"}, path=url
            )
        finally:
            conn.close()
        assert status == 200
        assert json.loads(body) == {"id": envelope.event_id}
        assert headers["Connection"] == "close"
        assert proxy.seen == [f"POST {url}"]
        assert proxy.auth == ["Basic abc"]
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"
    [received] = sink.requests
    assert received.target == PATH
    assert "proxy-authorization" not in received.headers
    assert sink.envelopes == [envelope]


def test_proxy_relays_error_answers(sink: Sink) -> None:
    sink.script(Respond(429, {"Retry-After": "3"}))
    with Proxy() as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        try:
            status, headers, _ = post(conn, b"{}\n", path=f"http://127.0.0.1:{sink.port}{PATH}")
        finally:
            conn.close()
    assert (status, headers["Retry-After"]) == (429, "3")


@pytest.mark.parametrize(
    "request_line",
    ["CONNECT example.com:443 HTTP/1.1", "POST http://10.0.0.1:80/api/42/envelope/ HTTP/1.1"],
)
def test_proxy_refuses_non_local_targets(request_line: str) -> None:
    with Proxy() as proxy, Raw(proxy.port) as sock:
        sock.sendall(f"{request_line}\r\nContent-Length: 0\r\n\r\n".encode())
        assert sock.response()[0].startswith(b"HTTP/1.1 403 ")


def test_proxy_unreachable_target_is_502() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound but not listening: connections are refused
        with (
            Proxy() as proxy,
            Raw(proxy.port) as sock,
        ):
            sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            assert sock.response()[0].startswith(b"HTTP/1.1 502 ")


def test_proxy_require_auth() -> None:
    with Proxy(require_auth="Basic good") as proxy:
        with Raw(proxy.port) as sock:
            sock.sendall(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nProxy-Authorization: Basic bad\r\n\r\n")
            head, _ = sock.response()
        assert head.startswith(b"HTTP/1.1 407 ")
        assert b"Proxy-Authenticate: Basic" in head
        assert proxy.auth == ["Basic bad"]


# -- the command line ------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sentry_transport.testing", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_quiet_prints_the_dsn_and_stops_on_sigterm() -> None:
    process = run_cli("--quiet", "--port", "0")
    try:
        assert process.stdout is not None
        dsn = process.stdout.readline().strip()
        assert dsn.startswith("http://public@127.0.0.1:") and dsn.endswith("/42")
        port = int(dsn.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            assert post(conn, make_envelope().serialize())[0] == 200
        finally:
            conn.close()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert out == ""  # nothing after the DSN line


def test_cli_prints_a_line_per_envelope() -> None:
    process = run_cli("--port", "0")
    try:
        assert process.stdout is not None
        dsn = process.stdout.readline().strip()
        port = int(dsn.rsplit(":", 1)[1].split("/")[0])
        envelope = make_envelope()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            assert post(conn, envelope.serialize())[0] == 200
        finally:
            conn.close()
        line = process.stdout.readline().split()
        assert line == [str(envelope.event_id), "event,attachment", "200"]
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err


def test_cli_rejects_a_host_name() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sentry_transport.testing", "--host", "localhost"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "IP address" in result.stderr
