"""sentry_sdk with ``transport=SentryTransport``, against a local Sink.

Every test starts the sdk through the ``init`` fixture, which closes each client it made and
puts the sdk's global state back (no client, empty scopes), so nothing leaks between tests.
In-process tests run without the sdk's default integrations (they patch the process for
good); the program-end tests run the defaults in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # eventlet (installed for its own test group) warns when sentry_sdk probes for it
    warnings.simplefilter("ignore")
    import sentry_sdk
    import sentry_sdk.crons
    import sentry_sdk.logger
    from sentry_sdk.consts import DEFAULT_OPTIONS
    from sentry_sdk.envelope import Envelope as SdkEnvelope
    from sentry_sdk.envelope import Item as SdkItem
    from sentry_sdk.envelope import PayloadRef
    from sentry_sdk.transport import Transport as SdkTransport
    from sentry_sdk.utils import BadDsn

from sentry_transport import AsyncioTransport, DsnError, SyncTransport, ThreadedTransport
from sentry_transport.core.envelope import Envelope
from sentry_transport.core.version import CLIENT
from sentry_transport.sdk import SentryTransport, to_envelope, to_item, transport
from sentry_transport.testing import Hang, Respond, Sink

pytestmark = pytest.mark.network

SRC = os.path.join(os.path.dirname(__file__), "..", "src")


@pytest.fixture
def sink(sentry_sink: Sink) -> Sink:
    return sentry_sink


@pytest.fixture
def init(sink: Sink) -> Iterator[Callable[..., Any]]:
    """``init(**options)``: sentry_sdk.init with our transport and the sink's DSN."""
    clients: list[Any] = []

    def start(**options: Any) -> Any:
        options.setdefault("dsn", sink.dsn)
        options.setdefault("transport", SentryTransport)
        options.setdefault("default_integrations", False)
        sentry_sdk.init(**options)
        client = sentry_sdk.get_client()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            client.close(timeout=2.0)
        sentry_sdk.get_global_scope().set_client(None)
        sentry_sdk.get_isolation_scope().clear()
        sentry_sdk.get_current_scope().clear()


def items(sink: Sink, kind: str) -> list[Any]:
    return [item for envelope in sink.envelopes for item in envelope.items if item.type == kind]


def reported(sink: Sink) -> dict[tuple[str, str], int]:
    """What the client reports the sink received say was discarded."""
    counts: dict[tuple[str, str], int] = {}
    for item in items(sink, "client_report"):
        for entry in item.json["discarded_events"]:
            key = (entry["reason"], entry["category"])
            counts[key] = counts.get(key, 0) + entry["quantity"]
    return counts


def options(**overrides: Any) -> dict[str, Any]:
    """An options dict as sentry_sdk builds it (its defaults, then the caller's)."""
    return dict(DEFAULT_OPTIONS, **overrides)


# -- everything the sdk sends arrives, through us ---------------------------------------------


