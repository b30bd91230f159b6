"""The conformance suite: scripted server behaviours, run against every transport.

Each test gets ``make`` (a factory for the backend under test, bound to a running Sink) and
checks what the transport counted against what the sink saw: for every scenario, events
accepted == delivered + lost, and the sink answered 2xx to exactly the delivered ones.
The asyncio backend runs its loop in a helper thread and is driven through its
thread-safe API (``capture_envelope`` from another thread, sync ``flush``/``close``).
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sentry_transport import Envelope, Item, Transport, make_transport
from sentry_transport.testing import Close, Hang, Proxy, Reset, Respond, Sink
from sentry_transport.transports.aio import AsyncioTransport

pytestmark = pytest.mark.network

BACKENDS = ["sync", "threaded", "asyncio"]

# Fast settings so that failure scenarios finish in well under a second.
FAST = {"timeout": 1.0, "retry_attempts": 2, "retry_backoff": 0.05, "retry_deadline": 5.0}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a helper thread, for the asyncio backend."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


Make = Callable[..., Transport]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(backend: str, loop: asyncio.AbstractEventLoop) -> Iterator[Make]:
    made: list[Transport] = []

    def factory(dsn: str, **options: Any) -> Transport:
        merged = {**FAST, **options}
        transport: Transport
        if backend == "asyncio":
            transport = AsyncioTransport(dsn, loop=loop, **merged)
        else:
            transport = make_transport(f"{backend}+{dsn}", **merged)
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        transport.close(0.5)


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as started:
        yield started


def event(tag: str) -> Envelope:
    return Envelope.for_event({"message": {"formatted": tag}, "level": "error"})


def transaction(tag: str, spans: int = 2) -> Envelope:
    body = {
        "type": "transaction",
        "transaction": tag,
        "spans": [{"span_id": f"{i:016x}"} for i in range(spans)],
    }
    return Envelope.for_event(body)


def sink_events(sink: Sink) -> list[str]:
    """Messages (or transaction names) of the event items the sink answered 2xx to."""
    found = []
    for envelope in sink.envelopes:
        for item in envelope.items:
            if item.type == "event":
                found.append(item.json["message"]["formatted"])
            elif item.type == "transaction":
                found.append(item.json["transaction"])
    return found


def reports(sink: Sink) -> dict[tuple[str, str], int]:
    """Client-report totals the sink received (in 2xx-answered envelopes)."""
    totals: dict[tuple[str, str], int] = {}
    for envelope in sink.envelopes:
        for item in envelope.items:
            if item.type == "client_report":
                for entry in item.json["discarded_events"]:
                    key = (entry["reason"], entry["category"])
                    totals[key] = totals.get(key, 0) + entry["quantity"]
    return totals


def settle(transport: Transport, timeout: float = 3.0) -> dict[str, Any]:
    """Stats once nothing is queued or in flight (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = transport.stats()
        if (stats.get("queued", 0) == 0 and stats.get("in_flight", 0) == 0) or (
            time.monotonic() > deadline
        ):
            return stats
        time.sleep(0.01)


def check_accounting(transport: Transport, sink: Sink) -> dict[str, Any]:
    stats = settle(transport)
    events = stats["events"]
    assert events["accepted"] == events["delivered"] + events["lost"], stats
    assert len(sink_events(sink)) == events["delivered"], (sink_events(sink), stats)
    return stats


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- 2xx --------------------------------------------------------------------------------------


def test_200_delivers_everything_over_keep_alive(make: Make, sink: Sink) -> None:
    transport = make(sink.dsn, max_connections=4)
    for i in range(40):
        transport.capture_envelope(event(f"e{i}"))
    assert transport.flush(5)
    assert sorted(sink_events(sink)) == sorted(f"e{i}" for i in range(40))
    assert sink.connections <= 4
    stats = check_accounting(transport, sink)
    assert stats["accepted"] == 40 and stats["delivered"] == 40 and stats["lost"] == {}
    request = sink.requests[0]
    assert "sentry_key=public" in request.headers["x-sentry-auth"]
    assert request.headers["content-type"] == "application/x-sentry-envelope"
    assert request.envelope is not None and "sent_at" in request.envelope.headers


def test_capture_event_builds_an_envelope(make: Make, sink: Sink) -> None:
    transport = make(sink.dsn)
    transport.capture_event({"message": {"formatted": "from a dict"}})
    assert transport.flush(5)
    assert sink_events(sink) == ["from a dict"]
    check_accounting(transport, sink)


def test_rate_limit_header_on_200_blocks_that_category(make: Make, sink: Sink) -> None:
    sink.script(Respond(200, headers={"X-Sentry-Rate-Limits": "60:error:organization"}))
    transport = make(sink.dsn)
    transport.capture_envelope(event("first"))
    assert transport.flush(5)
    transport.capture_envelope(event("blocked"))
    transport.capture_envelope(transaction("still-sent"))
    assert transport.flush(5)
    assert sorted(sink_events(sink)) == ["first", "still-sent"]
    stats = check_accounting(transport, sink)
    assert stats["lost"] == {"ratelimit_backoff": {"error": 1}}
    assert reports(sink) == {("ratelimit_backoff", "error"): 1}
    assert 55 < stats["rate_limits"]["error"] <= 60
    assert transport.is_healthy()  # one category limited is not the server refusing us


# -- HTTP errors --------------------------------------------------------------------------------


def test_413_is_a_send_error_and_never_retried(make: Make, sink: Sink) -> None:
    sink.script(Respond(413))
    transport = make(sink.dsn)
    transport.capture_envelope(event("too-big"))
    assert transport.flush(5)
    with_events = [r for r in sink.requests if r.envelope and r.envelope.event_id]
    assert len(with_events) == 1
    stats = check_accounting(transport, sink)
    assert stats["lost"] == {"send_error": {"error": 1}}
    assert reports(sink) == {("send_error", "error"): 1}


@pytest.mark.parametrize("status", [500, 503, 400])
def test_other_http_errors_are_send_errors(make: Make, sink: Sink, status: int) -> None:
    sink.script(Respond(status))
    transport = make(sink.dsn, max_connections=1)
    transport.capture_envelope(event("fails"))
    transport.capture_envelope(event("passes"))
    assert transport.flush(5)
    stats = check_accounting(transport, sink)
    assert stats["lost"] == {"send_error": {"error": 1}}
    assert sink_events(sink) == ["passes"]
    assert stats["retries"] == 0


def _http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "limited", "seconds"),
    [
        ({"X-Sentry-Rate-Limits": "30:error:organization"}, "error", 30),
        ({"X-Sentry-Rate-Limits": "30::organization"}, "all", 30),
        ({"Retry-After": "30"}, "all", 30),
        ({"Retry-After": "29.5"}, "all", 29.5),
        ({"Retry-After": "HTTP-DATE"}, "all", 30),
        ({}, "all", 60),
    ],
    ids=["sentry-header", "sentry-header-all", "retry-after", "retry-after-float", "date", "bare"],
)
def test_429_forms(
    make: Make, sink: Sink, headers: dict[str, str], limited: str, seconds: float
) -> None:
    if headers.get("Retry-After") == "HTTP-DATE":
        headers = {"Retry-After": _http_date(30)}
    sink.script(Respond(429, headers=headers))
    transport = make(sink.dsn)
    transport.capture_envelope(event("rejected"))
    assert transport.flush(5)
    transport.capture_envelope(event("dropped-before-sending"))
    assert transport.flush(5)
    stats = check_accounting(transport, sink)
    # Both lost as ratelimit_backoff; only the second one is ours to report (the server
    # counted the 429 itself).
    assert stats["lost"] == {"ratelimit_backoff": {"error": 2}}
    assert len([r for r in sink.requests if r.envelope and r.envelope.event_id]) == 1
    remaining = stats["rate_limits"]
    key = "error" if limited == "error" else "*"
    assert seconds - 5 < remaining[key] <= seconds
    if limited == "error":
        assert reports(sink) == {("ratelimit_backoff", "error"): 1}
    else:
        assert reports(sink) == {}  # a limit on every category blocks client reports too
        assert not transport.is_healthy()


