"""The ``sentry-transport`` command.

sentry-transport demo [-n N]        start a local sink, send N events through every
                                    transport, print what was delivered and how fast
sentry-transport send DSN [-m MSG]  send one message event to a real server, print stats
sentry-transport sink [--port P]    run the local sink in the foreground
sentry-transport dsn DSN            show how a DSN is read (secrets and proxy passwords hidden)
sentry-transport spool DIR          what waits in a disk spool (--send DSN: deliver it with a
                                    progress bar; --purge [--yes]: empty it)
sentry-transport --version

A user error (a bad DSN or option, a port that cannot be listened on, a bad argument) is one
line on stderr and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import ipaddress
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

from ._factory import BACKENDS, make_transport, transport_class
from .core.dsn import Dsn
from .core.errors import ConfigurationError, SentryTransportError
from .core.version import VERSION

PROG = "sentry-transport"


def _event(i: int) -> dict[str, Any]:
    return {
        "level": "error",
        "platform": "python",
        "message": {"formatted": f"sentry-transport demo event {i}"},
        "tags": {"demo": "yes"},
    }


def _row(name: str, sent: int, seconds: float, stats: dict[str, Any], seen: int) -> list[str]:
    lost = stats["events"]["lost"]
    rate = stats["delivered"] / seconds if seconds > 0 else 0.0
    return [name, str(sent), str(stats["delivered"]), str(lost), str(seen), f"{rate:,.0f}"]


def _run_blocking(backend: str, dsn: str, count: int) -> tuple[float, dict[str, Any]]:
    transport = make_transport(f"{backend}+{dsn}")
    start = time.perf_counter()
    for i in range(count):
        transport.capture_event(_event(i))
    transport.flush(30.0)
    elapsed = time.perf_counter() - start
    transport.close(5.0)
    return elapsed, transport.stats()


def _run_asyncio(backend: str, dsn: str, count: int) -> tuple[float, dict[str, Any]]:
    async def main() -> tuple[float, dict[str, Any]]:
        transport: Any = make_transport(f"{backend}+{dsn}")
        start = time.perf_counter()
        for i in range(count):
            transport.capture_event(_event(i))
        await transport.aflush(30.0)
        elapsed = time.perf_counter() - start
        await transport.aclose(5.0)
        return elapsed, transport.stats()

    return asyncio.run(main())


def installed() -> list[str]:
    """The prefixes whose libraries are installed here (every one, when the extras are)."""
    found = []
    for name, backend in BACKENDS.items():
        if backend.library is None or importlib.util.find_spec(backend.library) is not None:
            found.append(name)
    return found


def _on_asyncio(backend: str) -> bool:
    from .transports.aio import AsyncioTransport

    return issubclass(transport_class(backend), AsyncioTransport)


def demo(count: int, out: Any = sys.stdout) -> int:
    from .testing import Sink

    header = ["transport", "sent", "delivered", "lost", "sink saw", "envelopes/s"]
    rows = [header]
    failures = 0
    with Sink() as sink:
        print(f"local sink listening: {sink.dsn}", file=out)
        for backend in installed():
            before = len(sink.envelopes)
            if _on_asyncio(backend):
                elapsed, stats = _run_asyncio(backend, sink.dsn, count)
            else:
                elapsed, stats = _run_blocking(backend, sink.dsn, count)
            seen = sum(
                1
                for envelope in sink.envelopes[before:]
                if any(item.type == "event" for item in envelope.items)
            )
            rows.append(_row(backend, count, elapsed, stats, seen))
            if stats["delivered"] != count or seen != count:
                failures += 1
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)
    if failures:
        print(f"{failures} transport(s) did not deliver every event", file=out)
    return 1 if failures else 0


def _parse(text: str) -> Dsn:
    """The DSN (Dsn.parse makes the checks a real server makes first)."""
    return Dsn.parse(text)


def _mask_proxy(url: str | None) -> str | None:
    """A proxy URL with its password shown as ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"  # unreadable: show none of it
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