def test_every_kind_of_telemetry_arrives_through_our_transport(
    init: Callable[..., Any], sink: Sink
) -> None:
    client = init(traces_sample_rate=1.0, enable_logs=True)
    sentry_sdk.capture_message("hello")
    try:
        raise ValueError("boom")
    except ValueError:
        sentry_sdk.capture_exception()
    with sentry_sdk.start_transaction(name="checkout", op="task"):
        with sentry_sdk.start_span(op="db", name="select"):
            pass
        with sentry_sdk.start_span(op="http", name="get"):
            pass
    with sentry_sdk.new_scope() as scope:
        scope.add_attachment(bytes=b"\x00bin\nary\r\n", filename="dump.bin")
        sentry_sdk.capture_message("with a file")
    sentry_sdk.crons.capture_checkin(monitor_slug="nightly", status="ok")
    sentry_sdk.logger.info("user {name} logged in", name="ada")
    client.flush(timeout=5.0)
    assert sink.wait_for(6)

    events = items(sink, "event")  # in any order: several connections deliver at once
    assert sorted(e.json["message"] for e in events if "message" in e.json) == [
        "hello",
        "with a file",
    ]
    (error,) = [e.json for e in events if "exception" in e.json]
    assert error["exception"]["values"][0]["value"] == "boom"
    (tx,) = items(sink, "transaction")
    assert tx.json["transaction"] == "checkout"
    assert sorted(span["op"] for span in tx.json["spans"]) == ["db", "http"]
    (attachment,) = items(sink, "attachment")
    assert attachment.payload == b"\x00bin\nary\r\n"
    assert attachment.headers["filename"] == "dump.bin"
    (check_in,) = items(sink, "check_in")
    assert check_in.json["monitor_slug"] == "nightly" and check_in.json["status"] == "ok"
    (logs,) = items(sink, "log")
    assert logs.headers["item_count"] == 1
    assert logs.json["items"][0]["body"] == "user ada logged in"

    for request in sink.requests:  # our transport sent every one of them
        assert request.headers["user-agent"] == CLIENT
        assert f"sentry_client={CLIENT}" in request.headers["x-sentry-auth"]
    stats = client.transport.stats()
    assert stats["lost"] == {} and stats["delivered"] == stats["accepted"] == 6


def test_the_sdks_own_drops_reach_the_server_as_client_reports(
    init: Callable[..., Any], sink: Sink
) -> None:
    client = init(sample_rate=0.0)
    for i in range(3):
        sentry_sdk.capture_message(f"sampled out {i}")
    client.flush(timeout=5.0)
    client = init(
        before_send=lambda event, hint: None,
        before_send_transaction=lambda event, hint: None,
        traces_sample_rate=1.0,
    )
    sentry_sdk.capture_message("dropped by before_send")
    with sentry_sdk.start_transaction(name="t"):
        for _ in range(2):
            with sentry_sdk.start_span(op="work"):
                pass
    client.flush(timeout=5.0)
    assert sink.wait_for(2)
    assert not items(sink, "event") and not items(sink, "transaction")
    counts = reported(sink)
    assert counts[("sample_rate", "error")] == 3
    assert counts[("before_send", "error")] == 1
    assert counts[("before_send", "transaction")] == 1
    assert counts[("before_send", "span")] == 3  # two spans and the transaction itself
    assert client.transport.stats()["lost"]["before_send"]["error"] == 1


def test_a_reason_newer_than_our_list_goes_to_the_server_as_is(
    init: Callable[..., Any], sink: Sink
) -> None:
    def broken(log: Any, hint: Any) -> Any:
        raise RuntimeError("a bug in the app's callback")

    client = init(enable_logs=True, before_send_log=broken)
    sentry_sdk.logger.info("never sent")  # sentry_sdk 2.75 counts it as "callback_error"
    client.flush(timeout=5.0)
    assert sink.wait_for(1)
    counts = reported(sink)
    assert counts[("callback_error", "log_item")] == 1
    assert counts[("callback_error", "log_byte")] > 0  # the log's size, from its item
    assert client.transport.stats()["lost"]["callback_error"]["log_item"] == 1


def test_no_client_reports_when_the_sdk_says_so(init: Callable[..., Any], sink: Sink) -> None:
    client = init(sample_rate=0.0, send_client_reports=False)
    sentry_sdk.capture_message("sampled out")
    sentry_sdk.capture_message("delivered?")  # sampled out too: nothing to send at all
    client.flush(timeout=2.0)
    assert client.transport.stats()["lost"] == {"sample_rate": {"error": 2}}
    assert not sink.requests


def test_a_burst_of_3000_messages_is_delivered_whole(init: Callable[..., Any], sink: Sink) -> None:
    client = init()
    for i in range(3000):
        sentry_sdk.capture_message(f"burst {i}")
    client.flush(timeout=30.0)
    assert sink.wait_for(3000, timeout=30)
    assert len(items(sink, "event")) == 3000
    stats = client.transport.stats()
    assert stats["events"] == {"accepted": 3000, "delivered": 3000, "lost": 0}


