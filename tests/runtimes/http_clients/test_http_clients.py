"""What the requests+ / threaded+requests+ / urllib3+ transports add to the conformance suite:
the library retries nothing, errors come out as the stdlib's, a user's Session is used as
given, answers are read bounded and never redirected, close breaks requests in progress,
a fork forgets the parent's sockets, the caller's thread stays free, a program end without
close delivers, and without the library the import names the extra to install."""

from __future__ import annotations

import gc
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import urllib3.util.connection

from sentry_transport import (
    Dsn,
    HttpProtocolError,
    MissingDependencyError,
    Transport,
    make_transport,
    registry,
)
from sentry_transport.core.envelope import Envelope
from sentry_transport.core.request import Request, build
from sentry_transport.io.sockets import run
from sentry_transport.io.urllib3_io import ClientConnection, network_error
from sentry_transport.registry import Backend
from sentry_transport.testing import Close, Hang, Respond, Sink
from sentry_transport.testing.conformance import FAST
from sentry_transport.testing.conformance._base import event, free_port, sink_events
from sentry_transport.transports.with_requests import (
    RequestsTransport,
    ThreadedRequestsTransport,
)
from sentry_transport.transports.with_urllib3 import Urllib3Transport

pytestmark = pytest.mark.network

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "src")
CLASSES: dict[str, type[Any]] = {
    "requests": RequestsTransport,
    "threaded+requests": ThreadedRequestsTransport,
    "urllib3": Urllib3Transport,
}
REQUESTS_CLASSES = ["requests", "threaded+requests"]
BIG = {"message": {"formatted": "big"}, "extra": {"blob": ["x" * 100] * 1000}}  # ~100 KB


@pytest.fixture(params=list(CLASSES))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(backend: str) -> Iterator[Callable[..., Any]]:
    made: list[Transport] = []

    def factory(dsn: str, **options: Any) -> Any:
        transport = CLASSES[backend](dsn, **{**FAST, **options})
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        transport.close(0.5)


@pytest.fixture
def sink(sentry_sink: Sink) -> Sink:
    return sentry_sink


def request_for(dsn: str, tag: str = "direct") -> Request:
    return build(event(tag), Dsn.parse(dsn), time.time(), None)


def exchange(transport: Any, request: Request, seconds: float = 2.0) -> Any:
    """One exchange on a new connection of the transport's pump, on this thread."""
    conn: ClientConnection = transport._pump._connection()
    try:
        return run(conn.exchange(request, time.monotonic() + seconds))
    finally:
        conn.stream.close_now()


# -- no retries in the library ----------------------------------------------------------------


def test_a_refused_port_is_tried_retry_attempts_plus_one_times(
    make: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    connects: list[Any] = []
    original = urllib3.util.connection.create_connection

    def counting(*args: Any, **kwargs: Any) -> Any:
        connects.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting)
    port = free_port()
    transport = make(f"http://public@127.0.0.1:{port}/42", send_client_reports=0)
    transport.capture_envelope(event("refused"))
    assert transport.flush(5)
    stats = transport.stats()
    assert stats["retries"] == 2 and stats["network_errors"] == 3
    assert connects == [("127.0.0.1", port)] * 3  # the first try and two retries, no more
    assert stats["last_error"] == "ConnectionRefusedError: [Errno 111] Connection refused"


def test_a_request_the_server_drops_is_sent_once_per_try(
    make: Callable[..., Any], sink: Sink
) -> None:
    sink.default = Close()  # reads the request, closes without an answer
    transport = make(sink.dsn, send_client_reports=0)
    transport.capture_envelope(event("dropped"))
    assert transport.flush(5)
    assert len(sink.requests) == 3  # retry_attempts + 1: the library resent nothing
    assert transport.stats()["lost"] == {"network_error": {"error": 1}}


def test_a_stale_kept_alive_connection_is_resent_once_within_the_deadline(
    make: Callable[..., Any], sink: Sink
) -> None:
    transport = make(sink.dsn, retry_attempts=0, max_connections=1)
    transport.capture_envelope(event("first"))
    assert transport.flush(5)
    sink.script(Close())  # the kept-alive connection is closed as the next request uses it
    transport.capture_envelope(event("second"))
    assert transport.flush(5)
    assert sink_events(sink) == ["first", "second"]
    stats = transport.stats()
    assert stats["lost"] == {} and stats["network_errors"] == 0 and stats["retries"] == 0
    assert len(sink.requests) == 3 and sink.connections == 2


# -- answers and errors -----------------------------------------------------------------------


