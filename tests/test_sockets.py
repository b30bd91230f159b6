"""The blocking stream's deadlines: a plain socket on Linux is blocking with the kernel's
timeouts (one system call per read or write); others keep Python's timeouts."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from sentry_transport.io import sockets
from sentry_transport.io.sockets import SocketStream

KERNEL = sys.platform.startswith("linux")


Silent = tuple[socket.socket, list[socket.socket]]  # the server, what it accepted


@pytest.fixture
def silent() -> Iterator[Silent]:
    """A local server that accepts and then neither reads nor writes."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    accepted: list[socket.socket] = []

    def accept() -> None:  # the one connection a test makes
        try:
            conn, _ = server.accept()
        except OSError:
            return
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server, accepted
    thread.join(10)
    server.close()
    for conn in accepted:
        conn.close()


@contextlib.contextmanager
def connected(server: socket.socket, stream: SocketStream | None = None) -> Iterator[SocketStream]:
    """A stream (a new SocketStream unless given) connected to ``server``; closed after."""
    stream = stream or SocketStream()
    stream.connect("127.0.0.1", server.getsockname()[1], None, "127.0.0.1", time.monotonic() + 5)
    try:
        yield stream
    finally:
        stream.close()


def test_a_plain_socket_uses_the_kernel_s_timeouts_where_it_can(silent: Silent) -> None:
    with connected(silent[0]) as stream:
        assert stream._kernel is KERNEL
        assert (stream._sock.gettimeout() is None) is KERNEL  # blocking, on Linux


def test_a_read_ends_at_its_deadline(silent: Silent) -> None:
    with connected(silent[0]) as stream:
        begun = time.monotonic()
        with pytest.raises(TimeoutError):
            stream.recv(begun + 0.3)
        assert 0.25 <= time.monotonic() - begun < 1.0
        begun = time.monotonic()
        with pytest.raises(TimeoutError):  # a later, shorter deadline is armed again
            stream.recv(begun + 0.1)
        assert time.monotonic() - begun < 0.5


def test_a_write_nobody_reads_ends_at_its_deadline(silent: Silent) -> None:
    with connected(silent[0]) as stream:
        begun = time.monotonic()
        with pytest.raises(TimeoutError):
            for _ in range(1000):  # until the buffers are full
                stream.send(b"x" * 1_000_000, begun + 0.5)
        assert time.monotonic() - begun < 2.0


def test_abort_from_another_thread_ends_a_blocked_read(silent: Silent) -> None:
    with connected(silent[0]) as stream:
        threading.Timer(0.2, stream.abort).start()
        begun = time.monotonic()
        try:
            data = stream.recv(begun + 5.0)
        except OSError:
            data = b""
        assert data == b"" and time.monotonic() - begun < 2.0


def test_without_kernel_timeouts_python_s_are_used(
    silent: Silent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sockets, "_KERNEL_TIMEOUTS", False)
    with connected(silent[0]) as stream:
        assert not stream._kernel and stream._sock.gettimeout()
        with pytest.raises(TimeoutError):
            stream.recv(time.monotonic() + 0.1)


def test_a_deadline_closer_than_the_slack_still_holds(silent: Silent) -> None:
    with connected(silent[0]) as stream:
        begun = time.monotonic()
        with pytest.raises(TimeoutError):
            stream.recv(begun + 0.01)  # the first call on the socket, 10 ms left
        assert time.monotonic() - begun < 0.5


def test_a_write_the_server_reads_slowly_ends_at_its_deadline() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def read_slowly() -> None:
        conn, _ = server.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with conn:
            while not stop.wait(0.05):
                try:
                    conn.recv(4096)  # a little progress now and then
                except OSError:
                    return

    thread = threading.Thread(target=read_slowly, daemon=True)
    thread.start()
    try:
        with connected(server) as stream:
            begun = time.monotonic()
            with pytest.raises(TimeoutError):
                stream.send(b"x" * 8_000_000, begun + 0.5)
            assert time.monotonic() - begun < 1.5  # the whole write's deadline, not a call's
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_the_sync_runtime_keeps_python_s_timeouts(silent: Silent) -> None:
    from sentry_transport.runtime.threads import Inline, Threads

    assert Threads().stream()._may_block is KERNEL
    with connected(silent[0], Inline().stream()) as stream:
        assert not stream._kernel and stream._sock.gettimeout()