def test_sync_delivers_before_capture_returns(init: Callable[..., Any], sink: Sink) -> None:
    client = init(dsn="sync+" + sink.dsn)
    assert isinstance(client.transport.inner, SyncTransport)
    for i in range(3):
        sentry_sdk.capture_message(f"now {i}")
        assert len(sink.envelopes) == i + 1  # no waiting: it is there already


def test_asyncio_backend_inside_asyncio_run(init: Callable[..., Any], sink: Sink) -> None:
    async def main() -> dict[str, Any]:
        client = init(dsn="asyncio+" + sink.dsn)
        assert isinstance(client.transport.inner, AsyncioTransport)
        for i in range(20):
            sentry_sdk.capture_message(f"loop {i}")
        assert await client.transport.aflush(5.0)
        stats: dict[str, Any] = client.transport.stats()
        for i in range(5):  # not flushed: delivered when the loop ends
            sentry_sdk.capture_message(f"last {i}")
        return stats

    stats = asyncio.run(main())
    assert stats["events"]["delivered"] == 20
    assert sink.wait_for(25)
    messages = [item.json["message"] for item in items(sink, "event")]
    assert sorted(set(messages)) == sorted(
        [f"loop {i}" for i in range(20)] + [f"last {i}" for i in range(5)]
    )
    # The flushed ones arrive once. The last five may arrive twice: asyncio.run cancels the
    # workers with requests in flight, and the asyncio runtime sends a cancelled request
    # again on its loop-end close (the same with AsyncioTransport alone; reported).
    assert all(messages.count(f"loop {i}") == 1 for i in range(20))


# -- the sdk's contract -----------------------------------------------------------------------


def test_flush_and_close_keep_their_deadline_against_a_hanging_server(
    init: Callable[..., Any], sink: Sink
) -> None:
    sink.default = Hang(10)
    client = init()
    ours = client.transport
    for i in range(5):
        sentry_sdk.capture_message(f"hanging {i}")
    started = time.monotonic()
    client.flush(timeout=1.0)
    assert 0.9 <= time.monotonic() - started < 2.0
    started = time.monotonic()
    client.close(timeout=1.0)
    assert time.monotonic() - started < 2.0
    stats = ours.stats()
    assert stats["events"] == {"accepted": 5, "delivered": 0, "lost": 5}  # final, counted


def test_kill_does_not_wait(init: Callable[..., Any], sink: Sink) -> None:
    sink.default = Hang(10)
    client = init()
    ours = client.transport
    sentry_sdk.capture_message("in flight")
    assert sink.wait_for_requests(1)
    started = time.monotonic()
    ours.kill()
    assert time.monotonic() - started < 0.5
    assert ours.stats()["events"]["lost"] == 1
    ours.capture_envelope(SdkEnvelope())  # after kill: no error either


def test_flush_calls_the_sdks_callback_only_when_it_has_to_wait(
    init: Callable[..., Any], sink: Sink
) -> None:
    calls: list[tuple[int, float]] = []
    client = init()
    client.flush(timeout=2.0, callback=lambda pending, timeout: calls.append((pending, timeout)))
    assert calls == []  # nothing pending
    sink.default = Respond(200, delay=0.5)
    sentry_sdk.capture_message("slow")
    client.flush(timeout=3.0, callback=lambda pending, timeout: calls.append((pending, timeout)))
    assert calls == [(1, 3.0)]
    assert sink.wait_for(1)

    def raising(pending: int, timeout: float) -> None:
        raise RuntimeError("a broken callback")

    sentry_sdk.capture_message("slow again")
    client.flush(timeout=3.0, callback=raising)  # its error stays with us
    assert sink.wait_for(2)


