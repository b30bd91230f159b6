"""The command line, and a clean interpreter exit draining the threaded transport."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from sentry_transport._cli import installed, main
from sentry_transport.testing import Respond, Sink

pytestmark = pytest.mark.network


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentry_transport", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_delivers_through_every_transport() -> None:
    done = run("demo", "-n", "200")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[3:]}
    assert set(rows) == set(installed()) >= {"sync", "threaded", "asyncio"}
    for name, cells in rows.items():
        assert cells[1:5] == ["200", "200", "0", "200"], name  # sent, delivered, lost, sink saw


def test_dsn_command_hides_the_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dsn", "gevent+https://pub:topsecret@h.example/p/7?timeout=3"]) == 0
    out = capsys.readouterr().out
    assert "topsecret" not in out and '"secret_key": "***"' in out
    assert '"envelope_url": "https://h.example/p/api/7/envelope/"' in out
    assert '"timeout": 3.0' in out


def test_bad_dsn_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dsn", "https://h.example/7"]) == 2
    assert "no public key" in capsys.readouterr().err


def test_send_reports_delivery(sentry_sink: Sink, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", sentry_sink.dsn, "-m", "hello from the cli"]) == 0
    assert '"delivered": 1' in capsys.readouterr().out
    item = sentry_sink.envelopes[0].items[0]
    assert item.json["message"]["formatted"] == "hello from the cli"


def test_send_fails_visibly(sentry_sink: Sink, capsys: pytest.CaptureFixture[str]) -> None:
    sentry_sink.default = Respond(500)
    assert main(["send", sentry_sink.dsn]) == 1
    assert '"send_error"' in capsys.readouterr().out


def test_clean_exit_drains_the_threaded_transport(sentry_sink: Sink) -> None:
    sentry_sink.default = Respond(200, delay=0.05)
    script = textwrap.dedent(
        f"""
        from sentry_transport import make_transport
        transport = make_transport({sentry_sink.dsn!r}, shutdown_timeout=10, max_connections=2)
        for i in range(20):
            transport.capture_event({{"message": {{"formatted": f"exit{{i}}"}}}})
        # no flush, no close: the interpreter's exit must drain it
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert done.returncode == 0
    assert len(sentry_sink.envelopes) == 20


def test_exit_keeps_the_shutdown_timeout(sentry_sink: Sink) -> None:
    import time

    sentry_sink.default = Respond(200, delay=5)
    script = textwrap.dedent(
        f"""
        import time
        from sentry_transport import make_transport
        transport = make_transport({sentry_sink.dsn!r}, shutdown_timeout=0.5)
        transport.capture_event({{"message": {{"formatted": "slow"}}}})
        time.sleep(0.1)
        """
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert done.returncode == 0
    assert time.monotonic() - started < 4  # start-up + 0.1 s + 0.5 s, not the server's 5 s
