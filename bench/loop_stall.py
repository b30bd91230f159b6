"""Does a thread keep an event loop free of the standard library's JSON encoder? No.

Times the asyncio loop's longest stall (the longest gap between the runs of a task that
sleeps 0.5 ms in a loop) while a large event is encoded by ``core.jsonenc.stdlib_dumps``
(what a transport without orjson uses), three ways: in the loop's default executor (a
thread), on the loop itself, and compressed with zlib in the executor (which lets go of the
GIL) for comparison. The encoder holds the GIL from start to end, so the loop waits for it
in either place: the runtimes encode on the loop (``runtime/threads.LoopSizes``) and send
only compression to a thread.

    .venv/bin/python bench/loop_stall.py [--mb 6] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shlex
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

from sentry_transport.core import jsonenc

TICK = 0.0005


def event(megabytes: float) -> dict[str, Any]:
    """An event of about ``megabytes`` MB of JSON: many small values, as breadcrumbs are."""
    count = int(megabytes * 1_000_000 / 110)
    extra = {f"k{i}": ["x" * 50, i, 1.5, {"a": "b" * 20}] for i in range(count)}
    return {"message": "big", "extra": extra}


async def longest_gap(work: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Medians over the repeats, in ms: of ``work``'s own duration, and of the longest gap
    between the ticker's runs while it ran (and 10 ms after)."""
    gaps: list[float] = []
    running = True

    async def ticker() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    took, longest = [], []
    for _ in range(repeats):
        await asyncio.sleep(0.01)
        gaps.clear()
        started = time.perf_counter()
        await work()
        took.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
        longest.append(max(gaps))
    running = False
    await task
    return statistics.median(took) * 1000, statistics.median(longest) * 1000


async def main(megabytes: float, repeats: int) -> None:
    loop = asyncio.get_running_loop()
    obj = event(megabytes)
    body = jsonenc.stdlib_dumps(obj)

    async def in_thread() -> None:
        await loop.run_in_executor(None, jsonenc.stdlib_dumps, obj)

    async def on_loop() -> None:
        jsonenc.stdlib_dumps(obj)

    async def compress_in_thread() -> None:
        await loop.run_in_executor(None, zlib.compress, body, 3)

    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"python {sys.version.split()[0]}; event: {len(body):,} B of JSON")
    print(f"a task sleeps {TICK * 1000} ms in a loop; a gap is the time between its runs")
    print(f"medians of {repeats}: the work's own ms, and the loop's longest gap while it ran")
    print(f"{'work':<34} {'its ms':>10} {'longest loop gap ms':>20}")
    for label, work in (
        ("stdlib JSON encode, in a thread", in_thread),
        ("stdlib JSON encode, on the loop", on_loop),
        ("zlib 3 of that JSON, in a thread", compress_in_thread),
    ):
        took, gap = await longest_gap(work, repeats)
        print(f"{label:<34} {took:>10.1f} {gap:>20.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=6.0, help="the event's JSON, in MB")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    gc.collect()
    gc.freeze()  # no collection of the event itself lands in a gap
    asyncio.run(main(args.mb, args.repeats))