def test_parsed_dsn_health_and_stats_through_the_client(
    init: Callable[..., Any], sink: Sink
) -> None:
    client = init(dsn="threaded+" + sink.dsn + "?timeout=3")
    ours = sentry_sdk.get_client().transport
    assert isinstance(ours, SentryTransport) and isinstance(ours, SdkTransport)
    assert isinstance(ours.inner, ThreadedTransport)
    assert client.parsed_dsn is ours.parsed_dsn
    assert ours.parsed_dsn.scheme == "http" and ours.parsed_dsn.project_id == "42"
    assert ours.parsed_dsn.public_key == "public" and ours.parsed_dsn.port == sink.port
    assert ours.is_healthy()
    assert ours.inner_options.timeout == 3.0
    assert set(ours.stats()) >= {"accepted", "delivered", "lost", "events"}


def test_the_transport_never_raises_into_the_application(
    init: Callable[..., Any], sink: Sink
) -> None:
    client = init()
    ours = client.transport
    no_type = SdkItem(payload=b"x", headers={})
    del no_type.headers["content_type"]  # an item our model refuses: no "type"
    envelope = SdkEnvelope(items=[no_type])
    envelope.add_event({"message": "the rest goes"})
    ours.capture_envelope(envelope)
    ours.capture_envelope(object())  # not an envelope at all
    ours.record_lost_event("sample_rate")  # no category, no item: nothing to count
    ours.record_lost_event("Not A Reason!", data_category="error")
    ours.record_lost_event("sample_rate", item=object())
    ours.record_lost_event("sample_rate", data_category="error", quantity="two")
    ours.flush(timeout="soon")
    client.flush(timeout=5.0)
    assert sink.wait_for(1)
    assert items(sink, "event")[0].json["message"] == "the rest goes"
    lost = ours.stats()["lost"]
    assert lost["internal_sdk_error"] == {"default": 1, "error": 1}  # the item; the bad reason
    assert lost["sample_rate"] == {"default": 1}


# -- losses counted by item, as our categories do ---------------------------------------------


def test_item_based_losses_count_spans_bytes_and_batches(init: Callable[..., Any]) -> None:
    ours = init().transport
    spans = [{"op": "a"}, {"op": "b"}, {"op": "c"}]
    transaction = SdkItem(
        payload=PayloadRef(json={"type": "transaction", "spans": spans}), type="transaction"
    )
    attachment = SdkItem(payload=b"12345", type="attachment", filename="a.txt")
    empty = SdkItem(payload=b"", type="attachment", filename="empty.txt")
    log_body = {"items": [{"body": "x"}, {"body": "y"}]}
    logs = SdkItem(payload=PayloadRef(json=log_body), type="log", headers={"item_count": 2})
    for item in (transaction, attachment, empty, logs):
        ours.record_lost_event("queue_overflow", item=item)
    ours.record_lost_event("ratelimit_backoff", data_category="transaction", quantity=2)
    lost = ours.stats()["lost"]
    assert lost["queue_overflow"] == {
        "transaction": 1,
        "span": 4,  # three spans and the transaction
        "attachment": 5 + 1,  # bytes; an empty attachment counts 1
        "attachment_item": 2,
        "log_item": 2,
        "log_byte": len(json.dumps(log_body, separators=(",", ":"))),
    }
    assert lost["ratelimit_backoff"] == {"transaction": 2}


# -- envelopes: mapped, not serialized --------------------------------------------------------


