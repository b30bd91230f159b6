"""The lean benchmark server (``sentry_transport.testing.lean``), over raw sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import gzip
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from sentry_transport import Envelope, Item, make_transport
from sentry_transport.testing import MAX_HEAD
from sentry_transport.testing.lean import MAX_LEAN_BODY, LeanServer

pytestmark = pytest.mark.network

TIMEOUT = 10.0


@pytest.fixture
def server() -> Iterator[LeanServer]:
    with LeanServer() as lean:
        yield lean


def post(body: bytes = b"{}", *, path: str = "/api/42/envelope/", key: str = "public") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Sentry-Auth: Sentry sentry_key={key}, "
    head += f"sentry_version=7\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def connect(server: LeanServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)


def answers(sock: socket.socket, count: int) -> list[tuple[int, bytes, bytes]]:
    """Read ``count`` answers: (status, head, body) each, in the order they came."""
    got: list[tuple[int, bytes, bytes]] = []
    buf = b""
    while len(got) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end]
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(buf) >= end + 4 + length:
                got.append((int(head.split(b" ")[1]), head, buf[end + 4 : end + 4 + length]))
                buf = buf[end + 4 + length :]
                continue
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"closed after {len(got)} answers")
        buf += data
    return got


def closed(sock: socket.socket) -> bool:
    """Whether the server ends the connection (EOF) within the timeout, input ignored."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
    return False


def test_pipelined_requests_are_answered_in_order(server: LeanServer) -> None:
    with connect(server) as sock:
        sock.sendall(post(b"a" * 10) + post(path="/nope") + post(key="wrong") + post(b"b" * 5))
        got = answers(sock, 4)
    assert [status for status, _, _ in got] == [200, 404, 401, 200]
    assert got[0][2].startswith(b'{"id":"') and len(got[0][2]) == 41
    assert server.requests == 4
    assert server.statuses == {200: 2, 404: 1, 401: 1}


def test_latency_runs_concurrently_for_pipelined_requests() -> None:
    with LeanServer(latency=0.3) as server, connect(server) as sock:
        started = time.monotonic()
        sock.sendall(post() * 8)
        got = answers(sock, 8)
        took = time.monotonic() - started
    assert [status for status, _, _ in got] == [200] * 8
    assert 0.28 <= took < 1.0  # about one latency, not eight


def test_latency_applies_from_each_request() -> None:
    with LeanServer(latency=0.3) as server, connect(server) as sock:
        started = time.monotonic()
        sock.sendall(post())
        time.sleep(0.15)
        sock.sendall(post())
        answers(sock, 1)
        first = time.monotonic() - started
        answers(sock, 1)
        second = time.monotonic() - started
    assert 0.28 <= first < 0.42 and 0.43 <= second < 0.7


def test_key_in_the_query_and_wrong_key(server: LeanServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /api/7/envelope/?sentry_key=public HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendall(
            b"POST /api/7/envelope/?sentry_key=other HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendall(b"POST /api/7/envelope/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert [status for status, _, _ in answers(sock, 3)] == [200, 401, 401]


@pytest.mark.parametrize(
    ("auth", "status"),
    [
        ("Sentry sentry_version=7, sentry_key=public", 200),
        ("sentry_key=public", 200),
        ("Sentry sentry_key = public ,sentry_client=x", 200),
        ("Sentry sentry_key=publicx", 401),
        ("Sentry other_sentry_key=public", 401),
    ],
)
def test_auth_header_forms(server: LeanServer, auth: str, status: int) -> None:
    with connect(server) as sock:
        sock.sendall(f"POST /api/1/envelope/ HTTP/1.1\r\nX-Sentry-Auth: {auth}\r\n\r\n".encode())
        assert answers(sock, 1)[0][0] == status


def test_unknown_path_and_wrong_method(server: LeanServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /api/42/envelope/ HTTP/1.1\r\n\r\n")
        sock.sendall(b"POST /api/42/store/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n" + post())
        assert [status for status, _, _ in answers(sock, 4)] == [405, 404, 404, 200]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /api/42/envelope/\r\n\r\n",
        b"POST /api/42/envelope/ HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /api/42/envelope/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/42/envelope/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /api/42/envelope/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /api/42/envelope/ HTTP/2.0\r\n\r\n",
    ],
)
def test_malformed_requests_get_400_and_a_close(server: LeanServer, request_bytes: bytes) -> None:
    with connect(server) as sock:
        sock.sendall(post() + request_bytes + post())
        got = answers(sock, 2)
        assert [status for status, _, _ in got] == [200, 400]
        assert b"Connection: close" in got[1][1]
        assert closed(sock)


def test_too_big_content_length_gets_413(server: LeanServer) -> None:
    with connect(server) as sock:
        head = f"POST /api/42/envelope/ HTTP/1.1\r\nContent-Length: {MAX_LEAN_BODY + 1}\r\n\r\n"
        sock.sendall(head.encode() + b"x" * 1000)
        ((status, head_bytes, _),) = answers(sock, 1)
        assert status == 413 and b"Connection: close" in head_bytes
        assert closed(sock)


def test_huge_head_gets_431(server: LeanServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /api/42/envelope/ HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD + 10))
        ((status, _, _),) = answers(sock, 1)
        assert status == 431
        assert closed(sock)


