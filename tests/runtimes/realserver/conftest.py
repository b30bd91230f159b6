"""A real Sentry-compatible server for this group: Bugsink, run from a venv of its own.

Bugsink (a Django app on sqlite) is installed by ``.ci/run`` into ``.venv-bugsink`` at the
repository's root, apart from our venv so that its dependencies (Django, gunicorn, its own
pinned sentry-sdk) cannot meet ours. ``SENTRY_TRANSPORT_BUGSINK_VENV`` names another venv.
Without one the group is skipped with the reason, unless ``SENTRY_TRANSPORT_REAL_SERVER=require``
(as CI sets it): then a missing server fails the group.

One server per test session: a temporary data directory, its migrations, a full-access API
token (its ``create_auth_token`` command), gunicorn on a free 127.0.0.1 port, then a team and
a project made through its REST API, whose DSN the tests send to. Digestion runs inside the
ingest request (snappea's ``TASK_ALWAYS_EAGER``), so what a flush delivered is stored when the
flush returns. ``KEEP_ENVELOPES`` makes the server keep every envelope it received, decoded,
in its database: what Bugsink does not store itself (transactions, attachments other than
minidumps, client reports) can still be checked there, byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[3]
VENV_VARIABLE = "SENTRY_TRANSPORT_BUGSINK_VENV"
REQUIRE_VARIABLE = "SENTRY_TRANSPORT_REAL_SERVER"
COMMAND_TIMEOUT = 120.0  # seconds for one management command (migrations take ~7 s here)
START_TIMEOUT = 30.0  # seconds for gunicorn to answer its health check
STOP_TIMEOUT = 10.0
_LOGS: list[Path] = []  # the running server's log, for failing tests' reports

# The server's settings module, written into its data directory. The local template's
# choices (bugsink-create-conf --template=local), with every path in the data directory,
# no outgoing network (no phone-home, no e-mail, no error reporting of its own) and the
# received envelopes kept.
SETTINGS = """\
from bugsink.settings.default import *  # noqa
from bugsink.settings.default import DATABASES
from bugsink.conf_utils import eat_your_own_dogfood

SECRET_KEY = "sentry-transport-test-only-" + "0123456789" * 4
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
DATABASES["default"]["NAME"] = {data!r} + "/db.sqlite3"
DATABASES["snappea"]["NAME"] = {data!r} + "/snappea.sqlite3"
SENTRY_DSN = None
eat_your_own_dogfood(SENTRY_DSN)
TIME_ZONE = "UTC"
SNAPPEA = {{"TASK_ALWAYS_EAGER": True}}
EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
BUGSINK = {{
    "BASE_URL": "http://127.0.0.1:{port}",
    "SINGLE_USER": True,
    "SINGLE_TEAM": True,
    "USER_REGISTRATION": "CB_NOBODY",
    "PHONEHOME": False,
    "KEEP_ENVELOPES": 1000,
    "INGEST_STORE_BASE_DIR": {data!r} + "/ingestion",
}}
"""


REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def _venv_path() -> Path:
    return Path(os.environ.get(VENV_VARIABLE) or ROOT / ".venv-bugsink")


def _required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "").lower() in ("require", "required", "1", "true")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Bugsink:
    """The running server: its DSN for the project, and ways to read what it stored."""

    url: str
    dsn: str
    project: int
    token: str
    data: Path
    log: Path
    version: str

    def api(self, path: str, method: str = "GET", body: Any = None) -> Any:
        """A call to the REST API (``/api/canonical/0/<path>``) with the token: its JSON."""
        request = urllib.request.Request(
            f"{self.url}/api/canonical/0/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read().decode()
        return json.loads(text) if text.startswith(("{", "[")) else text

    def event(self, event_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The stored event (with its full ``data``), looked up by the sdk's event id."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found: dict[str, Any] = self.api(
                    f"events/lookup/?project={self.project}&event_id={event_id}"
                )
                return found
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def has_event(self, event_id: str) -> bool:
        try:
            self.api(f"events/lookup/?project={self.project}&event_id={event_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def envelopes(self) -> list[bytes]:
        """Every envelope the server kept (KEEP_ENVELOPES), oldest first, as it read them
        (after undoing the Content-Encoding), from its database, opened read-only."""
        uri = f"file:{self.data / 'db.sqlite3'}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=10) as db:
            rows = db.execute("SELECT data FROM ingest_envelope ORDER BY id").fetchall()
        return [bytes(row[0]) for row in rows]


def _run(venv: Path, data: Path, command: str, *args: str) -> str:
    """One of the server's commands, run in its data directory: its output."""
    done = subprocess.run(
        [str(venv / "bin" / command), *args],
        cwd=data,
        env=_server_env(data),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        shown = " ".join((command, *args))
        raise RuntimeError(f"{shown} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def _server_env(data: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTHON", "VIRTUAL_ENV", "DJANGO", "SENTRY_"))
    }
    env.update(DJANGO_SETTINGS_MODULE="bugsink_conf", PYTHONPATH=str(data), HOME=str(data))
    return env


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"bugsink did not start within {START_TIMEOUT} s:\n{log.read_text()}")