# -- unasked: what came on a socket since its last read, asked without waiting --------------

KINDS = ["kernel", "python", "tls"]


@contextlib.contextmanager
def pair(kind: str, exchange: bool = True) -> Iterator[tuple[SocketStream, socket.socket]]:
    """A connected stream of ``kind`` and the server's end of it (TLS with ``exchange``: a
    request and its answer have gone each way, as on a kept-alive connection, so the
    handshake's records, TLS 1.3 session tickets among them, are behind it)."""
    import ssl

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    client_tls = server_tls = None
    if kind == "tls":
        trustme = pytest.importorskip("trustme")
        ca = trustme.CA()
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_tls)
        client_tls = ssl.create_default_context()
        ca.configure_trust(client_tls)
    accepted: list[socket.socket] = []

    def accept() -> None:
        conn, _ = server.accept()
        conn.settimeout(10)
        if server_tls is not None:
            conn = server_tls.wrap_socket(conn, server_side=True)
            if exchange:
                conn.recv(4)
                conn.sendall(b"pong")
        accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    stream = SocketStream(kernel_timeouts=kind == "kernel")
    deadline = time.monotonic() + 10
    stream.connect("127.0.0.1", server.getsockname()[1], client_tls, "127.0.0.1", deadline)
    if kind == "tls" and exchange:
        stream.send(b"ping", deadline)
        assert stream.recv(deadline) == b"pong"
    thread.join(10)
    try:
        assert stream._kernel is (kind == "kernel" and KERNEL)
        yield stream, accepted[0]
    finally:
        stream.close()
        accepted[0].close()
        server.close()


def settled(stream: SocketStream, want: str) -> str:
    """``unasked()`` once it says ``want`` or 2 s have passed (what the server wrote takes a
    moment to arrive)."""
    deadline = time.monotonic() + 2
    while (came := stream.unasked()) != want and time.monotonic() < deadline:
        time.sleep(0.005)
    return came


@pytest.mark.parametrize("kind", KINDS)
def test_unasked_is_nothing_until_bytes_come(kind: str) -> None:
    with pair(kind) as (stream, peer):
        assert stream.unasked() == ""
        peer.sendall(b"HTTP/1.1 200 OK\r\n")  # nobody asked
        assert settled(stream, "data") == "data"


@pytest.mark.parametrize("kind", KINDS)
def test_unasked_tells_the_end_of_the_stream(kind: str) -> None:
    with pair(kind) as (stream, peer):
        assert stream.unasked() == ""
        peer.close()
        assert settled(stream, "end") == "end"


def test_unasked_does_not_wait_on_a_socket_with_a_long_timeout() -> None:
    with pair("python") as (stream, _):
        stream._arm(stream._sock, time.monotonic() + 30)
        start = time.monotonic()
        assert stream.unasked() == ""
        assert time.monotonic() - start < 0.5


def test_unasked_takes_tls_session_tickets_for_nothing() -> None:
    # Right after the handshake the server's TLS 1.3 session tickets may still be unread:
    # records that are not data, which must not make a kept-alive socket look used.
    with pair("tls", exchange=False) as (stream, peer):
        time.sleep(0.2)  # the tickets have arrived
        assert sockets._readable(stream._sock)  # (there is something to read)
        assert stream.unasked() == ""
        assert not sockets._readable(stream._sock)  # (it was read: tickets, no data)
        assert stream.unasked() == ""
        peer.sendall(b"HTTP/1.1 200 OK\r\n")
        assert settled(stream, "data") == "data"