def test_chunked_body_is_decoded_and_counted(server: LeanServer) -> None:
    head = (
        b"POST /api/42/envelope/?sentry_key=public HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    with connect(server) as sock:
        for i in range(0, len(head + body), 7):  # in small pieces
            sock.sendall((head + body)[i : i + 7])
        sock.sendall(post(b"12345"))
        assert [status for status, _, _ in answers(sock, 2)] == [200, 200]
    assert server.body_bytes == 11 + 5


@pytest.mark.parametrize(
    ("chunks", "status"),
    [(b"3\r\nabcXY\r\n0\r\n\r\n", 400), (b"fffffffff\r\n", 413), (b"-1\r\n", 400)],
)
def test_bad_chunked_bodies(server: LeanServer, chunks: bytes, status: int) -> None:
    head = b"POST /api/42/envelope/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(head + chunks)
        assert answers(sock, 1)[0][0] == status
        assert closed(sock)


def test_chunked_bodies_pipelined_with_latency() -> None:
    head = b"POST /api/42/envelope/?sentry_key=public HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
    with LeanServer(latency=0.2) as server, connect(server) as sock:
        started = time.monotonic()
        sock.sendall((head + b"\r\n2\r\nab\r\n0\r\n\r\n") * 5)
        assert [status for status, _, _ in answers(sock, 5)] == [200] * 5
        assert time.monotonic() - started < 0.6
    assert server.body_bytes == 10


def test_keep_alive_reuses_one_connection(server: LeanServer) -> None:
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(post(b"x" * 100))
            assert answers(sock, 1)[0][0] == 200
    deadline = time.monotonic() + TIMEOUT
    while server.stats()["open"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = server.stats()
    assert stats["connections"] == 1 and stats["per_connection"] == [(3, 300)]
    assert stats["requests"] == 3 and stats["body_bytes"] == 300


def test_big_body_in_many_pieces(server: LeanServer) -> None:
    body = b"z" * 3_000_000
    with connect(server) as sock:
        sock.sendall(post(body) + post())
        assert [status for status, _, _ in answers(sock, 2)] == [200, 200]
    assert server.body_bytes == len(body) + 2


@pytest.mark.parametrize(
    ("version", "connection"), [("HTTP/1.1", "Connection: close\r\n"), ("HTTP/1.0", "")]
)
def test_connection_close_is_honoured(server: LeanServer, version: str, connection: str) -> None:
    request = f"POST /api/42/envelope/?sentry_key=public {version}\r\n{connection}"
    with connect(server) as sock:
        sock.sendall(request.encode() + b"Content-Length: 2\r\n\r\n{}" + post())
        ((status, head, _),) = answers(sock, 1)
        assert status == 200 and b"Connection: close" in head
        assert closed(sock)
    assert server.requests == 1  # the request after the close was not read


def test_client_that_does_not_read_does_not_stall_others(server: LeanServer) -> None:
    with connect(server) as greedy, connect(server) as other:
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.settimeout(0.5)
        with pytest.raises(OSError):  # the server stops reading; our send buffer fills
            for _ in range(100_000):
                greedy.sendall(post() * 100)
        other.sendall(post())
        assert answers(other, 1)[0][0] == 200


def test_make_transport_delivers_200_envelopes(server: LeanServer) -> None:
    transport = make_transport(server.dsn)
    try:
        for i in range(200):
            payload = b'{"message":"m%d","level":"info"}' % i
            transport.capture_envelope(Envelope({}, [Item(type="event", payload=payload)]))
        assert transport.flush(TIMEOUT)
        assert transport.stats()["events"]["delivered"] == 200
    finally:
        transport.close()


def test_sentry_sdk_http_transport_delivers(server: LeanServer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sentry_sdk.consts import DEFAULT_OPTIONS
        from sentry_sdk.envelope import Envelope as SdkEnvelope
        from sentry_sdk.transport import HttpTransport

    transport = HttpTransport(dict(DEFAULT_OPTIONS, dsn=server.dsn))
    try:
        for i in range(5):
            envelope = SdkEnvelope(headers={"event_id": f"{i:032x}"})
            envelope.add_event({"event_id": f"{i:032x}", "message": "x" * 5000})
            transport.capture_envelope(envelope)
        transport.flush(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while server.statuses[200] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        transport.kill()
    assert server.statuses == {200: 5}
    assert 0 < server.body_bytes < 5 * 5000  # compressed bodies, counted as sent


def test_gzip_body_is_not_decompressed(server: LeanServer) -> None:
    body = gzip.compress(b"a" * 100_000)
    with connect(server) as sock:
        sock.sendall(post(body)[:-2])  # all but the body's last two bytes
        time.sleep(0.1)
        sock.sendall(body[-2:])
        assert answers(sock, 1)[0][0] == 200
    assert server.body_bytes == len(body)


class Run:
    """A command-line server: its process, DSN and port; ``out``, what else it printed."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.dsn = process.stdout.readline().strip()
        self.port = int(self.dsn.rsplit(":", 1)[1].split("/")[0])
        self.out = ""


@contextlib.contextmanager
def command_line(*options: str, stop: int = signal.SIGTERM) -> Iterator[Run]:
    """``python -m sentry_transport.testing --lean --port 0 *options``, stopped by ``stop`` at
    the end; it must exit 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sentry_transport.testing", "--lean", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run = Run(process)
        yield run
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=TIMEOUT)
    run.out = out
    assert process.returncode == 0, err


def test_command_line_lean() -> None:
    with command_line() as run:
        assert run.dsn.startswith("http://public@127.0.0.1:") and run.dsn.endswith("/42")
        with socket.create_connection(("127.0.0.1", run.port), timeout=TIMEOUT) as sock:
            sock.sendall(post(b"abc") * 2)
            assert len(answers(sock, 2)) == 2
        assert run.process.stdout.readline().split() == ["count", "2", "2", "6"]


def test_lean_rejects_bad_latency() -> None:
    with pytest.raises(ValueError):
        LeanServer(latency=-1)


@pytest.mark.parametrize("latency", [0.0, 0.2])
def test_half_closed_client_still_gets_its_answers(latency: float) -> None:
    with LeanServer(latency=latency) as server, connect(server) as sock:
        sock.sendall(post() * 3 + b"POST /api/42/envelope/ HTTP/1.1\r\nbad\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert [status for status, _, _ in answers(sock, 4)] == [200, 200, 200, 400]
        assert closed(sock)


def test_http_1_0_keep_alive_is_kept(server: LeanServer) -> None:
    request = b"POST /api/42/envelope/?sentry_key=public HTTP/1.0\r\nConnection: keep-alive\r\n"
    with connect(server) as sock:
        sock.sendall(request + b"Content-Length: 0\r\n\r\n" + post())
        assert [status for status, _, _ in answers(sock, 2)] == [200, 200]


def test_command_line_lean_quiet_with_latency() -> None:
    options = ("--quiet", "--latency", "0.05", "--public-key", "k", "--project-id", "9")
    with command_line(*options, stop=signal.SIGINT) as run:
        assert run.dsn.startswith("http://k@127.0.0.1:") and run.dsn.endswith("/9")
        with socket.create_connection(("127.0.0.1", run.port), timeout=TIMEOUT) as sock:
            sock.sendall(post(key="k", path="/api/9/envelope/") + post())
            assert [status for status, _, _ in answers(sock, 2)] == [200, 401]
    assert run.out == ""  # quiet: nothing after the DSN
