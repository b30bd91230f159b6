"""What sentry_sdk sends through our transport, as a real Sentry-compatible server stores it.

The server is Bugsink (conftest.py). Each test starts the sdk with the README's one line,
``sentry_sdk.init(dsn=..., transport=SentryTransport)`` (a subclass that also keeps a copy of
each envelope the sdk hands us, before we touch it), flushes, then reads what the server
stored: events through its REST API (looked up by the sdk's event id), and the envelopes it
received through the copy it keeps of each (``KEEP_ENVELOPES``), decoded by sentry_sdk's own
parser. Bugsink stores errors and messages; transactions it refuses by a rate limit sent with
every answer, and attachments other than minidumps it reads and drops: for those the kept
envelope is the server's record of what arrived.
"""

from __future__ import annotations

import json
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

with warnings.catch_warnings():
    # eventlet (installed for its own test group) warns when sentry_sdk probes for it
    warnings.simplefilter("ignore")
    import sentry_sdk
    from sentry_sdk.envelope import Envelope as SdkEnvelope
    from sentry_sdk.envelope import Item as SdkItem

from sentry_transport.sdk import SentryTransport

REQUIREMENTS = Path(__file__).with_name("requirements.txt")

if TYPE_CHECKING:
    from conftest import Bugsink

pytestmark = pytest.mark.network

FLUSH = 10.0  # seconds: the longest a test waits for delivery


@dataclass
class Sent:
    """One envelope as the sdk handed it to us: headers, and each item's headers and payload
    (JSON as it will read once encoded; bytes as they are)."""

    headers: dict[str, Any]
    items: list[tuple[dict[str, Any], Any]]

    def of_type(self, kind: str) -> list[tuple[dict[str, Any], Any]]:
        return [(headers, payload) for headers, payload in self.items if headers["type"] == kind]


def _payload(item: SdkItem) -> Any:
    if item.payload.json is not None:
        return json.loads(json.dumps(item.payload.json))
    return item.payload.get_bytes()


def recording(sent: list[Sent]) -> type[SentryTransport]:
    class Recording(SentryTransport):
        def capture_envelope(self, envelope: SdkEnvelope) -> None:
            items = [(dict(item.headers), _payload(item)) for item in envelope.items]
            sent.append(Sent(dict(envelope.headers), items))
            super().capture_envelope(envelope)

    return Recording


@dataclass
class Started:
    client: Any
    sent: list[Sent]

    def flush(self) -> dict[str, Any]:
        """Flush (bounded); our books afterwards, with nothing left queued or in flight."""
        self.client.flush(timeout=FLUSH)
        stats: dict[str, Any] = self.client.transport.stats()
        assert stats["queued"] == 0 and stats["in_flight"] == 0, stats
        return stats

    def event(self, event_id: str) -> dict[str, Any]:
        """The event the sdk sent with this id, as it sent it."""
        found = [
            payload
            for envelope in self.sent
            for _, payload in envelope.of_type("event")
            if payload["event_id"] == event_id
        ]
        assert len(found) == 1, f"the sdk sent {len(found)} events with id {event_id}"
        return found[0]