def test_status_reason_and_headers_are_the_servers(backend: str, sink: Sink) -> None:
    sink.script(
        Respond(429, headers={"X-Sentry-Rate-Limits": "60:error:organization", "X-One": "1"})
    )
    transport = CLASSES[backend](sink.dsn)
    try:
        response = exchange(transport, request_for(sink.dsn))
        assert response.status == 429 and response.reason == "Too Many Requests"
        assert response.header("x-sentry-rate-limits") == "60:error:organization"
        assert response.header("X-One") == "1"
    finally:
        transport.close(0.5)


def test_a_long_body_is_read_bounded_and_costs_the_connection(backend: str, sink: Sink) -> None:
    sink.script(Respond(200, body=b"y" * 300_000), Respond(200, body=b"short"))
    transport = CLASSES[backend](sink.dsn, max_connections=1)
    try:
        conn = transport._pump._connection()
        deadline = time.monotonic() + 5
        first = run(conn.exchange(request_for(sink.dsn, "one"), deadline))
        assert first.status == 200 and first.body == b"y" * 65536 and not first.keep_alive
        second = run(conn.exchange(request_for(sink.dsn, "two"), deadline))
        assert second.body == b"short" and second.keep_alive and conn.open
        conn.stream.close_now()
        assert sink.connections == 2  # the first one was not read to its end: dropped
    finally:
        transport.close(0.5)


def test_redirects_are_not_followed(make: Callable[..., Any], sink: Sink) -> None:
    sink.script(Respond(302, headers={"Location": f"http://127.0.0.1:{sink.port}/elsewhere/"}))
    transport = make(sink.dsn, send_client_reports=0)
    transport.capture_envelope(event("moved"))
    assert transport.flush(5)
    assert [r.path for r in sink.requests] == ["/api/42/envelope/"]  # not /elsewhere/
    assert transport.stats()["lost"] == {"send_error": {"error": 1}}


