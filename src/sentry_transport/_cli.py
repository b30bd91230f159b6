"""The ``sentry-transport`` command.

sentry-transport demo [-n N]        start a local sink, send N events through every
                                    transport, print what was delivered and how fast
sentry-transport send DSN [-m MSG]  send one message event to a real server, print stats
sentry-transport sink [--port P]    run the local sink in the foreground
sentry-transport dsn DSN            show how a DSN is read (the secret stays hidden)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._factory import BACKENDS, make_transport, transport_class
from .core.dsn import Dsn
from .core.errors import ConfigurationError, SentryTransportError


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


def send(dsn: str, message: str, timeout: float) -> int:
    transport = make_transport(dsn)
    transport.capture_event({"level": "info", "message": {"formatted": message}})
    ok = transport.flush(timeout)
    transport.close(1.0)
    print(json.dumps(transport.stats(), indent=2, default=str))
    return 0 if ok and transport.stats()["delivered"] == 1 else 1


def show_dsn(text: str) -> int:
    dsn = Dsn.parse(text)
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
        "options": {k: getattr(dsn.options, k) for k in dsn.options.names()},
    }
    print(json.dumps(shown, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sentry-transport", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_demo = commands.add_parser("demo", help="send events through every transport to a local sink")
    p_demo.add_argument("-n", "--count", type=int, default=2000, help="events per transport")
    p_send = commands.add_parser("send", help="send one message event to a DSN")
    p_send.add_argument("dsn")
    p_send.add_argument("-m", "--message", default="Hello from sentry-transport")
    p_send.add_argument("--timeout", type=float, default=10.0)
    p_sink = commands.add_parser("sink", help="run the local sink in the foreground")
    p_sink.add_argument("--host", default="127.0.0.1")
    p_sink.add_argument("--port", type=int, default=8969)
    p_dsn = commands.add_parser("dsn", help="show how a DSN is read")
    p_dsn.add_argument("dsn")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo(args.count)
        if args.command == "send":
            return send(args.dsn, args.message, args.timeout)
        if args.command == "sink":
            from .testing import main as sink_main

            sink_main(["--host", args.host, "--port", str(args.port)])
            return 0
        return show_dsn(args.dsn)
    except (ConfigurationError, SentryTransportError) as exc:
        print(f"sentry-transport: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