# Runs the server's command in its place, first asking Linux to send it SIGTERM if this pytest
# process dies without stopping it (PR_SET_PDEATHSIG, kept across exec). Not a preexec_fn:
# that makes subprocess fork, and eventlet, imported here by sentry_sdk's probing, warns then.
DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform == 'linux':\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(STOP_TIMEOUT)


@pytest.fixture(scope="session")
def bugsink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bugsink]:
    venv = _venv_path()
    if not (venv / "bin" / "gunicorn").exists() or not (venv / "bin" / "bugsink-manage").exists():
        reason = (
            f"no Bugsink venv at {venv} (${VENV_VARIABLE} names another): python3 -m venv "
            f"{venv} && {venv}/bin/pip install -r {REQUIREMENTS.relative_to(ROOT)}"
        )
        if _required():
            pytest.fail(f"{REQUIRE_VARIABLE}=require and {reason}", pytrace=False)
        pytest.skip(reason)
    data = tmp_path_factory.mktemp("bugsink")
    port = _free_port()
    (data / "bugsink_conf.py").write_text(SETTINGS.format(data=str(data), port=port))
    version = _run(venv, data, "bugsink-show-version").strip()
    _run(venv, data, "bugsink-manage", "migrate", "--noinput")
    _run(venv, data, "bugsink-manage", "migrate", "snappea", "--database=snappea", "--noinput")
    token = _run(venv, data, "bugsink-manage", "create_auth_token").strip().splitlines()[-1]
    log = data / "server.log"
    _LOGS.append(log)
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [
                str(venv / "bin" / "python"),
                "-c",
                DIE_WITH_PARENT,
                str(venv / "bin" / "gunicorn"),
                f"--bind=127.0.0.1:{port}",
                "--workers=1",
                "--threads=4",
                "--timeout=30",
                "--graceful-timeout=5",
                "--no-control-socket",
                "--access-logfile=-",
                f"--chdir={data}",
                "bugsink.wsgi",
            ],
            cwd=data,
            env=_server_env(data),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_ready(url, server, log)
        partial = Bugsink(url, "", 0, token, data, log, version)
        team = partial.api("teams/", "POST", {"name": "sentry-transport"})
        made = partial.api("projects/", "POST", {"name": "realserver", "team": team["id"]})
        project = partial.api(f"projects/{made['id']}/")
        assert urlsplit(project["dsn"]).hostname == "127.0.0.1", project["dsn"]
        yield Bugsink(url, project["dsn"], int(project["id"]), token, data, log, version)
    finally:
        _stop(server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test's report shows the end of the server's log."""
    report = yield
    if report.failed and _LOGS and _LOGS[-1].exists():
        tail = _LOGS[-1].read_text(errors="replace").splitlines()[-40:]
        report.sections.append(("bugsink log (last 40 lines)", "\n".join(tail)))
    return report
