"""What a user sees in the ``sentry_transport`` log: a warning when delivery starts failing
(with the reason), an info line when it recovers, debug per request, never a secret, and
never one line per event under a sustained failure."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from sentry_transport import make_transport
from sentry_transport.testing import Proxy, Respond, Sink

pytestmark = pytest.mark.network

FAST = {"timeout": 1.0, "retry_attempts": 1, "retry_backoff": 0.01, "retry_deadline": 5.0}


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as started:
        yield started


def ours(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sentry_transport" and r.levelno == level
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("backend", ["sync", "threaded", "asyncio"])
def test_one_warning_for_a_sustained_failure(
    caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    caplog.set_level(logging.INFO, logger="sentry_transport")
    transport = make_transport(f"{backend}+http://k@127.0.0.1:{free_port()}/1", **FAST)
    for i in range(20):
        transport.capture_event({"message": f"e{i}"})
    transport.close(5)
    failing = [m for m in ours(caplog, logging.WARNING) if "is failing" in m]
    assert failing == [f"delivery to http://127.0.0.1:{transport.dsn.port}/api/1/envelope/"
                       " is failing: connection refused"]  # fmt: skip
    closing = [m for m in ours(caplog, logging.WARNING) if m.startswith("closed:")]
    assert closing == [
        f"closed: 20 of 20 events were not delivered to {transport.dsn.envelope_url} "
        "(see stats()['lost'])"
    ]


def test_wrong_key_says_so_and_recovery_is_an_info(
    caplog: pytest.LogCaptureFixture, sink: Sink
) -> None:
    caplog.set_level(logging.INFO, logger="sentry_transport")
    sink.script(Respond(401), Respond(401))
    transport = make_transport(f"threaded+{sink.dsn}", max_connections=1, **FAST)
    for i in range(4):
        transport.capture_event({"message": f"e{i}"})
    assert transport.flush(5)
    warnings = ours(caplog, logging.WARNING)
    assert len(warnings) == 1 and warnings[0].endswith("HTTP 401 (the DSN's key was refused)")
    assert ours(caplog, logging.INFO) == [f"delivery to {transport.dsn.envelope_url} works again"]
    transport.close(1)


def test_debug_per_request_and_no_secret_anywhere(
    caplog: pytest.LogCaptureFixture, sink: Sink
) -> None:
    caplog.set_level(logging.DEBUG, logger="sentry_transport")
    with Proxy() as proxy:
        dsn = sink.dsn.replace("://public@", "://public:TOPSECRET@")
        proxy_url = proxy.url.replace("http://", "http://user:PROXYPASS@")
        transport = make_transport(f"threaded+{dsn}", http_proxy=proxy_url, **FAST)
        sink.script(Respond(500))
        for i in range(3):
            transport.capture_event({"message": f"e{i}"})
        assert transport.flush(5)
        transport.close(1)
    debug = ours(caplog, logging.DEBUG)
    assert sum("sent 1 item(s)" in m for m in debug) == 3, debug
    assert sum("client report" in m for m in debug) == 1, debug  # of the 500's loss
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(transport)
    assert "TOPSECRET" not in text and "PROXYPASS" not in text
    assert "HTTP 500 (server error)" in text