# -- network failures ---------------------------------------------------------------------------


def test_connection_refused_is_retried_then_network_error(make: Make) -> None:
    transport = make(f"http://public@127.0.0.1:{free_port()}/42")
    transport.capture_envelope(event("nobody-home"))
    assert transport.flush(5)
    stats = settle(transport)
    assert stats["lost"] == {"network_error": {"error": 1}}
    assert stats["retries"] == 2  # the first try and two retries failed
    assert stats["events"] == {"accepted": 1, "delivered": 0, "lost": 1}
    assert not transport.is_healthy()


@pytest.mark.parametrize("backend", ["sync"])
def test_sync_capture_sends_only_its_own_envelope(make: Make) -> None:
    transport = make(f"http://public@127.0.0.1:{free_port()}/42", retry_backoff=0.01)
    transport.capture_envelope(event("first"))
    time.sleep(0.05)  # first's retry is due now
    transport.capture_envelope(event("second"))
    stats = transport.stats()
    assert stats["network_errors"] == 2  # one try each: capture did not send first's retry
    assert stats["queued"] == 2
    assert transport.flush(5)  # flush sends the retries
    stats = settle(transport)
    assert stats["lost"] == {"network_error": {"error": 2}} and stats["retries"] == 4


def test_reset_mid_body_is_retried(make: Make, sink: Sink) -> None:
    sink.script(Reset(after=10))
    transport = make(sink.dsn)
    transport.capture_envelope(event("after-reset"))
    assert transport.flush(5)
    assert sink_events(sink) == ["after-reset"]
    stats = check_accounting(transport, sink)
    assert stats["retries"] >= 1 and stats["lost"] == {}
    assert sink.requests[0].status is None


