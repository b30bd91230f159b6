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


# -- user errors: one line on stderr, a non-zero exit, no traceback -----------------------------


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line in-process; the one stderr line of its user error."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["dsn", "https://k@h.example/<project>"], "project id must be a number, not '<project>'"),
        (["dsn", "https://k@h.example/abc"], "project id must be a number, not 'abc'"),
        (["send", "https://k@127.0.0.1:9/abc"], "project id must be a number"),
        (["dsn", "https://k@h.example/1?bogus=1"], "unknown transport option 'bogus'"),
        (["dsn", "ftp://k@h.example/1"], "unsupported DSN scheme"),
        (["send", "nope+https://k@127.0.0.1:9/1"], "unknown transport prefix 'nope+'"),
        (["send", "https://k@127.0.0.1:9/1?ca_certs=/nope.pem"], "'/nope.pem'"),
        (["send", "https://k@127.0.0.1:9/1", "--timeout", "-1"], "--timeout"),
        (["demo", "-n", "0"], "-n/--count"),
        (["demo", "-n", "many"], "-n/--count"),
        (["sink", "--port", "70000"], "--port"),
        (["sink", "--host", "localhost.invalid"], "--host"),
        (["sink", "--latency", "-1"], "--latency"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: command"),
    ],
)
def test_each_user_error_is_one_clear_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = fails(argv, capsys)
    assert line.startswith("sentry-transport")
    assert says in line


def test_sink_that_cannot_listen_fails_with_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("sink", "--port", str(port), timeout=30)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], lines
    assert done.stdout == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from sentry_transport import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"sentry-transport {__version__}"


def test_dsn_command_hides_proxy_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = (
        "https://pub:topsecret@h.example/7?https_proxy=http://bob:hunter2@proxy.example:3128"
        "&http_proxy=http://alice@proxy.example:8080"
    )
    assert main(["dsn", dsn]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "topsecret" not in out
    assert '"https_proxy": "http://bob:***@proxy.example:3128"' in out
    assert '"http_proxy": "http://alice@proxy.example:8080"' in out  # no password to hide
