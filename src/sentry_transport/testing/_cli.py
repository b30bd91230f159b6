"""``python -m sentry_transport.testing``: a sink in the foreground that prints what it gets.

How it works: it starts a ``Sink`` that keeps no records (so a long run does not grow), with
an observer that puts each finished request on a queue. The main thread prints the DSN,
then one line per request from the queue, until SIGINT or SIGTERM sets the done flag; the
sink is stopped and the previous signal handlers are put back on the way out.
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ._record import Received
from .lean import LeanServer
from .sink import Sink


def _describe(record: Received) -> str:
    envelope = record.envelope
    event_id = (envelope.event_id if envelope is not None else None) or "-"
    types = ",".join(item.type for item in envelope.items) if envelope is not None else "-"
    status = "-" if record.status is None else str(record.status)
    line = f"{event_id} {types or '-'} {status}"
    if record.error:
        line += f" ({record.error})"
    return line


def _served(args: argparse.Namespace) -> dict[str, Any]:
    """What the sink and the lean server are both made with."""
    return {
        "host": args.host,
        "port": args.port,
        "project_id": args.project_id,
        "public_key": args.public_key,
        "latency": args.latency,
    }


def _lean(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--lean``: a ``LeanServer`` in the foreground until SIGINT or SIGTERM."""
    try:
        server = LeanServer(**_served(args))
    except ValueError as exc:
        parser.error(str(exc))
    done = threading.Event()
    try:
        server.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    previous = _on_signals(lambda signum, frame: done.set())
    try:
        print(server.dsn, flush=True)
        shown = None
        while not done.wait(0.1):
            if args.quiet:
                continue
            totals = (server.requests, server.statuses[200], server.body_bytes)
            if totals != shown:
                print("count {} {} {}".format(*totals), flush=True)
                shown = totals
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _on_signals(handler: Any) -> dict[signal.Signals, Any]:
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    """Run a sink in the foreground: print its DSN, then a line per request, until a signal."""
    parser = argparse.ArgumentParser(
        prog="python -m sentry_transport.testing",
        description="A local Sentry-compatible server that accepts and prints envelopes.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--project-id", default="42")
    parser.add_argument("--public-key", default="public")
    parser.add_argument("--quiet", action="store_true", help="print only the DSN")
    parser.add_argument(
        "--lean",
        action="store_true",
        help="a lean server for benchmarks: bodies are counted, not decoded; without --quiet "
        "it prints 'count <requests> <2xx answers> <body bytes>' when the totals change",
    )
    args = parser.parse_args(argv)
    if args.lean:
        return _lean(parser, args)

    done = threading.Event()
    lines: queue.SimpleQueue[Received | None] = queue.SimpleQueue()

    def on_signal(signum: int, frame: object) -> None:
        done.set()
        lines.put(None)  # wake the loop below

    try:
        sink = Sink(**_served(args))
    except ValueError as exc:
        parser.error(str(exc))
    sink._keep = False  # a long-running sink must not grow without end
    if not args.quiet:
        sink._observer = lines.put
    try:
        sink.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    previous = _on_signals(on_signal)
    try:
        print(sink.dsn, flush=True)
        while not done.is_set():
            try:
                record = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if record is not None:
                print(_describe(record), flush=True)
    finally:
        sink.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