@pytest.fixture
def start(bugsink: Bugsink) -> Iterator[Callable[..., Started]]:
    """``start(backend=None, transport_options={}, **sdk_options)``: sentry_sdk.init with our
    transport (as ``SentryTransport.using(backend, **transport_options)``) and the server's
    DSN. Each client is closed afterwards and the sdk's global state put back."""
    clients: list[Any] = []

    def begin(
        backend: str | None = None,
        transport_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> Started:
        sent: list[Sent] = []
        transport = recording(sent)
        if backend is not None or transport_options:
            transport = transport.using(backend, **(transport_options or {}))
        options.setdefault("default_integrations", False)
        sentry_sdk.init(dsn=bugsink.dsn, transport=transport, **options)
        client = sentry_sdk.get_client()
        clients.append(client)
        return Started(client, sent)

    try:
        yield begin
    finally:
        for client in clients:
            client.close(timeout=FLUSH)
        sentry_sdk.get_global_scope().set_client(None)
        sentry_sdk.get_isolation_scope().clear()
        sentry_sdk.get_current_scope().clear()


def kept(bugsink: Bugsink, event_id: str | None = None) -> list[SdkEnvelope]:
    """The envelopes the server kept, parsed by sentry_sdk; those for ``event_id`` if given."""
    envelopes = []
    for raw in bugsink.envelopes():
        try:
            envelopes.append(SdkEnvelope.deserialize(raw))
        except ValueError:  # one the server could not decode (it keeps it all the same)
            continue
    if event_id is None:
        return envelopes
    return [envelope for envelope in envelopes if envelope.headers.get("event_id") == event_id]


def assert_stored_as_sent(bugsink: Bugsink, run: Started, event_id: str) -> dict[str, Any]:
    """The server stored the event under the sdk's id, its content what the sdk sent."""
    stored = bugsink.event(event_id)
    assert uuid.UUID(stored["event_id"]) == uuid.UUID(event_id)
    assert stored["project"] == bugsink.project
    assert stored["data"] == run.event(event_id)
    data: dict[str, Any] = stored["data"]
    return data


def test_the_server_is_the_pinned_bugsink(bugsink: Bugsink) -> None:
    """What this group checks holds for the version requirements.txt pins (CI installs it)."""
    pins = [
        line.split("==", 1)[1].strip()
        for line in REQUIREMENTS.read_text().splitlines()
        if line.startswith("bugsink==")
    ]
    assert pins == [bugsink.version]


# -- messages ---------------------------------------------------------------------------------


BACKENDS = ["threaded", "sync", "urllib3", "requests", "threaded+requests"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_message_is_stored_as_the_sdk_sent_it(
    bugsink: Bugsink, start: Callable[..., Started], backend: str
) -> None:
    run = start(backend, release="realserver@1.0", environment="ci")
    text = f"hello from {backend}: naïve café ✓ \U0001f680"
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("backend", backend)
        scope.set_extra("payload", {"list": [1, 2.5, None, True], "text": 'a\nb"c'})
        scope.set_user({"id": "42", "email": "user@example.com"})
        event_id = sentry_sdk.capture_message(text, level="warning")
    assert event_id is not None
    stats = run.flush()
    assert stats["lost"] == {} and stats["events"]["delivered"] == 1, stats

    data = assert_stored_as_sent(bugsink, run, event_id)
    assert data["message"] == text
    assert data["level"] == "warning"
    assert data["tags"]["backend"] == backend
    assert data["extra"]["payload"] == {"list": [1, 2.5, None, True], "text": 'a\nb"c'}
    assert data["user"] == {"id": "42", "email": "user@example.com"}
    assert data["release"] == "realserver@1.0" and data["environment"] == "ci"
    # ... and it is an issue of the project, found by the server's own search
    issue = bugsink.api(f"issues/{bugsink.event(event_id)['issue']}/")
    assert issue["project"] == bugsink.project


@pytest.mark.parametrize("compression", ["gzip", "br", "none"])
def test_a_compressed_body_is_stored_intact(
    bugsink: Bugsink, start: Callable[..., Started], compression: str
) -> None:
    """Every body compressed (threshold 0) with each encoding both we and the server have."""
    run = start(transport_options={"compression": compression, "compression_threshold": 0})
    assert run.client.transport.inner_options.compression == compression
    for n in range(50):
        sentry_sdk.add_breadcrumb(message=f"step {n} " + "xyz" * 100, data={"n": n})
    event_id = sentry_sdk.capture_message(f"compressed with {compression}")
    assert event_id is not None
    stats = run.flush()
    assert stats["lost"] == {}, stats
    data = assert_stored_as_sent(bugsink, run, event_id)
    assert len(data["breadcrumbs"]["values"]) == 50


def test_deflate_is_refused_by_bugsink_and_counted_lost(
    bugsink: Bugsink, start: Callable[..., Started]
) -> None:
    """A known disagreement, pinned so that it stays visible: for ``Content-Encoding: deflate``
    we send the zlib format (RFC 9110, 8.4.1.2); Bugsink 2.6.2 reads a raw deflate stream
    (no zlib header), fails, and answers 400. The event is not stored, and our books say so
    (``send_error``) rather than counting it delivered. sentry_sdk itself sends only gzip/br."""
    run = start(transport_options={"compression": "deflate", "compression_threshold": 0})
    event_id = sentry_sdk.capture_message("compressed with deflate")
    assert event_id is not None
    stats = run.flush()
    assert stats["lost"] == {"send_error": {"error": 1}}, stats
    assert stats["events"] == {"accepted": 1, "delivered": 0, "lost": 1}, stats
    assert not bugsink.has_event(event_id)
    assert "while decompressing data" in bugsink.log.read_text(errors="replace")


# -- exceptions -------------------------------------------------------------------------------


def _parse(text: str) -> int:
    return int(text)


def _load(config: dict[str, str]) -> int:
    try:
        return _parse(config["port"])
    except ValueError as exc:
        raise RuntimeError("bad port in config") from exc


def test_an_exception_is_stored_with_its_stack_trace(
    bugsink: Bugsink, start: Callable[..., Started]
) -> None:
    run = start()
    try:
        _load({"port": "eighty"})
    except RuntimeError:
        event_id = sentry_sdk.capture_exception()
    assert event_id is not None
    stats = run.flush()
    assert stats["lost"] == {}, stats

    data = assert_stored_as_sent(bugsink, run, event_id)
    values = data["exception"]["values"]  # the cause first, as the sdk orders a chain
    assert [(value["type"], value["value"]) for value in values] == [
        ("ValueError", "invalid literal for int() with base 10: 'eighty'"),
        ("RuntimeError", "bad port in config"),
    ]
    cause, outer = (value["stacktrace"]["frames"] for value in values)
    assert [frame["function"] for frame in cause][-1] == "_parse"
    assert [frame["function"] for frame in outer][-2:] == [
        "test_an_exception_is_stored_with_its_stack_trace",
        "_load",
    ]
    last = cause[-1]
    assert last["context_line"].strip() == "return int(text)"
    assert last["vars"] == {"text": "'eighty'"}
    assert last["abs_path"] == __file__ and last["in_app"] is True
    assert isinstance(last["lineno"], int) and last["pre_context"] and last["post_context"]

    # The server reads the frames itself: its own rendering of the stack trace names them.
    rendered = bugsink.api(f"events/{bugsink.event(event_id)['id']}/stacktrace/")
    for piece in ("RuntimeError", "bad port in config", "_load", "_parse", "return int(text)"):
        assert piece in rendered, f"{piece!r} not in the server's stack trace:\n{rendered}"


# -- event ids --------------------------------------------------------------------------------


def test_every_event_of_a_burst_is_stored_once_under_the_sdks_id(
    bugsink: Bugsink, start: Callable[..., Started]
) -> None:
    """Three threads capture 30 events at once (several requests in flight): each is stored,
    under the id capture_* returned, which is also the envelope's and the payload's, once."""
    run = start()
    ids: list[str] = []
    lock = threading.Lock()

    def capture(thread: int) -> None:
        for n in range(10):
            event_id = sentry_sdk.capture_message(f"burst {thread}.{n}")
            assert event_id is not None
            with lock:
                ids.append(event_id)

    threads = [threading.Thread(target=capture, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(FLUSH)
    assert len(ids) == 30 and len(set(ids)) == 30
    stats = run.flush()
    assert stats["lost"] == {} and stats["events"]["delivered"] == 30, stats

    for envelope in run.sent:
        ((_, payload),) = envelope.of_type("event")
        assert envelope.headers["event_id"] == payload["event_id"]
    for event_id in ids:
        data = assert_stored_as_sent(bugsink, run, event_id)
        assert data["message"].startswith("burst ")
        assert len(kept(bugsink, event_id)) == 1, "the server received it more than once"


# -- attachments ------------------------------------------------------------------------------


def test_attachments_arrive_byte_for_byte(bugsink: Bugsink, start: Callable[..., Started]) -> None:
    """Bugsink stores no attachment but minidumps: it keeps the envelope they came in, decoded,
    and its items are the sdk's, byte for byte; the event itself is stored as sent."""
    run = start(transport_options={"compression": "gzip", "compression_threshold": 0})
    binary = bytes(range(256)) * 64 + b"\r\n\n\x00end"  # every byte value, and newlines
    text = "première ligne\nzweite Zeile ✓\n".encode()
    with sentry_sdk.new_scope() as scope:
        scope.add_attachment(bytes=binary, filename="dump.bin", content_type="application/x-raw")
        scope.add_attachment(bytes=text, filename="notes.txt", content_type="text/plain")
        event_id = sentry_sdk.capture_message("with two attachments")
    assert event_id is not None
    stats = run.flush()
    assert stats["lost"] == {}, stats

    assert_stored_as_sent(bugsink, run, event_id)
    (envelope,) = kept(bugsink, event_id)
    arrived = [item for item in envelope.items if item.type == "attachment"]
    assert [(item.headers["filename"], item.payload.get_bytes()) for item in arrived] == [
        ("dump.bin", binary),
        ("notes.txt", text),
    ]
    (sent,) = [e for e in run.sent if e.headers.get("event_id") == event_id]
    for item, (headers, payload) in zip(arrived, sent.of_type("attachment"), strict=True):
        assert item.headers == {**headers, "length": len(payload)}  # the wire's length added


# -- transactions -----------------------------------------------------------------------------


def test_transactions_are_refused_by_a_rate_limit_we_keep_and_report(
    bugsink: Bugsink, start: Callable[..., Started]
) -> None:
    """Bugsink stores no transaction: it receives the first (and keeps its envelope, as sent),
    and every answer limits transactions and spans (X-Sentry-Rate-Limits). We keep that limit:
    the next transaction is not sent, counted lost as ratelimit_backoff, and the client report
    saying so reaches the server. Errors still go through."""
    before = len(kept(bugsink))
    run = start(traces_sample_rate=1.0)
    with (
        sentry_sdk.start_transaction(name="first", op="task") as first,
        sentry_sdk.start_span(op="child", name="work"),
    ):
        pass
    stats = run.flush()
    assert stats["lost"] == {} and stats["delivered"] == 1, stats
    assert {"transaction", "span"} <= set(stats["rate_limits"]), stats

    (sent,) = [e for e in run.sent if e.of_type("transaction")]
    ((_, transaction),) = sent.of_type("transaction")
    assert transaction["transaction"] == "first"
    assert transaction["contexts"]["trace"]["trace_id"] == first.trace_id
    (envelope,) = kept(bugsink, transaction["event_id"])
    (item,) = envelope.items
    assert item.type == "transaction" and json.loads(item.payload.get_bytes()) == transaction
    assert not bugsink.has_event(transaction["event_id"])

    with sentry_sdk.start_transaction(name="second", op="task"):
        pass
    event_id = sentry_sdk.capture_message("an error still goes through")
    assert event_id is not None
    stats = run.flush()
    assert stats["lost"] == {"ratelimit_backoff": {"transaction": 1, "span": 1}}, stats
    assert_stored_as_sent(bugsink, run, event_id)

    run.client.close(timeout=FLUSH)  # the client report has gone out by now (at the latest)
    reports = [
        json.loads(item.payload.get_bytes())
        for envelope in kept(bugsink)[before:]
        for item in envelope.items
        if item.type == "client_report"
    ]
    discarded = {
        (entry["reason"], entry["category"]): entry["quantity"]
        for report in reports
        for entry in report["discarded_events"]
    }
    assert discarded == {("ratelimit_backoff", "transaction"): 1, ("ratelimit_backoff", "span"): 1}
