"""sentry-transport's default ThreadedTransport vs sentry_sdk's default HttpTransport.

Both peers run in this process, one after the other, against the same local sink running in
a separate process (``python -m sentry_transport.testing``), so the sink never competes with
the client for the GIL. Each peer gets equivalent envelopes built with its own Envelope class,
and a fresh transport for every run. Prints a table; see bench/README.md for what each
number means.

    .venv/bin/python bench/bench_threaded.py [--repeats 3] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sentry_sdk
from events import json_size, large_event, small_event
from sentry_sdk.consts import DEFAULT_OPTIONS
from sentry_sdk.envelope import Envelope as SdkEnvelope
from sentry_sdk.transport import HttpTransport

import sentry_transport
from sentry_transport import Envelope, TransportOptions, make_transport
from sentry_transport.core.compress import default_level

FLUSH_TIMEOUT = 30.0
SINK_START_TIMEOUT = 15.0
SINK_STOP_TIMEOUT = 5.0
SETTLE = 1.0  # seconds without a new sink line after which a count is final
SDK_QUEUE = DEFAULT_OPTIONS["transport_queue_size"]  # 100: sentry_sdk drops beyond this


SERVERS = {
    "lean": "lean (python -m sentry_transport.testing --lean: answers after the head's checks, "
    "bodies counted and skipped, not decompressed or parsed; received = its 200 count)",
    "sink": "sink (python -m sentry_transport.testing: every body decompressed and parsed; "
    "received = event ids answered 200)",
}

# -- the sink, in its own process ------------------------------------------------------------


class SinkProcess:
    """``python -m sentry_transport.testing [--lean]`` in a subprocess, on 127.0.0.1.

    The sink (``server="sink"``) prints its DSN, then one line per request:
    ``<event_id> <item types> <status>``; the reader thread records the event ids answered
    200. The lean server (``server="lean"``, the default) does not parse bodies, so it knows
    no event ids: it prints ``count <requests> <answered 200> <body bytes>`` when its totals
    change (every 0.1 s at most), and a run's "received" is the growth of the 200 count over
    the run, less the warm-up, at most the number sent. ``paused()`` stops the reader while a
    measurement runs, so this process spends no time on the server's output (it waits in
    the pipe and, for the sink, in its own queue).
    """

    def __init__(self, latency: float = 0.0, server: str = "lean") -> None:
        self.command = [sys.executable, "-m", "sentry_transport.testing", "--port", "0"]
        self.command += ["--lean"] if server == "lean" else []
        if latency:
            self.command += ["--latency", str(latency)]
        self.lean = server == "lean"
        self._seen: set[str] = set()
        self._accepted = 0  # lean: the server's count of 200 answers
        self._last_line = time.monotonic()
        self._lock = threading.Lock()
        self._reading = threading.Event()
        self._reading.set()
        self._dsn_ready = threading.Event()
        self.dsn = ""
        self._proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        self._reader = threading.Thread(target=self._read, name="sink-reader", daemon=True)
        self._reader.start()
        if not self._dsn_ready.wait(SINK_START_TIMEOUT) or not self.dsn:
            self.stop()
            raise RuntimeError(f"the sink did not print its DSN: {shlex.join(self.command)}")

    def _read(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        self.dsn = stdout.readline().strip()
        self._dsn_ready.set()
        for line in stdout:
            self._reading.wait()
            event_id, types, status, *_ = [*line.rstrip("\n").split(" ", 3), "", ""]
            with self._lock:
                self._last_line = time.monotonic()
                if self.lean and event_id == "count":
                    self._accepted = int(status)
                elif status == "200" and "event" in types.split(","):
                    self._seen.add(event_id)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._reading.clear()
        try:
            yield
        finally:
            with self._lock:
                self._last_line = time.monotonic()  # lines held back are not a silence
            self._reading.set()

    def mark(self) -> int:
        """Lean: the 200 count once it has not moved for 0.3 s (call before a run)."""
        deadline = time.monotonic() + SETTLE * 5
        while self.lean and time.monotonic() < deadline:
            with self._lock:
                if time.monotonic() - self._last_line >= 0.3:
                    return self._accepted
            time.sleep(0.05)
        return self._accepted

    def received(self, event_ids: set[str], mark: int = 0, warmup: int = 0) -> int:
        """How many of ``event_ids`` the server accepted (lean: how many 200 answers since
        ``mark``, less ``warmup``): waits until all are seen, or no new line came for
        ``SETTLE`` seconds, or 15 s passed."""
        deadline = time.monotonic() + 15.0
        while True:
            with self._lock:
                if self.lean:
                    got = min(len(event_ids), max(0, self._accepted - mark - warmup))
                else:
                    got = len(event_ids & self._seen)
                quiet = time.monotonic() - self._last_line
            if got == len(event_ids) or quiet >= SETTLE or time.monotonic() >= deadline:
                return got
            time.sleep(0.05)

    def stop(self) -> None:
        self._reading.set()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(SINK_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(SINK_STOP_TIMEOUT)
        self._reader.join(SINK_STOP_TIMEOUT)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- the two peers ---------------------------------------------------------------------------


class CountingHttpTransport(HttpTransport):  # type: ignore[misc]
    """sentry_sdk's default transport, unchanged, plus counters read after each run.

    ``on_dropped_event`` is a no-op hook in sentry_sdk (called once per dropped envelope);
    ``_handle_response`` is extended only to count 2xx answers to envelopes with an event.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.delivered = 0
        self.dropped: Counter[str] = Counter()

    def on_dropped_event(self, reason: str) -> None:
        self.dropped[reason] += 1

    def _handle_response(self, response: Any, envelope: Any) -> None:
        super()._handle_response(response=response, envelope=envelope)
        if 200 <= response.status < 300 and envelope is not None and envelope.get_event():
            self.delivered += 1