def test_closed_without_answer_is_retried(make: Make, sink: Sink) -> None:
    sink.script(Close())
    transport = make(sink.dsn)
    transport.capture_envelope(event("after-close"))
    assert transport.flush(5)
    assert sink_events(sink) == ["after-close"]
    assert check_accounting(transport, sink)["lost"] == {}


def test_hang_past_the_timeout_is_retried(make: Make, sink: Sink) -> None:
    sink.script(Hang(5))
    transport = make(sink.dsn, timeout=0.3)
    started = time.monotonic()
    transport.capture_envelope(event("after-hang"))
    assert transport.flush(5)
    assert time.monotonic() - started < 3
    assert sink_events(sink) == ["after-hang"]
    stats = check_accounting(transport, sink)
    assert stats["retries"] == 1 and stats["network_errors"] == 1


def test_hang_on_every_try_ends_as_network_error(make: Make, sink: Sink) -> None:
    sink.default = Hang(5)
    transport = make(sink.dsn, timeout=0.2, retry_attempts=1)
    transport.capture_envelope(event("never"))
    assert transport.flush(5)
    stats = check_accounting(transport, sink)
    assert stats["lost"] == {"network_error": {"error": 1}}


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> Any:
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


@pytest.fixture
def tls_sink(ca: Any, tmp_path: Any) -> Iterator[tuple[Sink, str]]:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with Sink(ssl_context=context) as started:
        yield started, str(bundle)


def test_tls_with_custom_ca(make: Make, tls_sink: tuple[Sink, str]) -> None:
    sink, bundle = tls_sink
    assert sink.dsn.startswith("https://")
    transport = make(sink.dsn, ca_certs=bundle)
    transport.capture_envelope(event("over-tls"))
    assert transport.flush(5)
    assert sink_events(sink) == ["over-tls"]
    check_accounting(transport, sink)


def test_tls_unknown_ca_is_refused(make: Make, tls_sink: tuple[Sink, str]) -> None:
    sink, _ = tls_sink
    transport = make(sink.dsn, retry_attempts=0)
    transport.capture_envelope(event("untrusted"))
    assert transport.flush(5)
    stats = check_accounting(transport, sink)
    assert stats["lost"] == {"network_error": {"error": 1}}
    assert "CERTIFICATE_VERIFY_FAILED" in (stats["last_error"] or "")


def test_tls_verification_can_be_turned_off(make: Make, tls_sink: tuple[Sink, str]) -> None:
    sink, _ = tls_sink
    transport = make(sink.dsn + "?verify_ssl=0")
    transport.capture_envelope(event("unverified"))
    assert transport.flush(5)
    assert sink_events(sink) == ["unverified"]