def send(dsn: str, message: str, timeout: float) -> int:
    transport = make_transport(_parse(dsn))
    transport.capture_event({"level": "info", "message": {"formatted": message}})
    ok = transport.flush(timeout)
    transport.close(1.0)
    print(json.dumps(transport.stats(), indent=2, default=str))
    return 0 if ok and transport.stats()["delivered"] == 1 else 1


def show_dsn(text: str) -> int:
    dsn = _parse(text)
    options = {k: getattr(dsn.options, k) for k in dsn.options.names()}
    for name in ("http_proxy", "https_proxy"):
        options[name] = _mask_proxy(options[name])
    shown = {
        "backend": dsn.backend or "threaded (default)",
        "scheme": dsn.scheme,
        "public_key": dsn.public_key,
        "secret_key": "***" if dsn.secret_key else None,
        "host": dsn.host,
        "port": dsn.effective_port,
        "path_prefix": dsn.path_prefix,
        "project_id": dsn.project_id,
        "envelope_url": dsn.envelope_url,
        "options": options,
    }
    print(json.dumps(shown, indent=2))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the usage is under ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_count.__name__ = "positive integer"  # what argparse calls it in "invalid ... value"


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


_seconds.__name__ = "positive number of seconds"


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


_port.__name__ = "port (0..65535)"


def _latency(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError(text)
    return value


_latency.__name__ = "latency (seconds >= 0)"


def _host(text: str) -> str:
    ipaddress.ip_address(text)  # the sink listens on an address, not a name
    return text


_host.__name__ = "IP address"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user error)."""
    parser = _Parser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"{PROG} {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_demo = commands.add_parser("demo", help="send events through every transport to a local sink")
    p_demo.add_argument("-n", "--count", type=_count, default=2000, help="events per transport")
    p_send = commands.add_parser("send", help="send one message event to a DSN")
    p_send.add_argument("dsn")
    p_send.add_argument("-m", "--message", default="Hello from sentry-transport")
    p_send.add_argument("--timeout", type=_seconds, default=10.0)
    p_sink = commands.add_parser("sink", help="run the local sink in the foreground")
    p_sink.add_argument("--host", type=_host, default="127.0.0.1")
    p_sink.add_argument("--port", type=_port, default=8969)
    p_sink.add_argument("--latency", type=_latency, default=0.0, help="seconds before answers")
    p_sink.add_argument("--quiet", action="store_true", help="print only the DSN")
    p_dsn = commands.add_parser("dsn", help="show how a DSN is read")
    p_dsn.add_argument("dsn")
    p_spool = commands.add_parser("spool", help="show, send or empty a disk spool")
    p_spool.add_argument("directory")
    what = p_spool.add_mutually_exclusive_group()
    what.add_argument("--send", metavar="DSN", help="deliver what waits to DSN")
    what.add_argument("--purge", action="store_true", help="delete what waits")
    p_spool.add_argument("--yes", action="store_true", help="--purge without asking")
    p_spool.add_argument("--timeout", type=_seconds, default=60.0, help="--send: at most")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo(args.count)
        if args.command == "send":
            return send(args.dsn, args.message, args.timeout)
        if args.command == "sink":
            from .testing import main as sink_main

            sink_args = ["--host", args.host, "--port", str(args.port)]
            sink_args += ["--latency", str(args.latency)] + (["--quiet"] if args.quiet else [])
            return sink_main(sink_args)  # 2 with one line on stderr when it cannot listen
        if args.command == "spool":
            from . import _cli_spool

            if args.send:
                return _cli_spool.send(args.directory, args.send, args.timeout)
            if args.purge:
                return _cli_spool.empty(args.directory, args.yes)
            return _cli_spool.show(args.directory)
        return show_dsn(args.dsn)
    except (ConfigurationError, SentryTransportError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
