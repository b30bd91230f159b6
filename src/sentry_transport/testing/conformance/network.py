"""Scenarios: network failures (refused, reset, closed, hang), TLS, proxies, compression."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ...core.envelope import Envelope, Item
from .._record import Close, Hang, Reset
from ..proxy import Proxy
from ..sink import Sink
from ._base import (
    Make,
    check_accounting,
    event,
    free_port,
    settle,
    sink_events,
)

pytestmark = pytest.mark.network

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
