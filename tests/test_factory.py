"""make_transport: DSN prefixes, classes, instances and plain functions."""

from __future__ import annotations

from typing import Any

import pytest

from sentry_transport import (
    AsyncioTransport,
    ConfigurationError,
    DsnError,
    Envelope,
    FunctionTransport,
    SyncTransport,
    ThreadedTransport,
    Transport,
    make_transport,
)

DSN = "https://public:secret@sentry.example.com/42"


@pytest.mark.parametrize(
    ("prefix", "cls"),
    [
        ("", ThreadedTransport),
        ("threaded+", ThreadedTransport),
        ("sync+", SyncTransport),
        ("asyncio+", AsyncioTransport),
    ],
)
def test_prefix_picks_the_transport(prefix: str, cls: type) -> None:
    transport = make_transport(prefix + DSN)
    try:
        assert type(transport) is cls
        assert transport.dsn is not None and transport.dsn.envelope_url == (
            "https://sentry.example.com/api/42/envelope/"
        )
    finally:
        transport.close(0)


@pytest.mark.parametrize("prefix", ["", "sync+", "requests+", "threaded+requests+", "urllib3+"])
def test_a_runtime_of_threads_is_not_taken_for_patched(prefix: str) -> None:
    """What tells a later gevent or eventlet patch apart reads False in an unpatched
    process, whatever the runtime keeps of its own (a rebuild per capture would resend)."""
    transport = make_transport(prefix + DSN)
    try:
        assert transport._pump.runtime.patched() is False  # type: ignore[attr-defined]
    finally:
        transport.close(0)


def test_options_from_querystring_and_keywords() -> None:
    transport = make_transport("sync+" + DSN + "?timeout=7&verify_ssl=0", timeout=2)
    assert isinstance(transport, SyncTransport)
    assert transport.options.timeout == 2.0  # keyword wins over the querystring
    assert transport.options.verify_ssl is False


def test_unknown_prefix_lists_the_known_ones() -> None:
    with pytest.raises(
        DsnError, match=r"unknown transport prefix 'carrier\+'.*sync\+.*threaded\+.*asyncio\+"
    ):
        make_transport("carrier+" + DSN)


def test_planned_prefix_is_a_clear_error() -> None:
    with pytest.raises(DsnError, match=r"'http2\+' is not available in this version"):
        make_transport("http2+" + DSN)


def test_a_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from sentry_transport import MissingDependencyError, registry

    missing = registry.Backend(
        "carrier", "sentry_transport.transports.sync", "SyncTransport", "no_such_lib", "carrier"
    )
    monkeypatch.setitem(registry.BACKENDS, "carrier", missing)
    with pytest.raises(MissingDependencyError, match=r"pip install 'sentry-transport\[carrier\]'"):
        make_transport("carrier+" + DSN)


def test_bad_option_is_a_dsn_error() -> None:
    with pytest.raises(DsnError, match="unknown transport option 'timeuot'"):
        make_transport(DSN + "?timeuot=3")


def test_class_is_called_with_the_dsn_and_options() -> None:
    transport = make_transport(SyncTransport, DSN, timeout=3)
    assert isinstance(transport, SyncTransport) and transport.options.timeout == 3.0


def test_instance_is_returned_as_is() -> None:
    transport = make_transport("sync+" + DSN)
    assert make_transport(transport) is transport
    with pytest.raises(ConfigurationError):
        make_transport(transport, timeout=1)


def test_callable_becomes_a_function_transport() -> None:
    received: list[Envelope] = []
    transport = make_transport(received.append)
    assert isinstance(transport, FunctionTransport)
    transport.capture_event({"message": {"formatted": "hi"}})
    assert len(received) == 1 and received[0].items[0].type == "event"
    assert transport.stats()["events"] == {"accepted": 1, "delivered": 1, "lost": 0}


def test_function_transport_counts_a_failing_function_as_send_error() -> None:
    def broken(envelope: Envelope) -> None:
        raise RuntimeError("down")

    transport = make_transport(broken)
    transport.capture_event({"message": {"formatted": "hi"}})
    stats = transport.stats()
    assert stats["lost"] == {"send_error": {"error": 1}}
    assert stats["events"] == {"accepted": 1, "delivered": 0, "lost": 1}
    assert "RuntimeError: down" in (stats["last_error"] or "")
    transport.close()
    transport.capture_event({"message": {"formatted": "late"}})
    assert transport.stats()["lost"]["queue_overflow"] == {"error": 1}


def test_not_a_transport() -> None:
    with pytest.raises(ConfigurationError, match="DSN string"):
        make_transport(42)  # type: ignore[arg-type]


def test_secret_is_never_shown() -> None:
    transport = make_transport("sync+" + DSN)
    assert "secret" not in repr(transport) and "secret" not in str(transport.dsn)
    assert "***" in repr(transport)


def test_custom_transport_subclass() -> None:
    class Recording(Transport):
        def __init__(self, **options: Any) -> None:
            self.seen: list[Envelope] = []

        def capture_envelope(self, envelope: Envelope) -> None:
            self.seen.append(envelope)

        def record_lost_event(
            self, reason: str, category: str = "error", quantity: int = 1
        ) -> None:
            pass

        def stats(self) -> dict[str, Any]:
            return {"accepted": len(self.seen), "delivered": 0, "lost": {}}

    transport = make_transport(Recording)
    transport.capture_event({"message": {"formatted": "x"}})
    assert transport.stats()["accepted"] == 1
