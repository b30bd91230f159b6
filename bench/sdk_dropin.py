"""sentry_sdk with our transport (``transport=SentryTransport``) vs sentry_sdk with its own,
side by side: envelopes/s and client CPU per envelope, through the sdk's public API.

Every (peer, scenario, repeat) is a child process (``--child``), so that
``getrusage(RUSAGE_SELF)`` (user + system, all threads) counts one client; the server
(``python -m sentry_transport.testing --lean --port 0 --quiet [--latency 0.02]``, or the full
sink without ``--lean`` with ``--server sink``) is a further process, one per scenario. A
child calls ``sentry_sdk.init`` (default integrations), warms up with a few messages, then
times ``capture_message`` through the final ``flush``. See bench/README.md for the columns.

    .venv/bin/python bench/sdk_dropin.py [--repeats 3] [--scale 1.0] [--server lean|sink]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_SRC = HERE.parent / "src"
BATCH = 90  # sentry_sdk's own transport keeps at most 100 envelopes queued
FLUSH_TIMEOUT = 60.0
CHILD_TIMEOUT = 180.0
SINK_START_TIMEOUT = 15.0
WARM_UP = 20
PEERS = ("sdk", "ours")


# -- the child: one client, one measurement ---------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():  # eventlet, when installed, warns on the sdk's import
        warnings.simplefilter("ignore")
        import sentry_sdk
        from sentry_sdk.transport import HttpTransport

    class Counted(HttpTransport):  # type: ignore[misc]
        """The sdk's default transport; only counts 2xx answers to event envelopes."""

        delivered = 0

        def _handle_response(self, response: Any, envelope: Any) -> None:
            super()._handle_response(response=response, envelope=envelope)
            if 200 <= response.status < 300 and envelope is not None and envelope.get_event():
                Counted.delivered += 1

    if args.kind == "sdk":
        chosen: Any = Counted
    else:
        from sentry_transport.sdk import SentryTransport

        chosen = SentryTransport
    sentry_sdk.init(dsn=args.dsn, transport=chosen, release="bench@1")
    client = sentry_sdk.get_client()
    for i in range(WARM_UP):  # starts the worker threads, fills the sdk's caches
        sentry_sdk.capture_message(f"warm-up {i}")
    client.flush(FLUSH_TIMEOUT)
    before = delivered(args.kind, client, Counted)
    batch = args.count if args.burst else BATCH

    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    for start in range(0, args.count, batch):
        for i in range(start, min(start + batch, args.count)):
            sentry_sdk.capture_message(f"Payment failed for order {i}: card declined")
        client.flush(FLUSH_TIMEOUT)
    cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0

    result = {
        "delivered": delivered(args.kind, client, Counted) - before,
        "sent": args.count,
        "cpu": cpu,
        "wall": wall,
        "workers": 1,  # the sdk's one BackgroundWorker thread
        "sdk": sentry_sdk.VERSION,
    }
    if args.kind == "ours":
        stats = client.transport.stats()
        result["lost"] = stats["events"]["lost"]
        result["workers"] = stats.get("workers")
    client.close(5.0)
    print(json.dumps(result))
    return 0


def delivered(kind: str, client: Any, counted: Any) -> int:
    if kind == "sdk":
        return int(counted.delivered)
    return int(client.transport.stats()["events"]["delivered"])


# -- the parent: sinks, children, table --------------------------------------------------------


SERVERS = {
    "lean": "lean (python -m sentry_transport.testing --lean: answers after the head's checks, "
    "bodies counted and skipped, not decompressed or parsed)",
    "sink": "sink (python -m sentry_transport.testing: every body decompressed and parsed)",
}


class SinkProcess:
    """``python -m sentry_transport.testing --port 0 --quiet [--lean]`` in its own process."""

    def __init__(self, latency: float, server: str = "lean") -> None:
        self.command = [sys.executable, "-m", "sentry_transport.testing", "--port", "0"]
        self.command += (["--lean"] if server == "lean" else []) + ["--quiet"]
        self.command += ["--latency", str(latency)] if latency else []
        self._errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 -- closed in stop()
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO_SRC)),
        )
        line: list[str] = []
        assert self._proc.stdout is not None
        stdout = self._proc.stdout
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(SINK_START_TIMEOUT)
        self.dsn = line[0].strip() if line else ""
        if not self.dsn.startswith("http"):
            self.stop()
            raise RuntimeError(f"sink did not start: {shlex.join(self.command)}")

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._errors.close()

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True, eq=False)
class Scenario:
    name: str
    latency: float
    burst: bool
    counts: dict[str, int]


@dataclass
class Runs:
    ok: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def rate(self) -> float | None:
        rates = [r["delivered"] / r["wall"] for r in self.ok if r["wall"] > 0]
        return statistics.median(rates) if rates else None

    def cpu(self) -> float | None:
        cpus = [r["cpu"] / r["delivered"] * 1e6 for r in self.ok if r["delivered"]]
        return statistics.median(cpus) if cpus else None

    def delivered(self) -> str:
        if not self.ok:
            return "-"
        got = sorted(r["delivered"] for r in self.ok)
        sent = self.ok[0]["sent"]
        text = f"{got[0]}/{sent}" if got[0] == got[-1] else f"{got[0]}..{got[-1]}/{sent}"
        return text + (" !" if got[0] < sent else "")

    def workers(self) -> str:
        seen = [r["workers"] for r in self.ok if r.get("workers") is not None]
        return str(max(seen)) if seen else "-"