def test_envelopes_are_mapped_without_encoding(tmp_path: Path) -> None:
    event: dict[str, Any] = {"event_id": "a" * 32, "message": "héllo", "extra": {"n": [1, 2]}}
    envelope = SdkEnvelope(headers={"event_id": "a" * 32, "trace": {"trace_id": "b" * 32}})
    envelope.add_event(event)  # type: ignore[arg-type]  # a plain dict, not its TypedDict
    raw = SdkItem(payload=b"\x00raw\n", type="attachment", filename="f.bin", headers={"x": [1]})
    envelope.add_item(raw)
    file = tmp_path / "app.log"
    file.write_bytes(b"line 1\nline 2\n")
    envelope.add_item(SdkItem(payload=PayloadRef(path=str(file)), type="attachment"))
    envelope.add_item(SdkItem(payload=PayloadRef(json={"future": True}), type="something_new"))

    ours = to_envelope(envelope)
    assert isinstance(ours, Envelope) and ours.headers == envelope.headers
    assert [item.headers for item in ours.items] == [item.headers for item in envelope.items]
    first = ours.items[0]
    assert not first.payload_is_encoded and first.json is event  # still the sdk's object
    assert ours.items[1].payload == b"\x00raw\n" and ours.items[1].headers["x"] == [1]
    assert ours.items[2].payload == b"line 1\nline 2\n"
    assert ours.items[3].json == {"future": True}

    again = Envelope.deserialize(ours.serialize())  # what goes on the wire parses back
    assert again.headers == envelope.headers
    for mine, theirs in zip(again.items, envelope.items, strict=True):
        assert mine.payload == theirs.get_bytes() or mine.json == json.loads(theirs.get_bytes())
    assert to_item(SdkItem(payload="text", type="attachment")).payload == b"text"


# -- DSN forms and options --------------------------------------------------------------------