class Peer:
    name = ""

    def open(self, dsn: str) -> Any:
        raise NotImplementedError

    def envelope(self, event: dict[str, Any]) -> Any:
        raise NotImplementedError

    def flush(self, transport: Any, timeout: float) -> None:
        raise NotImplementedError

    def close(self, transport: Any) -> None:
        raise NotImplementedError

    def counts(self, transport: Any) -> tuple[int, int]:
        """(delivered, lost) envelopes with an event, as the transport itself counted them."""
        raise NotImplementedError


class Ours(Peer):
    name = "sentry-transport"

    def open(self, dsn: str) -> Any:
        return make_transport(dsn)

    def envelope(self, event: dict[str, Any]) -> Envelope:
        return Envelope.for_event(event)

    def flush(self, transport: Any, timeout: float) -> None:
        transport.flush(timeout)

    def close(self, transport: Any) -> None:
        transport.close(5.0)

    def counts(self, transport: Any) -> tuple[int, int]:
        events = transport.stats()["events"]
        return events["delivered"], events["lost"]


class Sdk(Peer):
    name = "sentry_sdk"

    def open(self, dsn: str) -> Any:
        return CountingHttpTransport(dict(DEFAULT_OPTIONS, dsn=dsn))

    def envelope(self, event: dict[str, Any]) -> SdkEnvelope:
        envelope = SdkEnvelope(headers={"event_id": event["event_id"]})
        envelope.add_event(event)
        return envelope

    def flush(self, transport: Any, timeout: float) -> None:
        transport.flush(timeout)

    def close(self, transport: Any) -> None:
        transport.flush(5.0)
        transport.kill()
        transport._pool.clear()  # close its keep-alive connections now

    def counts(self, transport: Any) -> tuple[int, int]:
        return transport.delivered, sum(transport.dropped.values())


OURS, SDK = Ours(), Sdk()
PEERS = (OURS, SDK)


# -- runs ------------------------------------------------------------------------------------


@dataclass
class Run:
    sent: int
    seconds: float  # first capture to the last flush returning
    received: int  # at the sink
    delivered: int  # the transport's own count
    lost: int  # the transport's own count
    call_ns: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.received / self.seconds


