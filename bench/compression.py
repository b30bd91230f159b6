"""Body compression: milliseconds per call and output size, per codec and level.

Compresses one ~128 KB event's JSON (bench/events.py: an exception with stack frames) with
the same function the transports use (``sentry_transport.core.compress.compress``) and prints
the median time of repeated calls. br and zstd are included when their library is installed,
and gzip 1-3 through isal (``gzip/isal``; the fast extra) when it is; plain ``gzip`` rows are
the standard library's zlib.
Then the JSON encoding of the same event, by the standard library and by orjson (the fast
extra) through ``core.jsonenc``, and by sentry_sdk's ``json_dumps`` when installed, and the
sum of encoding and compressing per event for each combination.
Last, whether a second core helps the standard library's path: the same number of JSON
encodes and gzip 3 compressions one after the other on one thread, then side by side on two
threads (zlib lets go of the GIL while it compresses; the JSON encoder holds it), and two
threads compressing only, for comparison.

    .venv/bin/python bench/compression.py [--size 131072] [--repeats 30]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from events import large_event

from sentry_transport.core import compress as _compress
from sentry_transport.core import jsonenc
from sentry_transport.core.envelope import dumps

CANDIDATES = [("gzip", 1), ("gzip", 3), ("gzip", 6), ("gzip", 9), ("br", 4), ("zstd", 3)]
ISAL_CANDIDATES = [("gzip", 1), ("gzip", 2), ("gzip", 3)]  # with isal (the fast extra)
DEFAULTS = "sentry-transport default: gzip 3; sentry_sdk 2.x default: br 4 with brotli, else gzip 9"


def median_ms(data: bytes, encoding: str, level: int, repeats: int) -> tuple[float, int]:
    """Median milliseconds per call over ``repeats`` calls (after one warm-up), and size."""
    return timed(lambda: _compress.compress(data, encoding, level), repeats)


def timed(call: Callable[[], bytes], repeats: int) -> tuple[float, int]:
    """Median milliseconds of ``call`` over ``repeats`` calls after a warm-up, and its size."""
    size = len(call())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), size


def json_encoders() -> dict[str, Callable[[Any], bytes]]:
    """The JSON encoders to time, by name (those whose library is installed)."""
    found: dict[str, Callable[[Any], bytes]] = {"json (ours)": jsonenc.stdlib_dumps}
    if jsonenc.accelerator is not None:
        found["orjson (ours)"] = jsonenc.dumps
    try:
        with warnings.catch_warnings():  # sentry_sdk imports eventlet, if installed, which warns
            warnings.simplefilter("ignore")
            from sentry_sdk.utils import json_dumps
    except ImportError:
        pass
    else:
        found["sentry_sdk json_dumps"] = json_dumps
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128 * 1024, help="JSON bytes, at least")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per codec/level")
    args = parser.parse_args(argv)

    data = dumps(large_event(args.size))
    available = _compress.available()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"input: {len(data):,} bytes of event JSON; median of {args.repeats} calls each")
    print(DEFAULTS + "\n")

    results: dict[tuple[str, int], tuple[float, int]] = {}
    header = f"{'codec':<10}{'level':>4}{'ms/call':>10}{'bytes':>10}{'ratio':>8}{'MB/s':>8}"
    print(header)
    print("-" * len(header))
    try:
        from isal import isal_zlib
    except ImportError:
        isal_zlib = None
    rows = [(e, lv, None, e) for e, lv in CANDIDATES]
    rows += [(e, lv, isal_zlib, f"{e}/isal") for e, lv in ISAL_CANDIDATES]
    for encoding, level, accelerator, label in rows:
        if encoding not in available or (label.endswith("/isal") and accelerator is None):
            print(f"{label:<10}{level:>4}   (not installed)")
            continue
        _compress.zlib_accelerator = accelerator  # None: the standard library's zlib
        ms, size = median_ms(data, encoding, level, args.repeats)
        results[label, level] = (ms, size)
        ratio = len(data) / size
        speed = len(data) / ms / 1000
        print(f"{label:<10}{level:>4}{ms:>10.2f}{size:>10,}{ratio:>7.1f}x{speed:>8.0f}")

    base_ms, base_size = results["gzip", 3]
    print("\nrelative to gzip 3 (time, size):")
    for (encoding, level), (ms, size) in results.items():
        print(f"  {encoding} {level}: {ms / base_ms:.2f}x time, {size / base_size:.2f}x size")

    event = large_event(args.size)
    print(f"\nJSON of the same event, median of {args.repeats} calls:")
    encoded: dict[str, float] = {}
    for name, encode in json_encoders().items():
        ms, size = timed(lambda encode=encode: encode(event), args.repeats)
        encoded[name] = ms
        print(f"  {name:<22}{ms:>8.2f} ms {size:>10,} bytes")

    print("\nencode + compress, ms per event (the CPU of a body, without the HTTP):")
    combos = [
        ("without the fast extra", "json (ours)", ("gzip", 3)),
        ("fast extra", "orjson (ours)", ("gzip/isal", 3)),
        ("fast extra, compression=zstd", "orjson (ours)", ("zstd", 3)),
        ("sentry_sdk (br 4)", "sentry_sdk json_dumps", ("br", 4)),
    ]
    for label, encoder, codec in combos:
        if encoder in encoded and codec in results:
            print(f"  {label:<30}{encoded[encoder] + results[codec][0]:>8.2f}")
    side_by_side(event, data, max(10, args.repeats))
    return 0


def side_by_side(event: Any, data: bytes, count: int, rounds: int = 5) -> None:
    """Wall seconds (median of ``rounds``) of ``count`` stdlib JSON encodes and ``count``
    zlib gzip 3 compressions, one after the other on one thread and then on two threads at
    once; and of ``2 * count`` compressions on one thread and on two."""
    _compress.zlib_accelerator = None  # the standard library's zlib

    def encode() -> None:
        for _ in range(count):
            jsonenc.stdlib_dumps(event)

    def gzip() -> None:
        for _ in range(count):
            _compress.compress(data, "gzip", 3)

    def wall(*jobs: Callable[[], None], threaded: bool) -> float:
        start = time.perf_counter()
        if threaded:
            threads = [threading.Thread(target=job) for job in jobs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            for job in jobs:
                job()
        return time.perf_counter() - start

    cases = {
        "mixed, one thread": (encode, gzip, False),
        "mixed, two threads": (encode, gzip, True),
        "gzip, one thread": (gzip, gzip, False),
        "gzip, two threads": (gzip, gzip, True),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (first, second, threaded) in cases.items():
            times[name].append(wall(first, second, threaded=threaded))
    got = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nwall seconds, median of {rounds} rounds (a second core: zlib lets go of the GIL")
    print("while it compresses, the standard library's JSON encoder holds it throughout):")
    for kind, label in (
        ("mixed", f"{count} JSON encodes + {count} gzip 3"),
        ("gzip", f"{2 * count} gzip 3"),
    ):
        one, two = got[f"{kind}, one thread"], got[f"{kind}, two threads"]
        print(f"  {label:<30} one thread {one:6.3f}, two threads {two:6.3f} ({one / two:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
