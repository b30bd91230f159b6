"""Caller cost while the calling thread is busy running Python (as a request handler is).

bench_threaded.py times ``capture_envelope`` from a thread that mostly waits; here the caller
spins between captures (holding the GIL), capturing at a steady rate while the transport
delivers. Reports the call's median / p99 / max microseconds, how many worker threads the
transport started, and delivered / lost, for sentry_sdk and for ours at several
``max_connections``.

    .venv/bin/python bench/busy_caller.py [--rate 300] [--count 600] [--size 100000]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench_threaded import SDK, Ours, Peer, SinkProcess, events_like, percentile
from events import large_event, small_event

from sentry_transport import make_transport


class OursWith(Ours):
    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.name = f"sentry-transport, max_connections={max_connections}"

    def open(self, dsn: str) -> Any:
        return make_transport(dsn, max_connections=self.max_connections)


def busy_run(peer: Peer, dsn: str, template: dict[str, Any], count: int, rate: float) -> str:
    envelopes = [peer.envelope(event) for event in events_like(template, count)]
    transport = peer.open(dsn)
    capture = transport.capture_envelope
    calls: list[int] = []
    try:
        due = time.perf_counter()
        for envelope in envelopes:
            due += 1 / rate
            while time.perf_counter() < due:  # busy: the caller keeps the GIL
                pass
            start = time.perf_counter_ns()
            capture(envelope)
            calls.append(time.perf_counter_ns() - start)
        peer.flush(transport, 30.0)
        delivered, lost = peer.counts(transport)
        workers = transport.stats()["workers"] if hasattr(transport, "stats") else 1
    finally:
        peer.close(transport)
    return (
        f"{peer.name:38} median {percentile(calls, 0.5) / 1000:6.1f}  "
        f"p99 {percentile(calls, 0.99) / 1000:8.1f}  max {max(calls) / 1000:8.0f}  "
        f"over 1 ms: {sum(ns > 1_000_000 for ns in calls):3}  workers {workers:2}  "
        f"delivered {delivered}/{count}, lost {lost}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0, help="captures per second")
    parser.add_argument("--count", type=int, default=600, help="captures per run")
    parser.add_argument("--size", type=int, default=100_000, help="event JSON bytes (0: ~1 KB)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    template = large_event(args.size) if args.size else small_event()
    peers: list[Peer] = [SDK, OursWith(1), OursWith(4), OursWith(16)]
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"{args.count} captures at {args.rate:.0f}/s from a busy thread; capture_envelope µs:")
    with SinkProcess() as sink, sink.paused():
        for _ in range(args.repeats):
            for peer in peers:
                print(busy_run(peer, sink.dsn, template, args.count, args.rate), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