def events_like(template: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """``count`` shallow copies of ``template``, each with its own event_id."""
    return [{**template, "event_id": uuid.uuid4().hex} for _ in range(count)]


def run(
    peer: Peer,
    sink: SinkProcess,
    template: dict[str, Any],
    count: int,
    batch: int | None,
    *,
    timed_calls: bool = False,
    warmup: int = 0,
) -> Run:
    """Capture ``count`` events, flushing after every ``batch`` (None: only at the end)."""
    events = events_like(template, warmup + count)
    envelopes = [peer.envelope(event) for event in events]
    ids = {event["event_id"] for event in events[warmup:]}
    mark = sink.mark()
    transport = peer.open(sink.dsn)
    capture = transport.capture_envelope
    step = batch or count
    call_ns: list[int] = []
    try:
        for envelope in envelopes[:warmup]:  # starts worker threads and connections
            capture(envelope)
        peer.flush(transport, FLUSH_TIMEOUT)
        warm_delivered, warm_lost = peer.counts(transport)
        gc.collect()
        with sink.paused():
            start = time.perf_counter()
            for i in range(warmup, warmup + count, step):
                if timed_calls:
                    for envelope in envelopes[i : i + step]:
                        t0 = time.perf_counter_ns()
                        capture(envelope)
                        call_ns.append(time.perf_counter_ns() - t0)
                else:
                    for envelope in envelopes[i : i + step]:
                        capture(envelope)
                peer.flush(transport, FLUSH_TIMEOUT)
            seconds = time.perf_counter() - start
        delivered, lost = peer.counts(transport)
    finally:
        peer.close(transport)
    received = sink.received(ids, mark, warmup)
    return Run(count, seconds, received, delivered - warm_delivered, lost - warm_lost, call_ns)


def repeat(
    repeats: int,
    count: int,
    *,
    peers: Sequence[Peer] = PEERS,
    counts: dict[Peer, int] | None = None,
    **options: Any,
) -> dict[Peer, list[Run]]:
    """``run`` each peer ``repeats`` times, alternating which goes first; ``counts``
    overrides ``count`` per peer."""
    results: dict[Peer, list[Run]] = {peer: [] for peer in peers}
    for r in range(repeats):
        for peer in peers if r % 2 == 0 else list(reversed(peers)):
            results[peer].append(run(peer, count=(counts or {}).get(peer, count), **options))
    return results


# -- reporting -------------------------------------------------------------------------------


def percentile(values: Sequence[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclass
class Row:
    metric: str
    ours: float | None
    sdk: float | None
    fmt: str = "{:,.0f}"

    def cells(self) -> list[str]:
        ours = "n/a" if self.ours is None else self.fmt.format(self.ours)
        sdk = "n/a" if self.sdk is None else self.fmt.format(self.sdk)
        ratio = f"{self.ours / self.sdk:.2f}x" if self.ours is not None and self.sdk else ""
        return [self.metric, ours, sdk, ratio]


def print_table(rows: list[Row]) -> None:
    header = ["metric", OURS.name, SDK.name, "ratio (ours/sdk)"]
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for n, line in enumerate(table):
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        print(" | ".join(cells))
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def delivery_line(label: str, results: dict[Peer, list[Run]]) -> str:
    parts = []
    for peer, runs in results.items():
        each = ", ".join(f"{r.received}/{r.sent} (own: {r.delivered}, lost {r.lost})" for r in runs)
        parts.append(f"{peer.name}: {each}")
    return f"  {label}: " + "; ".join(parts)


def rate_row(metric: str, results: dict[Peer, list[Run]]) -> Row:
    rates = {peer: median([r.rate for r in runs]) for peer, runs in results.items()}
    return Row(metric, rates.get(OURS), rates.get(SDK))


# -- main ------------------------------------------------------------------------------------


def describe_peers() -> str:
    ours = TransportOptions()
    level = ours.compression_level or default_level(ours.compression)
    probe = Sdk().open("http://public@127.0.0.1:9/42")  # never sends: no worker started
    sdk = f"{probe._compression_algo} {probe._compression_level}"
    return (
        f"sentry-transport {sentry_transport.__version__} ({ours.compression} {level}, "
        f"{ours.max_connections} connections, queue {ours.queue_size}); "
        f"sentry_sdk {sentry_sdk.VERSION} ({sdk}, 1 worker thread, queue {SDK_QUEUE})"
    )


def caller_cost_rows(results: dict[Peer, list[Run]]) -> list[Row]:
    rows = []
    for label, pick, fmt in (
        ("median", lambda ns: percentile(ns, 0.5), "{:.1f}"),
        ("mean", statistics.fmean, "{:.2f}"),  # the caller's whole time / captures
        ("p99", lambda ns: percentile(ns, 0.99), "{:.1f}"),
        ("max", max, "{:,.0f}"),
    ):
        value = {p: median([pick(r.call_ns) / 1000 for r in rs]) for p, rs in results.items()}
        metric = f"capture_envelope, small: {label} µs (lower is better)"
        rows.append(Row(metric, value[OURS], value[SDK], fmt))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per peer and metric")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply event counts")
    parser.add_argument(
        "--server",
        choices=("lean", "sink"),
        default="lean",
        help="the server process: lean (bodies counted, not decoded; 'received' from its 200 "
        "count) or sink (every body parsed; 'received' by event id); default lean",
    )
    args = parser.parse_args(argv)
    reps = args.repeats

    def n(count: int) -> int:
        return max(1, round(count * args.scale))

    small = small_event()
    large = large_event(100_000)
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {describe_peers()}")
    print(f"events: small {json_size(small):,} B JSON, large {json_size(large):,} B JSON")
    print(f"repeats: {reps} per peer (medians shown); the server runs in its own process")
    print(f"server: {SERVERS[args.server]}\n")

    rows: list[Row] = []
    checks: list[str] = []
    started = time.perf_counter()

    with SinkProcess(server=args.server) as sink:
        sink_command = shlex.join(sink.command)
        # 1. caller cost, paced (batches of 50, a flush between) so that neither peer drops
        count = n(2000)
        calls = repeat(
            reps, count, sink=sink, template=small, batch=50, timed_calls=True, warmup=50
        )
        rows += caller_cost_rows(calls)
        checks.append(delivery_line(f"caller cost, {count} small", calls))

        # 2. small events, in batches of 90 (within sentry_sdk's queue of 100); then ours alone
        count = n(3000)
        paced = repeat(reps, count, sink=sink, template=small, batch=90)
        rows.append(rate_row("small ~1 KB, batches of 90: envelopes/s", paced))
        checks.append(delivery_line(f"small, batches of 90, {count}", paced))
        free = repeat(reps, count, sink=sink, template=small, batch=None, peers=[OURS])
        rows.append(rate_row("small ~1 KB, free-running (ours only): envelopes/s", free))
        checks.append(delivery_line(f"small, free-running, {count}", free))

    with SinkProcess(server=args.server) as sink:  # a fresh sink: it keeps every request in memory
        # 3. 100 KB events
        count = n(300)
        big = repeat(reps, count, sink=sink, template=large, batch=90)
        rows.append(rate_row("100 KB, batches of 90: envelopes/s", big))
        checks.append(delivery_line(f"100 KB, batches of 90, {count}", big))

    with SinkProcess(0.02, args.server) as sink:
        # 4. the sink waits 20 ms before every answer
        counts = {OURS: n(1000), SDK: n(300)}
        slow = repeat(reps, n(1000), sink=sink, template=small, batch=90, counts=counts)
        rows.append(rate_row("small, sink +20 ms/request, batches of 90: envelopes/s", slow))
        checks.append(delivery_line("small, sink +20 ms", slow))

    with SinkProcess(server=args.server) as sink:
        # 5. a burst captured in a tight loop, then one flush(30)
        count = n(3000)
        burst = repeat(reps, count, sink=sink, template=small, batch=None)
        got = {p: median([r.received for r in rs]) for p, rs in burst.items()}
        took = {p: median([r.seconds for r in rs]) for p, rs in burst.items()}
        rows.append(Row(f"burst of {count} small, flush(30): received", got[OURS], got[SDK]))
        rows.append(
            Row(f"burst of {count} small, flush(30): seconds", took[OURS], took[SDK], "{:.2f}")
        )
        checks.append(delivery_line(f"burst of {count}", burst))

    print_table(rows)
    print("\nreceived at the sink / sent (the transport's own count: delivered, lost), per run:")
    print("\n".join(checks))
    print(f"\nserver: {sink_command} (a fresh one per scenario; +20 ms: --latency 0.02)")
    print(f"total time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
