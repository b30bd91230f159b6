"""The HTTP/1.1 connection's pipelining, driven with bytes: a scripted stream stands for the
server (what each socket answers, in chunks), a list for the clock; no sockets, no sleeps."""

from __future__ import annotations

from collections import deque
from typing import Any

from sentry_transport.core.connection import HttpConnection
from sentry_transport.core.dsn import Dsn
from sentry_transport.core.errors import HttpProtocolError
from sentry_transport.core.http11 import Response, StaleConnection
from sentry_transport.core.pipelining import Pipelining
from sentry_transport.core.request import Request
from sentry_transport.io.sockets import run

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
LIMITED = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nContent-Length: 0\r\n\r\n"


class Server:
    """A stream whose sockets answer from a script: one list of chunks (bytes, or an
    exception to raise) per socket; an exhausted list is the end of the stream."""

    def __init__(self, *sockets: list[Any]) -> None:
        self.sockets = deque(sockets)
        self.current: deque[Any] = deque()
        self.log: list[str] = []  # "connect", "send 3" (requests in one write), "recv", ...
        self.deadlines: list[float] = []  # of each recv
        # what ``unasked`` says, one per call (then ""; logged when not ""): a socket's
        # ending that the client has not seen yet (the stale keep-alive race) is "" too
        self.came: deque[str] = deque()

    def connect(self, host: str, port: int, tls: Any, name: str, deadline: float) -> None:
        self.log.append("connect")
        self.current = deque(self.sockets.popleft())

    def send(self, data: bytes, deadline: float) -> None:
        self.log.append(f"send {data.count(b'POST ')}")

    def recv(self, deadline: float) -> bytes:
        self.log.append("recv")
        self.deadlines.append(deadline)
        chunk = self.current.popleft() if self.current else b""
        if isinstance(chunk, BaseException):
            raise chunk
        return bytes(chunk)

    def unasked(self) -> str:
        came = self.came.popleft() if self.came else ""
        if came:
            self.log.append(f"unasked: {came}")
        return came

    def close(self) -> None:
        self.log.append("close")

    def abort(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


DSN = Dsn.parse("http://public@127.0.0.1:9/42")


def requests(count: int) -> list[Request]:
    return [
        Request(DSN.envelope_url, DSN.envelope_path, (("Content-Length", "1"),), b"x", 1, None)
        for _ in range(count)
    ]


def connection(server: Server, depth: int = 4, proven: bool = True) -> HttpConnection:
    shared = Pipelining(depth)
    shared.proven = proven
    return HttpConnection(DSN, server, pipelining=shared, clock=Clock())


def send_all(conn: HttpConnection, count: int, proceed: Any = None) -> list[Any]:
    outcomes = run(conn.pipeline(requests(count), 5.0, 0.0, proceed or (lambda r: True)))
    return [result.status if isinstance(result, Response) else type(result) for result in outcomes]


def test_several_go_out_in_one_write_and_answers_are_read_in_order_from_one_read() -> None:
    server = Server([OK * 3 + LIMITED])
    conn = connection(server)
    assert send_all(conn, 4) == [200, 200, 200, 429]
    assert server.log == ["connect", "send 4", "recv"]  # the bytes past one answer: the next
    assert conn.open and conn.pipelining.depth == 4


def test_the_window_is_topped_up_once_half_of_it_is_answered() -> None:
    server = Server([OK] * 7)
    assert send_all(connection(server, depth=4), 7) == [200] * 7
    assert server.log == [
        "connect", "send 4", "recv", "recv", "send 2", "recv", "recv", "send 1", *["recv"] * 3
    ]  # fmt: skip


def test_a_new_socket_sends_one_alone_until_a_keep_alive_answer_unless_proven() -> None:
    server = Server([OK, OK * 3])
    conn = connection(server, depth=4, proven=False)
    assert send_all(conn, 4) == [200] * 4
    assert server.log == ["connect", "send 1", "recv", "send 3", "recv"]
    assert conn.pipelining.proven  # a request written behind another came back


def test_a_new_socket_fills_its_window_once_another_socket_got_a_keep_alive_answer() -> None:
    server = Server([OK], [OK * 4])
    shared = Pipelining(4)
    first = HttpConnection(DSN, server, pipelining=shared, clock=Clock())
    assert send_all(first, 1) == [200]
    assert shared.kept_alive and not shared.proven
    second = HttpConnection(DSN, server, pipelining=shared, clock=Clock())
    assert send_all(second, 4) == [200] * 4
    assert server.log == ["connect", "send 1", "recv", "connect", "send 4", "recv"]


def test_an_answer_to_a_request_alone_is_timed_as_soon_as_it_is_read() -> None:
    server = Server([OK, OK * 3])
    conn = connection(server, depth=4, proven=False)
    seen: list[str] = []
    run(conn.pipeline(requests(4), 5.0, 0.0, lambda r: not seen.append("answer"), seen.append))
    # each timing before its answer is handed on; the first of a write with nothing ahead of
    # it on the socket is timed, those behind it are not
    assert seen == [0.0, "answer", 0.0, "answer", "answer", "answer"]


def test_a_server_closing_after_one_answer_gets_the_rest_again_and_one_at_a_time() -> None:
    # The first socket answers one of three pipelined requests, then ends the stream.
    server = Server([OK], [OK, OK])
    conn = connection(server, depth=4)
    assert send_all(conn, 3) == [200, 200, 200]
    assert conn.pipelining.depth == 1
    assert conn.pipelining.refused == "the server closed the connection after one answer"
    assert server.log == [
        "connect", "send 3", "recv", "recv", "close",  # 2 and 3 unanswered: sent again
        "connect", "send 1", "recv", "send 1", "recv",  # one at a time (the second socket
    ]  # fmt: skip


def test_connection_close_after_several_answers_moves_on_without_refusing() -> None:
    # nginx's keepalive_requests: the Nth answer says close; the rest go on a new socket.
    server = Server([OK + CLOSE], [OK * 2])
    conn = connection(server, depth=4)
    assert send_all(conn, 4) == [200] * 4
    assert conn.pipelining.depth == 4 and conn.pipelining.refused is None
    assert server.log == ["connect", "send 4", "recv", "close", "connect", "send 2", "recv"]


def test_one_answer_with_connection_close_and_requests_outstanding_refuses() -> None:
    server = Server([CLOSE], [OK], [OK])
    conn = connection(server, depth=4)
    assert send_all(conn, 3) == [200] * 3
    assert conn.pipelining.depth == 1


def test_a_stall_mid_pipeline_fails_that_request_leaves_the_rest_and_refuses() -> None:
    server = Server([OK, TimeoutError("timed out")])
    conn = connection(server, depth=4)
    assert send_all(conn, 4) == [200, TimeoutError]  # 3 and 4: no answer (given back)
    assert conn.pipelining.depth == 1 and not conn.open
    assert "no good answer" in (conn.pipelining.refused or "")


def test_a_malformed_answer_behind_another_refuses() -> None:
    server = Server([OK + b"garbage\r\n\r\n"])
    conn = connection(server, depth=4)
    assert send_all(conn, 2) == [200, HttpProtocolError]
    assert conn.pipelining.depth == 1


def test_a_timeout_on_a_request_alone_is_a_hang_not_a_refusal() -> None:
    server = Server([TimeoutError("timed out")])
    conn = connection(server, depth=4)
    assert send_all(conn, 1) == [TimeoutError]
    assert conn.pipelining.depth == 4


def test_a_fresh_socket_closed_before_any_answer_is_an_error_for_the_first() -> None:
    server = Server([])
    assert send_all(connection(server), 3) == [StaleConnection]


def test_a_stale_keep_alive_socket_resends_the_whole_pipeline_once() -> None:
    server = Server([OK], [OK * 3])  # the first socket ends after its answer
    conn = connection(server)
    assert send_all(conn, 1) == [200]  # the socket stays open, idle
    server.log.clear()
    conn.clock.now += 3.0  # type: ignore[union-attr]
    assert send_all(conn, 3) == [200] * 3
    assert server.log == ["send 3", "recv", "close", "connect", "send 3", "recv"]
    assert server.deadlines[-1] == 108.0  # the resend keeps the first try's deadline (103 + 5)


def test_the_stale_resend_is_only_once() -> None:
    server = Server([OK], [])
    conn = connection(server)
    send_all(conn, 1)
    assert send_all(conn, 2) == [StaleConnection]


def test_after_an_answer_proceed_refuses_nothing_more_is_written_but_in_flight_is_read() -> None:
    server = Server([LIMITED, OK])
    conn = connection(server, depth=2)
    assert send_all(conn, 4, proceed=lambda r: r.status < 300) == [429, 200]
    assert server.log == ["connect", "send 2", "recv", "recv"]


def test_each_answer_waits_at_most_the_timeout_from_the_last_progress() -> None:
    clock = Clock()
    server = Server([OK, OK])
    conn = HttpConnection(DSN, server, pipelining=Pipelining(2), clock=clock)
    conn.pipelining.proven = True
    run(conn.pipeline(requests(2), 5.0, 0.0, lambda r: True))
    assert server.deadlines == [105.0, 105.0]
    server.sockets.append([OK])
    run(conn.pipeline(requests(1), 5.0, 102.0, lambda r: True))
    assert server.deadlines[-1] == 102.0  # the caller's deadline wins


def test_bytes_past_the_last_answer_with_nothing_asked_close_the_socket() -> None:
    server = Server([OK + b"HTTP/1.1 200"])
    conn = connection(server)
    assert send_all(conn, 1) == [200]
    assert not conn.open and server.log[-1] == "close"
    # a server that answers more than it was asked is not trusted to pipeline either
    assert conn.pipelining.refused == "the server sent an answer no request asked for"


def test_large_bodies_cap_what_is_in_flight() -> None:
    server = Server([OK, OK, OK])
    conn = connection(server, depth=16)
    big = Request(DSN.envelope_url, DSN.envelope_path, (), b"x" * 200_000, 200_000, None)
    run(conn.pipeline([big, big, big], 5.0, 0.0, lambda r: True))
    assert server.log.count("send 1") == 3  # one at a time (each head with its own body write)


def test_depth_one_is_one_request_at_a_time() -> None:
    server = Server([OK, OK, OK])
    assert send_all(connection(server, depth=1), 3) == [200] * 3
    assert server.log == ["connect", "send 1", "recv", "send 1", "recv", "send 1", "recv"]


def test_a_stray_answer_on_an_idle_socket_closes_it_and_refuses_pipelining() -> None:
    # Bytes came on the kept-alive socket after its last answer: they would be taken for
    # the next request's answer, so the next requests go on a new socket, one at a time.
    server = Server([OK], [OK, OK])
    conn = connection(server)
    assert send_all(conn, 1) == [200]
    server.log.clear()
    server.came.append("data")
    assert send_all(conn, 2) == [200, 200]
    assert server.log == [
        "unasked: data", "close", "connect", "send 1", "recv", "send 1", "recv"
    ]  # fmt: skip
    assert conn.pipelining.refused == "the server sent an answer no request asked for"


def test_a_socket_the_server_closed_while_idle_is_replaced_before_writing() -> None:
    # The end of the stream seen before writing: a new socket, no failed write, no resend,
    # and pipelining stays (closing an idle keep-alive socket is what servers do).
    server = Server([OK], [OK * 3])
    conn = connection(server)
    assert send_all(conn, 1) == [200]
    server.log.clear()
    server.came.append("end")
    assert send_all(conn, 3) == [200] * 3
    assert server.log == ["unasked: end", "close", "connect", "send 3", "recv"]
    assert conn.pipelining.refused is None and conn.pipelining.depth == 4


def test_one_exchange_checks_an_idle_socket_too() -> None:
    server = Server([OK], [OK])
    conn = connection(server)
    assert run(conn.exchange(requests(1)[0], 200.0)).status == 200
    server.log.clear()
    server.came.append("data")
    assert run(conn.exchange(requests(1)[0], 200.0)).status == 200
    assert server.log == ["unasked: data", "close", "connect", "send 1", "recv"]