def run_child(kind: str, scenario: Scenario, dsn: str, timeout: float) -> dict[str, Any] | str:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--dsn", dsn]
    command += ["--count", str(scenario.counts[kind])] + (["--burst"] if scenario.burst else [])
    env = dict(os.environ, PYTHONPATH=str(REPO_SRC))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"hung (no answer within {timeout:g} s)"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"failed (exit {done.returncode}: {tail})"
    try:
        data: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        return f"failed (unreadable: {lines[-1][:80]})"
    return data


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else ""


def print_table(results: dict[Scenario, dict[str, Runs]]) -> None:
    header = ["scenario", "transport", "delivered/sent", "env/s", "µs CPU/env", "workers"]
    header += ["rate ours/sdk", "CPU ours/sdk", "note"]
    table = [header]
    label = {"sdk": "sentry_sdk's own", "ours": "SentryTransport"}
    for scenario, runs in results.items():
        sdk, ours = runs["sdk"], runs["ours"]
        for kind in PEERS:
            r = runs[kind]
            vs = ("", "")
            if kind == "ours":
                vs = (ratio(ours.rate(), sdk.rate()), ratio(ours.cpu(), sdk.cpu()))
            table.append(
                [
                    scenario.name,
                    label[kind],
                    r.delivered(),
                    fmt(r.rate(), ",.0f"),
                    fmt(r.cpu(), ",.0f"),
                    r.workers(),
                    *vs,
                    "; ".join(r.failures),
                ]
            )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    left = {0, 1, len(header) - 1}
    for n, row in enumerate(table):
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("| " + " | ".join(cells).rstrip() + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def describe() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sentry_sdk
        from sentry_sdk.consts import DEFAULT_OPTIONS
        from sentry_sdk.transport import HttpTransport

    sys.path.insert(0, str(REPO_SRC))
    import sentry_transport
    from sentry_transport.sdk import SentryTransport

    dsn = "http://public@127.0.0.1:9/42"  # nothing is sent
    theirs = HttpTransport(dict(DEFAULT_OPTIONS, dsn=dsn))
    ours = SentryTransport(dict(DEFAULT_OPTIONS, dsn=dsn))
    o = ours.inner_options
    text = (
        f"sentry_sdk {sentry_sdk.VERSION}: {theirs._compression_algo} "
        f"{theirs._compression_level}, 1 worker thread, queue "
        f"{DEFAULT_OPTIONS['transport_queue_size']}\n"
        f"sentry_transport {sentry_transport.__version__} from {sentry_transport.__file__}: "
        f"{type(ours.inner).__name__}, {o.compression} (bodies >= {o.compression_threshold} "
        f"bytes), max_connections {o.max_connections}, queue {o.queue_size}"
    )
    theirs.kill()
    ours.kill()
    return text


def parent(args: argparse.Namespace) -> int:
    def n(count: int) -> int:
        return max(1, round(count * args.scale))

    scenarios = [
        Scenario("small, batches of 90", 0.0, False, {"sdk": n(3000), "ours": n(3000)}),
        Scenario("small, burst of 3,000", 0.0, True, {"sdk": n(3000), "ours": n(3000)}),
        # one request at a time for the sdk: 300 x 20 ms is 6 s a run already
        Scenario(
            "small, sink +20 ms, batches of 90", 0.02, False, {"sdk": n(300), "ours": n(1000)}
        ),
    ]
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(describe())
    print(
        f"repeats {args.repeats} (medians; order alternates); each run a process of its own; "
        f"capture = sentry_sdk.capture_message, flush = client.flush({FLUSH_TIMEOUT:g}) after "
        f"each batch; CPU = getrusage user+sys over capture..flush",
    )
    print(f"server: {SERVERS[args.server]}\n", flush=True)
    started = time.perf_counter()
    results: dict[Scenario, dict[str, Runs]] = {}
    sinks: list[str] = []
    for scenario in scenarios:
        runs = {kind: Runs() for kind in PEERS}
        with SinkProcess(scenario.latency, args.server) as sink:
            sinks.append(shlex.join(["python", *sink.command[1:]]))
            for r in range(args.repeats):
                for kind in PEERS if r % 2 == 0 else tuple(reversed(PEERS)):
                    got = run_child(kind, scenario, sink.dsn, args.timeout)
                    if isinstance(got, str):
                        runs[kind].failures.append(got)
                        shown = got
                    else:
                        runs[kind].ok.append(got)
                        shown = f"{got['delivered']}/{got['sent']} in {got['wall']:.2f} s"
                    print(
                        f"  [{time.perf_counter() - started:5.0f} s] {scenario.name}, run "
                        f"{r + 1}, {kind}: {shown}",
                        file=sys.stderr,
                        flush=True,
                    )
        results[scenario] = runs
    print_table(results)
    print(
        "\nenv/s: delivered event envelopes / seconds from the first capture to the last flush "
        "returning; µs CPU/env: the client process's CPU over that stretch / delivered "
        "(sentry_sdk's event processing included: the same for both); '!': fewer delivered "
        "than captured (sentry_sdk's own drops past its queue of 100)."
    )
    print("servers, one per scenario: " + "; ".join(sinks))
    print(f"total time: {time.perf_counter() - started:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per peer and scenario")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply event counts")
    parser.add_argument(
        "--server",
        choices=tuple(SERVERS),
        default="lean",
        help="the server process: lean (bodies counted, not decoded) or sink; default lean",
    )
    parser.add_argument("--timeout", type=float, default=CHILD_TIMEOUT, help="per child run")
    parser.add_argument("--child", choices=PEERS, dest="kind", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--burst", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return child(args) if args.kind else parent(args)


if __name__ == "__main__":
    sys.exit(main())
