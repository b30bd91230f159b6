"""Client CPU per delivered envelope and throughput, sentry_sdk vs every runtime we ship.

With --baseline also threaded/sync/asyncio at an older version; each peer in its own process.

Every (peer, scenario, repeat) is one child process (``--child``), so that
``getrusage(RUSAGE_SELF)`` (user + system, all threads) counts that client and nothing else.
The server (``python -m sentry_transport.testing --lean --quiet`` by default, the full sink
with ``--server sink``) is a further process. A child
builds its envelopes first, then times capture + flush, then asks the transport how many it
delivered. The gevent and eventlet children monkey-patch before anything else is imported.
See bench/README.md for the columns and the targets checked at the bottom.

    .venv/bin/python bench/cpu_per_envelope.py [--repeats 3] [--scale 1.0] [--baseline DIR]
        [--peers threaded,gevent,...] [--scenarios small,slow,100kb,100ms]
        [--variants installed,plain,fast,zstd] [--spool] [--server lean|sink] [--sdk-bare]

--spool adds a row per peer with the disk spool on (``spool_dir`` a fresh temporary folder
per run) and checks that it keeps at least half the throughput of the same peer without it.

--sdk-bare adds a second sentry_sdk row, "sentry_sdk -br": the sdk with ``brotli`` made
unimportable, as ``pip install sentry-sdk`` alone leaves it (it then compresses with gzip
level 9). Our test extra installs brotli, so the reference row compresses with brotli
(quality 4), which is faster: every ratio and target stays against that reference, the
stricter peer; the bare row's ratios are printed below the targets, for context.
"""

from __future__ import annotations

import sys

# a green child patches first thing, before the rest of the standard library is imported
if __name__ == "__main__" and sys.argv[1:3] == ["--child", "gevent"]:
    from gevent import monkey

    monkey.patch_all()  # first thing in the child
elif __name__ == "__main__" and sys.argv[1:3] == ["--child", "eventlet"]:
    import warnings

    with warnings.catch_warnings():  # eventlet warns that it is deprecated when imported
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)
        import eventlet

    eventlet.monkey_patch()

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_SRC = HERE.parent / "src"
BATCH = 90  # sentry_sdk keeps at most 100 jobs queued: feed it 90, then flush
FLUSH_TIMEOUT = 60.0
CHILD_TIMEOUT = 120.0
SINK_START_TIMEOUT = 15.0
# our peers: kind -> make_transport prefix (asyncio is AsyncioTransport(dsn) on asyncio.run)
PREFIXES = {
    "threaded": "",
    "sync": "sync+",
    "asyncio": "asyncio+",
    "requests": "requests+",
    "threaded+requests": "threaded+requests+",
    "urllib3": "urllib3+",
    "gevent": "gevent+",
    "eventlet": "eventlet+",
    "tornado": "tornado+",
    "twisted": "twisted+",
}
OURS = tuple(PREFIXES)
KINDS = ("sdk", *OURS)
BASELINE_KINDS = ("threaded", "sync", "asyncio")  # the ones an older src/ is run for
# --variants: how a row of ours is run, and the label it gets after the peer's name
VARIANTS = {
    "installed": "",  # as the environment is: orjson when installed, default compression
    "plain": " -fast",  # as without the fast extra: orjson, isal, zstandard made unimportable
    "fast": " +fast",  # the fast extra (orjson required), default compression (gzip 3, isal)
    "zstd": " +fast zstd",  # the fast extra and compression=zstd
}
WITHOUT_FAST = ("orjson", "isal", "zstandard")  # what the "plain" child blocks, first thing
SDK_BARE = "bare"  # the variant of the "sentry_sdk -br" row: brotli blocked, first thing
BLOCKING = ("sync", "requests")  # one request at a time, on the caller's thread
# Runtimes that pipeline (several requests in flight per connection); the others are
# BLOCKING or send through an HTTP library one request at a time per connection.
PIPELINING = ("threaded", "asyncio", "gevent", "eventlet", "tornado", "twisted")
EXTRAS = {  # kind -> the distribution it needs (its version goes in the header)
    "requests": "requests",
    "threaded+requests": "requests",
    "urllib3": "urllib3",
    "gevent": "gevent",
    "eventlet": "eventlet",
    "tornado": "tornado",
    "twisted": "twisted",
}


