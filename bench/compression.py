"""Body compression: milliseconds per call and output size, per codec and level.

Compresses one ~128 KB event's JSON (bench/events.py: an exception with stack frames) with
the same function the transports use (``sentry_transport._compress.compress``) and prints
the median time of repeated calls. br and zstd are included when their library is installed.

    .venv/bin/python bench/compression.py [--size 131072] [--repeats 30]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Sequence

from events import large_event

from sentry_transport.core import compress as _compress
from sentry_transport.core.envelope import dumps

CANDIDATES = [("gzip", 1), ("gzip", 3), ("gzip", 6), ("gzip", 9), ("br", 4), ("zstd", 3)]
DEFAULTS = "sentry-transport default: gzip 3; sentry_sdk 2.x default: br 4 with brotli, else gzip 9"


def median_ms(data: bytes, encoding: str, level: int, repeats: int) -> tuple[float, int]:
    """Median milliseconds per call over ``repeats`` calls (after one warm-up), and size."""
    size = len(_compress.compress(data, encoding, level))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _compress.compress(data, encoding, level)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), size


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
    header = f"{'codec':<8}{'level':>6}{'ms/call':>10}{'bytes':>10}{'ratio':>8}{'MB/s':>8}"
    print(header)
    print("-" * len(header))
    for encoding, level in CANDIDATES:
        if encoding not in available:
            print(f"{encoding:<8}{level:>6}   (not installed)")
            continue
        ms, size = median_ms(data, encoding, level, args.repeats)
        results[encoding, level] = (ms, size)
        ratio = len(data) / size
        speed = len(data) / ms / 1000
        print(f"{encoding:<8}{level:>6}{ms:>10.2f}{size:>10,}{ratio:>7.1f}x{speed:>8.0f}")

    base_ms, base_size = results["gzip", 3]
    print("\nrelative to gzip 3 (time, size):")
    for (encoding, level), (ms, size) in results.items():
        print(f"  {encoding} {level}: {ms / base_ms:.2f}x time, {size / base_size:.2f}x size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