def test_tls_host_name_is_checked(make: Make, ca: Any, tmp_path: Any) -> None:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("sentry.example.org").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with Sink(ssl_context=context) as sink:
        transport = make(sink.dsn, ca_certs=str(bundle), retry_attempts=0)
        transport.capture_envelope(event("wrong-host"))
        assert transport.flush(5)
        stats = check_accounting(transport, sink)
        assert stats["lost"] == {"network_error": {"error": 1}}


def test_tls_client_certificate(make: Make, ca: Any, tmp_path: Any) -> None:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    client = ca.issue_cert("client@example.org")
    bundle, cert, key = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    ca.cert_pem.write_to_path(str(bundle))
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    with Sink(ssl_context=context) as sink:
        anonymous = make(sink.dsn, ca_certs=str(bundle), retry_attempts=0)
        anonymous.capture_envelope(event("no-client-cert"))
        assert anonymous.flush(5)
        assert anonymous.stats()["lost"] == {"network_error": {"error": 1}}
        transport = make(sink.dsn, ca_certs=str(bundle), cert_file=str(cert), key_file=str(key))
        transport.capture_envelope(event("with-client-cert"))
        assert transport.flush(5)
        assert sink_events(sink) == ["with-client-cert"]
        check_accounting(transport, sink)


def test_bad_tls_file_is_a_configuration_error(make: Make, tmp_path: Any) -> None:
    from sentry_transport import ConfigurationError

    with pytest.raises(ConfigurationError, match="ca_certs"):
        make("https://public@127.0.0.1:9/42", ca_certs=str(tmp_path / "missing.pem"))


# -- proxies --------------------------------------------------------------------------------------


def test_http_through_proxy_option(make: Make, sink: Sink) -> None:
    with Proxy() as proxy:
        transport = make(sink.dsn, http_proxy=proxy.url)
        transport.capture_envelope(event("proxied"))
        assert transport.flush(5)
        assert sink_events(sink) == ["proxied"]
        assert proxy.seen[0] == f"POST http://127.0.0.1:{sink.port}/api/42/envelope/"
    check_accounting(transport, sink)


def test_https_through_proxy_tunnel(make: Make, tls_sink: tuple[Sink, str]) -> None:
    sink, bundle = tls_sink
    with Proxy() as proxy:
        transport = make(sink.dsn, https_proxy="http://user:pw@" + proxy.url[7:], ca_certs=bundle)
        transport.capture_envelope(event("tunnelled"))
        assert transport.flush(5)
        assert sink_events(sink) == ["tunnelled"]
        assert proxy.seen[0] == f"CONNECT 127.0.0.1:{sink.port}"
        assert proxy.auth[0] == "Basic dXNlcjpwdw=="