# -- the child: one client, one measurement ---------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def os_threads() -> int:
    """OS threads of this process (Linux: /proc, so also threads that ``threading`` does not
    know of, such as gevent's hub threadpool; elsewhere ``threading.active_count()``, which
    in a monkey-patched process counts green threads)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def make_events(kind: str, count: int) -> list[dict[str, Any]]:
    from events import large_event, small_event  # bench/events.py, next to this file

    template = small_event() if kind == "small" else large_event(100_000)
    return [{**template, "event_id": uuid.uuid4().hex} for _ in range(count)]


class Clock:
    """CPU and wall time of the measured stretch, and the most OS threads (and, on a running
    asyncio loop, tasks other than the benchmark's own) seen alive in it."""

    def __init__(self) -> None:
        self.threads = os_threads()
        self.tasks: int | None = None

    def start(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = cpu_seconds()

    def sample(self, loop: bool = False) -> None:
        self.threads = max(self.threads, os_threads())
        if loop:
            import asyncio

            self.tasks = max(self.tasks or 0, len(asyncio.all_tasks()) - 1)

    def stop(self) -> dict[str, float]:
        cpu = cpu_seconds() - self.cpu0
        wall = time.perf_counter() - self.wall0
        return {"cpu": cpu, "wall": wall}


def child_sdk(dsn: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    import gc

    import sentry_sdk
    from sentry_sdk.consts import DEFAULT_OPTIONS
    from sentry_sdk.envelope import Envelope
    from sentry_sdk.transport import HttpTransport

    class Counted(HttpTransport):  # type: ignore[misc]
        """The sdk's default transport; only counts 2xx answers to event envelopes and the
        envelopes its no-op ``on_dropped_event`` hook reports."""

        delivered = 0
        dropped = 0

        def on_dropped_event(self, reason: str) -> None:
            self.dropped += 1

        def _handle_response(self, response: Any, envelope: Any) -> None:
            super()._handle_response(response=response, envelope=envelope)
            if 200 <= response.status < 300 and envelope is not None and envelope.get_event():
                self.delivered += 1

    envelopes = []
    for event in events:
        envelope = Envelope(headers={"event_id": event["event_id"]})
        envelope.add_event(event)
        envelopes.append(envelope)
    transport = Counted(dict(DEFAULT_OPTIONS, dsn=dsn))
    capture, clock = transport.capture_envelope, Clock()
    gc.collect()
    clock.start()
    for i in range(0, len(envelopes), BATCH):
        for envelope in envelopes[i : i + BATCH]:
            capture(envelope)
        clock.sample()
        transport.flush(FLUSH_TIMEOUT)
    times = clock.stop()
    result = {
        "delivered": transport.delivered,
        "lost": transport.dropped,
        "flushed": True,
        "threads": clock.threads,
        "workers": None,
        "tasks": None,
        "version": sentry_sdk.VERSION,
        "file": sentry_sdk.__file__,
        "codec": f"json {transport._compression_algo or 'none'}",
        **times,
    }
    transport.kill()
    transport._pool.clear()
    return result


def ours_result(transport: Any, times: dict[str, float], clock: Clock, flushed: bool) -> dict:
    import sentry_transport
    from sentry_transport.core import compress, jsonenc

    stats = transport.stats()
    return {
        "delivered": stats["events"]["delivered"],
        "lost": stats["events"]["lost"],
        "flushed": flushed,
        "threads": clock.threads,
        "workers": stats.get("workers"),
        "tasks": clock.tasks,
        "version": sentry_transport.__version__,
        "file": sentry_transport.__file__,
        "codec": codec_of(transport.options.compression, jsonenc, compress),
        **times,
    }


def codec_of(compression: str, jsonenc: Any, compress: Any) -> str:
    """``orjson gzip/isal``: the JSON encoder and the compression a child of ours used."""
    isal = compression in ("gzip", "deflate") and compress.zlib_accelerator not in (
        None,
        compress._UNKNOWN,
    )
    return f"{'orjson' if jsonenc.accelerator else 'json'} {compression}{'/isal' if isal else ''}"


def child_ours(
    kind: str, dsn: str, events: list[dict[str, Any]], variant: str = "installed"
) -> dict[str, Any]:
    import asyncio
    import gc

    import sentry_transport
    from sentry_transport import Envelope, make_transport
    from sentry_transport.core import jsonenc

    if variant in ("fast", "zstd") and jsonenc.accelerator is None:
        raise SystemExit("the fast extra is not installed: pip install -e '.[fast]'")
    options: dict[str, Any] = {"compression": "zstd"} if variant == "zstd" else {}

    envelopes = [Envelope.for_event(event) for event in events]
    clock = Clock()

    if kind in ("asyncio", "tornado"):  # on a running loop: yield to it every BATCH captures

        async def main() -> dict[str, Any]:
            if kind == "asyncio":
                transport: Any = sentry_transport.AsyncioTransport(dsn, **options)
            else:
                transport = make_transport("tornado+" + dsn, **options)
            capture = transport.capture_envelope
            gc.collect()
            clock.start()
            for i, envelope in enumerate(envelopes, 1):
                capture(envelope)
                if i % BATCH == 0:
                    clock.sample(loop=True)
                    await asyncio.sleep(0)  # let the loop send
            flushed = await transport.aflush(FLUSH_TIMEOUT)
            clock.sample(loop=True)
            result = ours_result(transport, clock.stop(), clock, flushed)
            await transport.aclose(5.0)
            return result

        if kind == "asyncio":
            return asyncio.run(main())
        from tornado.ioloop import IOLoop

        return IOLoop.current().run_sync(main)

    reactor: Any = None
    reactor_thread = None
    if kind == "twisted":  # the reactor in a helper thread; capture and flush from this one
        from twisted.internet import reactor

        reactor_thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        reactor_thread.start()
        running = threading.Event()
        reactor.callFromThread(running.set)
        if not running.wait(10):
            raise RuntimeError("the reactor did not start")

    pause: Any = None  # a green child yields to its hub every BATCH captures
    if kind == "gevent":
        import gevent

        pause = gevent.sleep
    elif kind == "eventlet":
        import eventlet

        pause = eventlet.sleep

    transport = make_transport(PREFIXES[kind] + dsn, **options)
    capture = transport.capture_envelope
    gc.collect()
    clock.start()
    for i, envelope in enumerate(envelopes, 1):
        capture(envelope)
        if i % BATCH == 0:
            clock.sample()
            if pause is not None:
                pause(0)
    flushed = transport.flush(FLUSH_TIMEOUT)
    clock.sample()
    result = ours_result(transport, clock.stop(), clock, flushed)
    transport.close(5.0)
    if reactor_thread is not None:
        reactor.callFromThread(reactor.stop)
        reactor_thread.join(10)
    return result


def child(args: argparse.Namespace) -> int:
    if args.variant == "plain":  # before sentry_transport is imported: as if not installed
        for name in WITHOUT_FAST:
            sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    elif args.variant == SDK_BARE:  # before sentry_sdk is imported: gzip 9, its fallback
        sys.modules["brotli"] = None  # type: ignore[assignment]
    events = make_events(args.event, args.count)
    if args.kind == "sdk":
        result = child_sdk(args.dsn, events)
    else:
        if args.src:  # the library must come from where we were told, not elsewhere
            import sentry_transport

            where = Path(sentry_transport.__file__).resolve()
            if not where.is_relative_to(Path(args.src).resolve()):
                print(f"sentry_transport imported from {where}, not {args.src}", file=sys.stderr)
                return 3
        result = child_ours(args.kind, args.dsn, events, args.variant)
    result["sent"] = args.count
    print(json.dumps(result), flush=True)
    return 0


# -- the parent: sinks, children, table --------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    label: str
    kind: str
    src: str | None  # put on PYTHONPATH (None: sentry_sdk, which needs none)
    group: str = ""  # "now" / "base" / "spool": which rows are compared with each other
    variant: str = "installed"  # a key of VARIANTS
    spool: bool = False  # run with spool_dir set (a fresh temporary folder per run)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if self.src:
            env["PYTHONPATH"] = self.src
        return env


@dataclass(frozen=True, eq=False)  # a key by identity
class Scenario:
    key: str  # its name for --scenarios
    name: str
    event: str  # small / large
    latency: float
    count: int
    counts: dict[str, int] = field(default_factory=dict)  # per peer kind, overriding count


@dataclass
class Outcome:
    peer: Peer
    sent: int
    status: str  # ok / hung / failed
    data: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def rate(self) -> float:
        return self.data["delivered"] / self.data["wall"]

    @property
    def us_per_envelope(self) -> float | None:
        delivered = self.data["delivered"]
        return self.data["cpu"] / delivered * 1e6 if delivered else None


SERVERS = {
    "lean": "lean (python -m sentry_transport.testing --lean: answers after the head's checks, "
    "bodies counted and skipped, not decompressed or parsed)",
    "sink": "sink (python -m sentry_transport.testing: every body decompressed and parsed)",
}


class Sink:
    """``python -m sentry_transport.testing --quiet [--lean]`` in its own process; prints its
    DSN. ``server``: ``lean`` (counts bodies, does not decode them) or ``sink`` (the full one)."""

    def __init__(self, latency: float, server: str = "lean") -> None:
        self.command = [sys.executable, "-m", "sentry_transport.testing", "--port", "0"]
        self.command += ["--lean"] if server == "lean" else []
        self.command += ["--quiet"] + (["--latency", str(latency)] if latency else [])
        env = dict(os.environ, PYTHONPATH=str(REPO_SRC))
        self._errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 -- closed in stop()
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            text=True,
            env=env,
        )
        line: list[str] = []
        reader = threading.Thread(
            target=lambda: line.append(self._proc.stdout.readline()), daemon=True
        )
        reader.start()
        reader.join(SINK_START_TIMEOUT)
        self.dsn = line[0].strip() if line else ""
        if not self.dsn.startswith("http"):
            self.stop()
            self._errors.seek(0)
            why = self._errors.read().strip()[-500:]
            raise RuntimeError(f"sink did not start: {shlex.join(self.command)}\n{why}")

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

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_child(peer: Peer, scenario: Scenario, dsn: str, count: int, timeout: float) -> Outcome:
    if not peer.spool:
        return _run_child(peer, scenario, dsn, count, timeout)
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as folder:
        joined = f"{dsn}{'&' if '?' in dsn else '?'}spool_dir={folder}"
        return _run_child(peer, scenario, joined, count, timeout)


def _run_child(peer: Peer, scenario: Scenario, dsn: str, count: int, timeout: float) -> Outcome:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", peer.kind]
    command += ["--dsn", dsn, "--count", str(count), "--event", scenario.event]
    command += ["--variant", peer.variant]
    if peer.src:
        command += ["--src", peer.src]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=peer.env()
        )
    except subprocess.TimeoutExpired:
        return Outcome(peer, count, "hung", detail=f"no answer within {timeout:g} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return Outcome(peer, count, "failed", detail=f"exit {done.returncode}: {tail}")
    try:
        data = json.loads(lines[-1])
    except ValueError:
        return Outcome(peer, count, "failed", detail=f"unreadable: {lines[-1][:80]}")
    return Outcome(peer, count, "ok", data)


def probe(peer: Peer) -> str:
    """Version, location and defaults of the sentry_transport a peer will import."""
    code = (
        "import sentry_transport as s; o = s.TransportOptions(); "
        "print(s.__version__, s.__file__, o.compression, o.compression_level, "
        "o.max_connections)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=peer.env(), timeout=30
    )
    if done.returncode:
        return f"import failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    version, where, algo, level, conns = done.stdout.split()
    level = "default" if level == "None" else level
    text = f"{version} from {where} ({algo} level {level}, max_connections {conns})"
    if peer.src and not Path(where).resolve().is_relative_to(Path(peer.src).resolve()):
        text += f" -- NOT under {peer.src}: its runs will fail"
    return text


def describe_sdk() -> str:
    import warnings

    with warnings.catch_warnings():  # sentry_sdk imports eventlet, if installed, which warns
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)
        import sentry_sdk
        from sentry_sdk.consts import DEFAULT_OPTIONS
        from sentry_sdk.transport import HttpTransport

    t = HttpTransport(dict(DEFAULT_OPTIONS, dsn="http://public@127.0.0.1:9/42"))  # sends nothing
    queue = DEFAULT_OPTIONS["transport_queue_size"]
    algo = f"{t._compression_algo} {t._compression_level}"
    return f"{sentry_sdk.VERSION} ({algo}, 1 worker thread, queue {queue})"


def describe_bare_sdk() -> str:
    """``describe_sdk()`` as a child process with brotli unimportable sees it."""
    code = (
        "import sys; sys.modules['brotli'] = None; "
        f"sys.path.insert(0, {str(HERE)!r}); import cpu_per_envelope; "
        "print(cpu_per_envelope.describe_sdk())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else f"unknown: {(done.stderr.strip().splitlines() or ['?'])[-1]}"


def describe_extras(kinds: Sequence[str]) -> str:
    names = sorted({EXTRAS[k] for k in kinds if k in EXTRAS})
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} NOT INSTALLED")
    return ", ".join(versions)


def git(src: str, *args: str) -> str:
    """A read-only git query in ``src``'s checkout ('' when it is not one)."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", src, *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def checkout(src: str) -> str:
    """`` [commit date]`` of the checkout holding ``src``, and which tracked files under it
    differ from that commit (the rows measure the files, not the commit)."""
    commit = git(src, "log", "-1", "--format=%h %cs")
    if not commit:
        return ""
    changed = git(src, "diff", "--name-only", "HEAD", "--", ".").split()
    return f" [{commit}" + (f"; uncommitted: {', '.join(changed)}]" if changed else "]")


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Summary:
    peer: Peer
    outcomes: list[Outcome]

    @property
    def good(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    def cpu(self) -> float | None:
        return median([u for o in self.good if (u := o.us_per_envelope) is not None])

    def rate(self) -> float | None:
        return median([o.rate for o in self.good])

    def all_delivered(self) -> bool:
        """Every run answered, and delivered all it sent."""
        return bool(self.outcomes) and all(
            o.ok and o.data["delivered"] == o.sent for o in self.outcomes
        )

    def delivered(self) -> str:
        if not self.good:
            return "-"
        got = sorted(o.data["delivered"] for o in self.good)
        sent = self.good[0].sent
        text = f"{got[0]}/{sent}" if got[0] == got[-1] else f"{got[0]}..{got[-1]}/{sent}"
        return text + (" !" if got[0] < sent else "")

    def threads(self) -> str:
        return str(max(o.data["threads"] for o in self.good)) if self.good else "-"

    def codec(self) -> str:
        """The JSON encoder and compression its runs used (``orjson gzip``)."""
        return ",".join(sorted({o.data.get("codec", "?") for o in self.good})) or "-"

    def fast(self) -> bool:
        """Whether its runs encoded JSON with orjson (the fast extra)."""
        return bool(self.good) and all(
            o.data.get("codec", "").startswith("orjson") for o in self.good
        )

    def most(self, key: str) -> str:
        seen = [o.data[key] for o in self.good if o.data.get(key) is not None]
        return str(max(seen)) if seen else "-"

    def note(self) -> str:
        bad = [o for o in self.outcomes if not o.ok]
        unflushed = sum(1 for o in self.good if not o.data["flushed"])
        lost = sum(o.data["lost"] for o in self.good)
        parts = [f"{o.status} ({o.detail})" for o in bad]
        if unflushed:
            parts.append(f"{unflushed} flush timed out")
        if lost:
            parts.append(f"{lost} counted lost")
        return "; ".join(parts)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else ""


def dash(value: object) -> str:
    return "-" if value is None else str(value)


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(results: dict[Scenario, dict[Peer, Summary]], baseline: bool) -> None:
    header = ["scenario", "peer", "codec", "delivered/sent", "env/s", "µs CPU/env", "max thr"]
    header += ["workers", "max tasks", "rate/sdk", "CPU/sdk"]
    header += ["rate/base", "CPU/base"] if baseline else []
    header += ["note"]
    table = [header]
    for scenario, summaries in results.items():
        sdk = next((s for p, s in summaries.items() if p.kind == "sdk"), None)  # the reference
        base = {(p.kind, p.variant): s for p, s in summaries.items() if p.group == "base"}
        for peer, s in summaries.items():
            cpu, rate = s.cpu(), s.rate()
            vs_sdk = ["", ""]
            if sdk is not None and peer.kind != "sdk":
                vs_sdk = [ratio(rate, sdk.rate()), ratio(cpu, sdk.cpu())]
            vs_base = ["", ""]
            if peer.group == "now" and (peer.kind, peer.variant) in base:
                other = base[peer.kind, peer.variant]
                vs_base = [ratio(rate, other.rate()), ratio(cpu, other.cpu())]
            row = [scenario.name, peer.label, s.codec(), s.delivered(), fmt(rate, ",.0f")]
            row += [fmt(cpu, ",.0f")]
            row += [s.threads(), s.most("workers"), s.most("tasks"), *vs_sdk]
            row += vs_base if baseline else []
            table.append([*row, s.note()])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    left = {0, 1, 2, len(header) - 1}
    for n, row in enumerate(table):
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print(" | ".join(cells).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def print_runs(results: dict[Scenario, dict[Peer, Summary]]) -> None:
    print(
        "\nevery run: delivered/sent [lost], envelopes/s, µs CPU/env, wall s, "
        "t<max threads> w<workers> k<max tasks>"
    )
    width = max(len(p.label) for summaries in results.values() for p in summaries)
    for scenario, summaries in results.items():
        print(f"  {scenario.name}:")
        for peer, s in summaries.items():
            runs = []
            for o in s.outcomes:
                if not o.ok:
                    runs.append(o.status)
                    continue
                d = o.data
                lost = f" lost {d['lost']}" if d["lost"] else ""
                runs.append(
                    f"{d['delivered']}/{o.sent}{lost} {o.rate:,.0f}/s "
                    f"{fmt(o.us_per_envelope, ',.0f')}µs {d['wall']:.2f}s "
                    f"t{d['threads']} w{dash(d['workers'])} k{dash(d['tasks'])}"
                )
            print(f"    {peer.label:<{width}} " + "; ".join(runs))


SLOW_PIPELINING_X = 50.0  # sink +20 and +100 ms: envelopes/s of a PIPELINING runtime / sdk's
SLOW_NONBLOCKING_X = 10.0  # ... of the other non-blocking ones (an HTTP library's workers)
SLOW_BLOCKING_X = 0.8  # ... of sync, requests
SMALL_CPU_X = 1.0  # small: µs CPU per envelope / sentry_sdk's, at most
SMALL_PIPELINING_X = 15.0  # small: envelopes/s of a PIPELINING runtime / sentry_sdk's
SMALL_PIPELINING_US = 25.0  # small: µs CPU per envelope of a PIPELINING runtime, at most
LARGE_X = 2.0  # 100 KB: envelopes/s / sentry_sdk's, at least, without the fast extra
LARGE_FAST_X = 4.0  # 100 KB: the same with it (orjson; any compression)


def print_targets(results: dict[Scenario, dict[Peer, Summary]]) -> int:
    """PASS/FAIL per target and peer ("now" rows only); returns the number of FAILs."""
    by_key = {scenario.key: summaries for scenario, summaries in results.items()}
    failed = 0

    def check(key: str, judge: Any) -> None:
        nonlocal failed
        summaries = by_key.get(key)
        if summaries is None:
            print(f"  (scenario {key} not run)")
            return
        sdk = next(s for p, s in summaries.items() if p.kind == "sdk")  # the reference (first)
        for peer, s in summaries.items():
            if peer.group == "now":
                ok, text = judge(peer, s, sdk)
                failed += not ok
                print(f"  {'PASS' if ok else 'FAIL'}  {peer.label:<24} {text}")

    def times(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def slow(peer: Peer, s: Summary, sdk: Summary) -> tuple[bool, str]:
        want = SLOW_BLOCKING_X if peer.kind in BLOCKING else SLOW_NONBLOCKING_X
        if peer.kind in PIPELINING:
            want = SLOW_PIPELINING_X
        x = times(s.rate(), sdk.rate())
        text = f"env/s {'n/a' if x is None else f'{x:.2f}x'} sentry_sdk's (want >= {want:g}x)"
        if not s.all_delivered():
            text += f"; delivered {s.delivered()}"
        return x is not None and x >= want, text

    def small(peer: Peer, s: Summary, sdk: Summary) -> tuple[bool, str]:
        x = times(s.cpu(), sdk.cpu())
        everything = s.all_delivered()
        text = "delivered all" if everything else f"delivered {s.delivered()} (want all)"
        text += f"; µs CPU/env {'n/a' if x is None else f'{x:.2f}x'} sentry_sdk's"
        text += f" (want <= {SMALL_CPU_X:g}x)"
        ok = everything and x is not None and x <= SMALL_CPU_X
        if peer.kind in PIPELINING:
            rate, us = times(s.rate(), sdk.rate()), s.cpu()
            text += f"; env/s {fmt(rate, '.2f')}x (want >= {SMALL_PIPELINING_X:g}x)"
            text += f"; {fmt(us, '.0f')} µs CPU/env (want <= {SMALL_PIPELINING_US:g})"
            ok = ok and rate is not None and rate >= SMALL_PIPELINING_X
            ok = ok and us is not None and us <= SMALL_PIPELINING_US
        return ok, text

    print("\ntargets:")
    for key, name in (("slow", "sink +20 ms"), ("100ms", "sink +100 ms")):
        print(
            f" {name}: pipelining runtimes >= {SLOW_PIPELINING_X:g}x sentry_sdk's env/s, other"
            f" non-blocking >= {SLOW_NONBLOCKING_X:g}x, blocking ({', '.join(BLOCKING)}) >= "
            f"{SLOW_BLOCKING_X:g}x"
        )
        check(key, slow)
    print(
        " small ~1 KB: every run delivers all, at no more µs CPU/env than sentry_sdk; "
        f"pipelining runtimes >= {SMALL_PIPELINING_X:g}x its env/s at <= "
        f"{SMALL_PIPELINING_US:g} µs CPU/env"
    )
    check("small", small)

    def large(peer: Peer, s: Summary, sdk: Summary) -> tuple[bool, str]:
        want = LARGE_FAST_X if s.fast() else LARGE_X
        x, cpu = times(s.rate(), sdk.rate()), times(s.cpu(), sdk.cpu())
        text = f"env/s {'n/a' if x is None else f'{x:.2f}x'} sentry_sdk's (want >= {want:g}x"
        text += f" {'with' if s.fast() else 'without'} the fast extra; {s.codec()})"
        text += f"; µs CPU/env {'n/a' if cpu is None else f'{cpu:.2f}x'}"
        if not s.all_delivered():
            text += f"; delivered {s.delivered()}"
        return x is not None and x >= want and s.all_delivered(), text

    print(
        f" 100 KB: envelopes/s >= {LARGE_X:g}x sentry_sdk's without the fast extra, "
        f">= {LARGE_FAST_X:g}x with it"
    )
    check("100kb", large)
    print_bare(by_key)
    return failed


def print_bare(by_key: dict[str, dict[Peer, Summary]]) -> None:
    """Our rows' env/s and µs CPU/env against the "sentry_sdk -br" row (--sdk-bare), if run:
    context, not a target."""
    lines = []
    for key, summaries in by_key.items():
        bare = next((s for p, s in summaries.items() if p.variant == SDK_BARE), None)
        if bare is None:
            continue
        for peer, s in summaries.items():
            if peer.group == "now":
                rate, cpu = ratio(s.rate(), bare.rate()), ratio(s.cpu(), bare.cpu())
                lines.append(
                    f"  {key:6} {peer.label:<24} env/s {rate or 'n/a'}, µs CPU/env {cpu or 'n/a'}"
                )
    if lines:
        print(" against sentry_sdk -br (no brotli: gzip 9, as pip install sentry-sdk leaves it):")
        print("\n".join(lines))


SPOOL_RATE_X = 0.5  # envelopes/s with the spool / without it, at least


def print_spool_targets(results: dict[Scenario, dict[Peer, Summary]]) -> int:
    failed = 0
    print(f" spool on: >= {SPOOL_RATE_X:g}x the same peer's env/s without it")
    for scenario, summaries in results.items():
        plain = {
            p.kind: s for p, s in summaries.items() if p.group == "now" and p.variant == "installed"
        }
        for peer, s in summaries.items():
            if peer.group != "spool" or peer.kind not in plain:
                continue
            rate, other = s.rate(), plain[peer.kind].rate()
            x = rate / other if rate is not None and other else None
            ok = x is not None and x >= SPOOL_RATE_X and s.all_delivered()
            failed += not ok
            shown = "n/a" if x is None else f"{x:.2f}x"
            cpu, other_cpu = s.cpu(), plain[peer.kind].cpu()
            extra = f"; µs CPU/env {fmt(cpu, ',.0f')} vs {fmt(other_cpu, ',.0f')}"
            print(f"  {'PASS' if ok else 'FAIL'}  {scenario.name}: {peer.label:<22} {shown}{extra}")
    return failed


SCENARIO_KEYS = ("small", "slow", "100kb", "100ms")
DEFAULT_SCENARIOS = ("small", "slow", "100kb")
ALIASES = {"sentry_sdk": "sdk", "20ms": "slow", "large": "100kb"}


def pick(text: str | None, choices: Sequence[str], what: str) -> list[str]:
    """Names from a comma list (``requests+`` = ``requests``), in ``choices``' order."""
    if text is None:
        return list(choices)
    wanted = set()
    for name in text.split(","):
        name = name.strip().lower()
        name = ALIASES.get(name, name.removesuffix("+") if name.endswith("+") else name)
        if name not in choices:
            raise SystemExit(f"unknown {what} {name!r}; choose from {', '.join(choices)}")
        wanted.add(name)
    return [c for c in choices if c in wanted]


def parent(args: argparse.Namespace) -> int:
    def n(count: int) -> int:
        return max(1, round(count * args.scale))

    kinds = [k for k in pick(args.peers, KINDS, "peer") if k != "sdk"]
    keys = pick(args.scenarios, SCENARIO_KEYS, "scenario")
    if args.scenarios is None:
        keys = [k for k in keys if k in DEFAULT_SCENARIOS]
    peers = [Peer("sentry_sdk", "sdk", None)]  # always: the reference of every ratio
    if args.sdk_bare:
        peers.append(Peer("sentry_sdk -br", "sdk", None, variant=SDK_BARE))
    variants = pick(args.variants, tuple(VARIANTS), "variant") if args.variants else ["installed"]
    peers += [
        Peer(f"{k}{VARIANTS[v]} (now)", k, str(REPO_SRC), "now", v) for k in kinds for v in variants
    ]
    if args.spool:
        peers += [Peer(f"{k}+spool (now)", k, str(REPO_SRC), "spool", spool=True) for k in kinds]
    base = str(Path(args.baseline).resolve()) if args.baseline else None
    if base:
        peers += [  # in the same variants: an A/B of like with like
            Peer(f"{k}{VARIANTS[v]} (base)", k, base, "base", v)
            for k in kinds
            if k in BASELINE_KINDS
            for v in variants
        ]
    blocking = {k: n(300) for k in ("sdk", *BLOCKING)}
    blocking_100 = {k: n(100) for k in ("sdk", *BLOCKING)}
    everything = [
        Scenario("small", "small ~1 KB", "small", 0.0, n(3000)),
        # the blocking peers send one request per capture, back to back: at 20 ms each,
        # 1,000 would take over 20 s per run, so they get sentry_sdk's count
        Scenario("slow", "small, sink +20 ms", "small", 0.02, n(1000), blocking),
        Scenario("100kb", "100 KB", "large", 0.0, n(300)),
        # not by default: 100 ms a request makes sentry_sdk (one at a time) take 10 s a run
        Scenario("100ms", "small, sink +100 ms", "small", 0.1, n(1000), {**blocking_100}),
    ]
    scenarios = [s for s in everything if s.key in keys]

    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(f"sentry_sdk {describe_sdk()}")
    if args.sdk_bare:
        print(f"sentry_sdk -br: {describe_bare_sdk()}, brotli blocked")
    if kinds:
        first = next(p for p in peers if p.group == "now")  # (not the sdk rows before it)
        print(f"sentry_transport now:  {probe(first)}{checkout(str(REPO_SRC))}")
    if base and peers[-1].group == "base":
        print(f"sentry_transport base: {probe(peers[-1])}{checkout(base)}")
    if extras := describe_extras(kinds):
        print(f"runtimes: {extras}")
    print(
        f"repeats {args.repeats} (medians; order alternates), scale {args.scale}; each run a "
        f"process of its own, timeout {args.timeout:g} s; sdk in batches of {BATCH} with a "
        "flush between, ours free-running then one flush (loops and hubs yielded to every "
        f"{BATCH}); CPU = getrusage user+sys over capture..flush",
    )
    print(f"server: {SERVERS[args.server]}\n", flush=True)

    started = time.perf_counter()
    results: dict[Scenario, dict[Peer, Summary]] = {}
    sinks: list[str] = []
    for scenario in scenarios:
        summaries = {peer: Summary(peer, []) for peer in peers}
        with Sink(scenario.latency, args.server) as sink:
            sinks.append(shlex.join(["python", *sink.command[1:]]))
            for r in range(args.repeats):
                for peer in peers if r % 2 == 0 else list(reversed(peers)):
                    count = scenario.counts.get(peer.kind, scenario.count)
                    outcome = run_child(peer, scenario, sink.dsn, count, args.timeout)
                    summaries[peer].outcomes.append(outcome)
                    got = f"{outcome.data['delivered']}/{count}" if outcome.ok else outcome.status
                    print(
                        f"  [{time.perf_counter() - started:5.0f} s] {scenario.name}, run "
                        f"{r + 1}, {peer.label}: {got}",
                        file=sys.stderr,
                        flush=True,
                    )
        results[scenario] = summaries

    print_table(results, bool(base))
    print_runs(results)
    print(
        "\nrate/...: above 1 is faster; CPU/...: below 1 is less CPU per envelope. '!' marks"
        " runs that delivered fewer than sent. max thr: most OS threads alive (/proc/self/task,"
        f" sampled every {BATCH} captures and after the flush, main thread included); workers:"
        " what stats() reports after the flush ('-': not reported); max tasks: asyncio tasks"
        " on the loop besides the benchmark's own, sampled likewise."
    )
    print("servers, one per scenario: " + "; ".join(sinks))
    failed = print_targets(results)
    if args.spool:
        failed += print_spool_targets(results)
    print(f"\ntargets missed: {failed}; total time: {time.perf_counter() - started:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per peer and scenario")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply event counts")
    parser.add_argument(
        "--baseline", metavar="DIR", help="a src/ dir of an older version (threaded/sync/asyncio)"
    )
    parser.add_argument(
        "--peers",
        metavar="A,B",
        help=f"our peers to run (sentry_sdk always runs): {','.join(OURS)}; default all",
    )
    parser.add_argument(
        "--scenarios",
        metavar="A,B",
        help=f"{','.join(SCENARIO_KEYS)}; default {','.join(DEFAULT_SCENARIOS)}",
    )
    parser.add_argument(
        "--variants",
        metavar="A,B",
        help=f"how our peers run: {','.join(VARIANTS)} (see bench/README.md); default installed",
    )
    parser.add_argument(
        "--server",
        choices=tuple(SERVERS),
        default="lean",
        help="the server process: lean (bodies counted, not decoded) or sink; default lean",
    )
    parser.add_argument("--timeout", type=float, default=CHILD_TIMEOUT, help="per child run")
    parser.add_argument("--spool", action="store_true", help="also each peer with spool_dir set")
    parser.add_argument(
        "--sdk-bare",
        action="store_true",
        help="also sentry_sdk without brotli (gzip 9, as pip install sentry-sdk leaves it)",
    )
    parser.add_argument("--child", choices=KINDS, dest="kind", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--event", choices=("small", "large"), help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument(
        "--variant", choices=(*VARIANTS, SDK_BARE), default="installed", help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    return child(args) if args.kind else parent(args)


if __name__ == "__main__":
    sys.exit(main())