@pytest.fixture
def garbage_server() -> Iterator[int]:
    """A server that answers every connection with bytes that are not HTTP, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            with client:
                client.settimeout(1)
                try:
                    client.recv(65536)
                    client.sendall(b"SMTP ready\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(2)
    listener.close()


def test_errors_are_the_stdlibs_never_the_librarys(
    backend: str, sink: Sink, garbage_server: int
) -> None:
    refused = f"http://public@127.0.0.1:{free_port()}/42"
    garbage = f"http://public@127.0.0.1:{garbage_server}/42"
    sink.default = Hang(5)
    for dsn, expected in [
        (refused, ConnectionRefusedError),
        (sink.dsn, TimeoutError),
        (garbage, HttpProtocolError),
    ]:
        transport = CLASSES[backend](dsn)
        try:
            with pytest.raises(Exception) as caught:
                exchange(transport, request_for(dsn), seconds=0.3)
        finally:
            transport.close(0.5)
        assert isinstance(caught.value, expected), repr(caught.value)
        assert not isinstance(caught.value, requests.RequestException)
        assert type(caught.value).__module__.split(".")[0] not in ("requests", "urllib3")


def test_network_error_maps_the_library_exceptions() -> None:
    from urllib3 import exceptions as u

    refused = ConnectionRefusedError(111, "Connection refused")
    message = f"Failed to establish a new connection: {refused}"
    new = u.NewConnectionError(None, message)  # type: ignore[arg-type]
    new.__cause__ = refused
    wrapped = requests.ConnectionError(u.MaxRetryError(None, "/", new))  # type: ignore[arg-type]
    error = network_error(wrapped)
    assert type(error) is ConnectionRefusedError and str(error) == str(refused)

    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] nope")
    error = network_error(requests.exceptions.SSLError(u.SSLError(cert)))
    assert isinstance(error, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(error)

    tunnel = u.ProxyError("Unable to connect to proxy", OSError("Tunnel connection failed: 407"))
    error = network_error(requests.exceptions.ProxyError(tunnel))
    assert isinstance(error, ConnectionError) and "Tunnel connection failed: 407" in str(error)

    assert isinstance(network_error(u.ReadTimeoutError(None, "/", "Read timed out.")), TimeoutError)  # type: ignore[arg-type]
    assert isinstance(network_error(u.ProtocolError("bad", ValueError())), HttpProtocolError)
    assert type(network_error(requests.exceptions.InvalidURL("x"))) is ConnectionError


def test_turning_verification_off_warns_nothing_per_request(tls_sink: tuple[Sink, str]) -> None:
    sink, _ = tls_sink
    transport = RequestsTransport(sink.dsn, verify_ssl=0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        transport.capture_envelope(event("unverified"))  # sent on this thread
        transport.close(1)
    assert sink_events(sink) == ["unverified"]
    assert seen == []


@pytest.fixture
def tls_sink(tmp_path: Any) -> Iterator[tuple[Sink, str]]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with Sink(ssl_context=context) as started:
        yield started, str(bundle)


def test_the_environment_is_ours_to_read(
    make: Callable[..., Any], tls_sink: tuple[Sink, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, bundle = tls_sink
    # requests would read these itself; our options decide instead
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/nonexistent/ca.pem")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
    transport = make(sink.dsn, ca_certs=bundle, trust_env=False)
    transport.capture_envelope(event("direct"))
    assert transport.flush(5)
    assert sink_events(sink) == ["direct"]


# -- a user's session -------------------------------------------------------------------------


class CountingAdapter(requests.adapters.HTTPAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self.sent += 1
        return super().send(request, *args, **kwargs)


@pytest.mark.parametrize("backend", REQUESTS_CLASSES)
def test_a_users_session_is_used_as_given(backend: str, sink: Sink) -> None:
    session = requests.Session()
    session.headers["X-From-Session"] = "yes"
    adapter = CountingAdapter()
    session.mount("http://", adapter)
    hooked: list[int] = []
    session.hooks["response"].append(lambda response, **kw: hooked.append(response.status_code))

    def auth(prepared: Any) -> Any:
        prepared.headers["X-Auth-Hook"] = "signed"
        return prepared

    session.auth = auth
    transport = CLASSES[backend](sink.dsn, session=session, max_connections=2)
    for i in range(5):
        transport.capture_envelope(event(f"s{i}"))
    assert transport.flush(5)
    transport.close(1)
    assert sorted(sink_events(sink)) == [f"s{i}" for i in range(5)]
    assert adapter.sent == len(sink.requests) == len(hooked) == 5
    for received in sink.requests:
        assert received.headers["x-from-session"] == "yes"
        assert received.headers["x-auth-hook"] == "signed"
        assert received.headers["user-agent"].startswith("sentry-transport/")  # ours wins
    # never closed by us: the session still sends, on a connection it kept
    connections = sink.connections
    answer = session.post(Dsn.parse(sink.dsn).envelope_url, data=b"{}")
    assert answer.status_code == 401  # the sink's answer to a request without a key
    assert sink.connections == connections <= 2


def test_a_fork_forgets_the_idle_sockets_of_a_users_session(sink: Sink) -> None:
    session = requests.Session()
    transport = RequestsTransport(sink.dsn, session=session)
    transport.capture_envelope(event("parent"))
    adapter: Any = session.get_adapter(sink.dsn)
    pool = next(iter(adapter.poolmanager.pools._container.values()))
    idle = [conn for conn in pool.pool.queue if conn is not None]
    assert len(idle) == 1 and idle[0].sock is not None
    transport._pump.after_fork()  # what a forked child runs (here, without forking)
    assert idle[0].sock is None  # this process's copy closed, not shut down
    transport.capture_envelope(event("child"))
    transport.close(1)
    assert sink_events(sink) == ["parent", "child"] and sink.connections == 2


def test_a_fork_forgets_the_sockets_of_our_sessions(sink: Sink) -> None:
    transport = RequestsTransport(sink.dsn)
    transport.capture_envelope(event("parent"))
    made = list(transport._pump.runtime.tracker.made)
    assert len(made) == 1 and made[0].sock is not None
    transport._pump.after_fork()
    assert made[0].sock is None
    transport.capture_envelope(event("child"))
    transport.close(1)
    assert sink_events(sink) == ["parent", "child"] and sink.connections == 2


# -- close breaks what is in progress ---------------------------------------------------------


def test_close_breaks_requests_in_progress_at_once(backend: str, sink: Sink) -> None:
    sink.default = Hang(30)
    transport = CLASSES[backend](sink.dsn, timeout=20, max_connections=3)
    capturing = threading.Thread(
        target=lambda: [transport.capture_envelope(event(f"h{i}")) for i in range(3)],
        daemon=True,
    )
    capturing.start()
    assert sink.wait_for_requests(1, timeout=5)
    started = time.monotonic()
    transport.close(0.2)
    capturing.join(2)
    while transport.stats()["workers"] and time.monotonic() - started < 2:
        time.sleep(0.01)
    # the workers ended: their requests were broken off
    assert not capturing.is_alive() and transport.stats()["workers"] == 0
    assert time.monotonic() - started < 1.5  # not the 20 s timeout
    assert transport.stats()["events"]["lost"] == 3


# -- the caller's thread stays free -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["threaded+requests", "urllib3"])
def test_captures_never_wait_while_big_events_go_out(backend: str, sink: Sink) -> None:
    sink.default = Respond(200, delay=0.02)
    transport = CLASSES[backend](sink.dsn)
    # A full collection of this test process's heap takes ~30 ms here: freeze it, so that
    # what is measured is the transport, not the process's past.
    gc.collect()
    gc.freeze()
    try:
        worst = 0.0
        for _ in range(300):
            started = time.perf_counter()
            transport.capture_event(BIG)
            worst = max(worst, time.perf_counter() - started)
    finally:
        gc.unfreeze()
    assert transport.flush(40)
    stats = transport.stats()
    transport.close(1)
    assert stats["events"] == {"accepted": 300, "delivered": 300, "lost": 0}, stats
    assert len(sink.envelopes) == 300
    # Threads share the GIL: a capture may wait a few 5 ms switch intervals while workers
    # encode 100 KB events (the 20 ms bound is for the event-loop runtimes).
    assert worst < 0.05, worst


def test_the_blocking_transport_costs_the_caller_one_request(sink: Sink) -> None:
    # requests+ sends on the caller's thread (like sync+): each capture takes the server's
    # 20 ms; what it adds to that must stay under 20 ms, and other threads keep running.
    sink.default = Respond(200, delay=0.02)
    transport = RequestsTransport(sink.dsn)
    # A full collection of this test process's heap takes ~30 ms here: freeze it, so that
    # what is measured is the transport, not the process's past.
    gc.collect()
    gc.freeze()
    try:
        worst = 0.0
        for _ in range(300):
            started = time.perf_counter()
            transport.capture_event(BIG)
            worst = max(worst, time.perf_counter() - started)
    finally:
        gc.unfreeze()
    assert transport.flush(10)
    stats = transport.stats()
    transport.close(1)
    assert stats["events"] == {"accepted": 300, "delivered": 300, "lost": 0}, stats
    assert worst < 0.02 + 0.05, worst  # the server's 20 ms, and a few GIL switch intervals


# -- processes --------------------------------------------------------------------------------


def run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


MODULES = {
    "requests": ("with_requests", "RequestsTransport"),
    "threaded+requests": ("with_requests", "ThreadedRequestsTransport"),
    "urllib3": ("with_urllib3", "Urllib3Transport"),
}


def test_program_end_without_close_delivers(backend: str, sink: Sink) -> None:
    sink.default = Respond(200, delay=0.01)
    module, cls = MODULES[backend]
    done = run_script(
        f"""
        from sentry_transport.transports.{module} import {cls}
        t = {cls}("{backend}+{sink.dsn}", shutdown_timeout=10)
        for i in range(100):
            t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})
        """
    )
    assert done.returncode == 0, done.stderr
    assert sink.wait_for(100, timeout=10)
    assert len(sink.envelopes) == 100


@pytest.mark.parametrize(
    ("library", "module", "extra"),
    [
        ("requests", "with_requests", "requests"),
        ("urllib3", "with_urllib3", "urllib3"),
        ("urllib3", "with_requests", "requests"),  # requests cannot import without it
    ],
)
def test_without_the_library_the_error_names_the_extra(
    library: str, module: str, extra: str
) -> None:
    done = run_script(
        f"""
        import sys
        sys.modules["{library}"] = None  # as if it were not installed
        from sentry_transport import MissingDependencyError
        try:
            import sentry_transport.transports.{module}
        except MissingDependencyError as exc:
            print(exc.extra, "|", exc)
        """
    )
    assert done.returncode == 0, done.stderr
    name, _, message = done.stdout.partition("|")
    assert name.strip() == extra, done.stdout
    assert f"pip install 'sentry-transport[{extra}]'" in message
    assert issubclass(MissingDependencyError, ImportError)


def test_a_two_part_prefix_parses(sink: Sink) -> None:
    dsn = Dsn.parse("threaded+requests+https://public@127.0.0.1:9/42")
    assert dsn.backend == "threaded+requests" and dsn.scheme == "https"
    transport = ThreadedRequestsTransport(f"threaded+requests+{sink.dsn}")
    transport.capture_envelope(Envelope.for_event({"message": {"formatted": "two-part"}}))
    assert transport.flush(5)
    transport.close(1)
    assert sink_events(sink) == ["two-part"]
    assert transport.stats()["transport"] == "threaded+requests"


# The rows registry.py is to get (the test puts them in itself until it has them).
ROWS = [
    Backend(
        "requests",
        "sentry_transport.transports.with_requests",
        "RequestsTransport",
        library="requests",
        extra="requests",
    ),
    Backend(
        "threaded+requests",
        "sentry_transport.transports.with_requests",
        "ThreadedRequestsTransport",
        library="requests",
        extra="requests",
    ),
    Backend(
        "urllib3",
        "sentry_transport.transports.with_urllib3",
        "Urllib3Transport",
        library="urllib3",
        extra="urllib3",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.prefix)
def test_the_registry_rows_make_the_transports(
    row: Backend, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.BACKENDS, row.prefix, row)
    transport = make_transport(f"{row.prefix}+{sink.dsn}", timeout=2)
    assert type(transport).__name__ == row.cls and transport.stats()["transport"] == row.prefix
    transport.capture_envelope(event(row.prefix))
    assert transport.flush(5)
    transport.close(1)
    assert sink_events(sink) == [row.prefix]