def test_proxy_from_environment_and_no_proxy(
    make: Make, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        transport = make(sink.dsn)
        transport.capture_envelope(event("via-env"))
        assert transport.flush(5)
        assert len(proxy.seen) == 1
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        bypassing = make(sink.dsn)
        bypassing.capture_envelope(event("bypass"))
        assert bypassing.flush(5)
        assert len(proxy.seen) == 1
        assert sorted(sink_events(sink)) == ["bypass", "via-env"]


# -- compression ----------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "deflate", "br", "zstd", "none"])
def test_compressed_bodies(make: Make, sink: Sink, compression: str) -> None:
    transport = make(sink.dsn, compression=compression)
    big = Envelope.for_event({"message": {"formatted": "big"}, "extra": {"blob": "x" * 50_000}})
    big.add_item(Item.attachment(os.urandom(3000), filename="noise.bin"))
    transport.capture_envelope(big)
    transport.capture_envelope(event("small"))
    assert transport.flush(5)
    requests = {
        r.envelope.items[0].json["message"]["formatted"]: r for r in sink.requests if r.envelope
    }
    expected = None if compression == "none" else compression
    assert requests["big"].headers.get("content-encoding") == expected
    assert "content-encoding" not in requests["small"].headers  # under the threshold
    received = requests["big"].envelope
    assert received is not None
    assert received.items[1].payload == big.items[1].payload
    assert received.items[0].json["extra"]["blob"] == "x" * 50_000


# -- flush and close ------------------------------------------------------------------------------


def test_flush_keeps_its_deadline(make: Make) -> None:
    transport = make(f"http://public@127.0.0.1:{free_port()}/42", retry_backoff=2.0)
    transport.capture_envelope(event("waits-for-retry"))
    started = time.monotonic()
    assert transport.flush(0.2) is False
    assert time.monotonic() - started < 0.6


def test_close_stops_accepting(make: Make, sink: Sink) -> None:
    transport = make(sink.dsn)
    transport.capture_envelope(event("before"))
    transport.close(5)
    transport.capture_envelope(event("after"))
    stats = check_accounting(transport, sink)
    assert sink_events(sink) == ["before"]
    assert stats["lost"] == {"queue_overflow": {"error": 1}}


def test_close_keeps_its_deadline_and_counts_the_rest(make: Make, sink: Sink, backend: str) -> None:
    sink.default = Hang(10)
    # The sync transport blocks each capture for one try (its job), so it gets a short timeout;
    # the background transports must not block the caller at all.
    timeout = 0.2 if backend == "sync" else 5.0
    transport = make(sink.dsn, timeout=timeout)
    started = time.monotonic()
    for i in range(3):
        transport.capture_envelope(event(f"stuck{i}"))
    capture_time = time.monotonic() - started
    assert capture_time < (3 * timeout + 0.5 if backend == "sync" else 0.1)
    started = time.monotonic()
    transport.close(0.5)
    assert time.monotonic() - started < 0.9
    stats = check_accounting(transport, sink)
    assert stats["events"] == {"accepted": 3, "delivered": 0, "lost": 3}
    assert set(stats["lost"]) <= {"network_error", "queue_overflow"}


@pytest.mark.parametrize("backend", ["threaded", "asyncio"])  # sync sends before returning
def test_queue_overflow_is_counted(make: Make, sink: Sink) -> None:
    sink.default = Respond(200, delay=0.3)
    transport = make(sink.dsn, queue_size=5, max_connections=1)
    for i in range(20):
        transport.capture_envelope(event(f"burst{i}"))
    assert transport.flush(10)
    stats = check_accounting(transport, sink)
    lost = stats["lost"]["queue_overflow"]["error"]
    assert lost >= 20 - 5 - 1 and stats["events"]["delivered"] == 20 - lost


def test_recorded_losses_are_reported(make: Make, sink: Sink) -> None:
    transport = make(sink.dsn)
    transport.record_lost_event("sample_rate", "transaction", 3)
    transport.record_lost_event("before_send", "error")
    assert transport.flush(5)
    assert reports(sink) == {("sample_rate", "transaction"): 3, ("before_send", "error"): 1}
    stats = transport.stats()
    assert stats["lost"] == {"sample_rate": {"transaction": 3}, "before_send": {"error": 1}}
    assert stats["events"]["lost"] == 0  # they never reached the transport


# -- fork -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_starts_empty(make: Make, sink: Sink, backend: str) -> None:
    sink.default = Respond(200, delay=0.2)
    transport = make(sink.dsn, max_connections=2)
    for i in range(6):
        transport.capture_envelope(event(f"parent{i}"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: must not re-send the parent's envelopes
        code = 1
        try:
            stats = transport.stats()
            if stats["accepted"] == 0 and stats.get("queued", 0) == 0:
                if backend == "asyncio":

                    async def child() -> bool:
                        transport.capture_envelope(event("child"))
                        assert isinstance(transport, AsyncioTransport)
                        return await transport.aflush(5)

                    ok = asyncio.run(child())
                else:
                    transport.capture_envelope(event("child"))
                    ok = transport.flush(5)
                stats = transport.stats()
                code = 0 if ok and stats["accepted"] == 1 and stats["delivered"] == 1 else 2
        finally:
            os._exit(code)
    assert transport.flush(10)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    seen = sink_events(sink)
    assert sorted(seen) == sorted([f"parent{i}" for i in range(6)] + ["child"])  # no repeats
    stats = settle(transport)
    assert stats["events"] == {"accepted": 6, "delivered": 6, "lost": 0}
    # the child left the parent's connections alone (nothing timed out and was sent twice)
    assert stats["network_errors"] == 0 and stats["retries"] == 0