def test_a_prefixed_dsn_with_options_works_in_dsn_and_in_the_environment(
    init: Callable[..., Any], sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = init(dsn=f"sync+{sink.dsn}?timeout=3")
    assert isinstance(client.transport.inner, SyncTransport)
    assert client.transport.inner_options.timeout == 3.0
    assert client.transport.parsed_dsn.project_id == "42"
    sentry_sdk.capture_message("prefixed")
    assert len(sink.envelopes) == 1

    monkeypatch.setenv("SENTRY_DSN", f"asyncio+{sink.dsn}?queue_size=7")
    client = init(dsn=None)
    assert isinstance(client.transport.inner, AsyncioTransport)
    assert client.transport.inner_options.queue_size == 7


def test_the_sdks_own_transport_refuses_a_prefixed_dsn(sink: Sink) -> None:
    # Why the prefix needs our class: the sdk parses the DSN only in its transport.
    with pytest.raises(BadDsn):
        sentry_sdk.init(dsn=f"sync+{sink.dsn}", default_integrations=False)
    sentry_sdk.get_global_scope().set_client(None)


def test_using_picks_the_backend_options_and_a_dsn_of_its_own(
    init: Callable[..., Any], sink: Sink
) -> None:
    cls = SentryTransport.using("sync", timeout=2)
    assert issubclass(cls, SentryTransport) and cls is not SentryTransport
    client = init(dsn=f"threaded+{sink.dsn}?timeout=9", transport=cls)
    assert isinstance(client.transport.inner, SyncTransport)  # using() beats the prefix
    assert client.transport.inner_options.timeout == 2.0  # and the querystring

    own = SentryTransport.using(dsn=f"sync+{sink.dsn}?retry_attempts=1")
    client = init(dsn=sink.dsn, transport=own)  # the sdk keeps a plain DSN
    assert isinstance(client.transport.inner, SyncTransport)
    assert client.transport.inner_options.retry_attempts == 1
    assert client.dsn == sink.dsn

    chained = transport(backend="asyncio", queue_size=5).using(timeout=1)
    made = chained(options(dsn=sink.dsn))
    assert isinstance(made.inner, AsyncioTransport)
    assert (made.inner_options.queue_size, made.inner_options.timeout) == (5, 1.0)
    made.kill()

    with pytest.raises(DsnError, match="nope"):
        SentryTransport.using("nope")
    with pytest.raises(DsnError, match="timeout"):
        SentryTransport.using(timeout=-1)
    with pytest.raises(DsnError, match="project id must be a number"):
        SentryTransport(options(dsn="https://key@example.com/abc"))


def test_option_precedence(sink: Sink, caplog: pytest.LogCaptureFixture) -> None:
    made = SentryTransport.using(compression_level=1)(
        options(
            dsn=f"{sink.dsn}?shutdown_timeout=7",
            shutdown_timeout=5,  # the querystring wins over the sdk
            send_client_reports=False,  # the sdk wins over our default
            http_proxy="",
            transport_queue_size=500,
            _experiments={
                "transport_compression_algo": "deflate",
                "transport_compression_level": 6,
            },
        )
    )
    o = made.inner_options
    assert o.shutdown_timeout == 7.0 and o.send_client_reports is False
    assert o.http_proxy == "" and o.queue_size == 500
    assert (o.compression, o.compression_level) == ("deflate", 1)  # using() wins over all
    made.kill()

    made = SentryTransport(options(dsn=sink.dsn))  # the sdk's defaults change nothing
    o = made.inner_options
    assert (o.queue_size, o.shutdown_timeout, o.send_client_reports) == (10_000, 2.0, True)
    assert (o.compression, o.compression_level, o.http_proxy) == ("gzip", None, None)
    made.kill()

    cases = [
        ({"transport_compression_level": 9}, ("gzip", 9)),
        ({"transport_compression_algo": "br"}, ("br", None)),
        ({"transport_compression_algo": "lzma"}, ("none", None)),
        ({"transport_compression_algo": "gzip", "transport_compression_level": 0}, ("none", None)),
        ({"transport_zlib_compression_level": 2}, ("gzip", 2)),
    ]
    for experiments, expected in cases:
        made = SentryTransport(options(dsn=sink.dsn, _experiments=experiments))
        o = made.inner_options
        assert (o.compression, o.compression_level) == expected, experiments
        made.kill()

    with caplog.at_level(logging.WARNING, logger="sentry_transport"):
        made = SentryTransport(options(dsn=sink.dsn, shutdown_timeout="soon", socket_options=[1]))
    assert made.inner_options.shutdown_timeout == 2.0  # a value we cannot use is left out
    assert "shutdown_timeout" in caplog.text and "socket_options" in caplog.text
    made.kill()


def test_https_options_keep_the_sdks_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CLIENT_CERT_FILE", "CLIENT_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    dsn = "https://public@127.0.0.1:9/42"  # nothing is sent
    made = SentryTransport(options(dsn=dsn, http_proxy="http://u:pw@127.0.0.1:3128"))
    o = made.inner_options
    assert o.ca_certs == certifi.where()  # the sdk's trust store, not the system's
    assert o.https_proxy == "http://u:pw@127.0.0.1:3128"  # the sdk's http_proxy serves https
    made.kill()
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    made = SentryTransport(options(dsn=f"{dsn}?ca_certs=", https_proxy=""))
    assert made.inner_options.ca_certs is None  # the querystring chose the system store
    assert made.inner_options.https_proxy == ""
    made.kill()


# -- the end of a program ---------------------------------------------------------------------


@pytest.mark.parametrize("defaults", [True, False], ids=["sdk-atexit", "our-exit-drain"])
def test_a_program_that_exits_without_flushing_delivers(sink: Sink, defaults: bool) -> None:
    sink.default = Respond(200, delay=0.02)
    script = f"""
        import sentry_sdk
        from sentry_transport.sdk import SentryTransport

        sentry_sdk.init(
            dsn={sink.dsn!r},
            transport=SentryTransport,
            default_integrations={defaults},
            shutdown_timeout=10,
        )
        for i in range(50):
            sentry_sdk.capture_message(f"exit {{i}}")
        # no flush, no close
    """
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert done.returncode == 0, done.stderr
    assert sink.wait_for(50, timeout=10)
    assert len(items(sink, "event")) == 50
