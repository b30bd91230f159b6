"""Which HTTP client should the asyncio transport use? Measured, not guessed.

Sends the same small envelopes with 16 requests in flight to one out-of-process sink through:
  streams   asyncio streams + our sans-I/O HTTP/1.1 codec (what AsyncioTransport uses)
  aiohttp   aiohttp.ClientSession (if installed)
  httpx     httpx.AsyncClient (if installed)
and prints requests/s (median of repeats) and the CPU seconds the client process spent.

    python bench/asyncio_clients.py [--requests 4000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from sentry_transport import Dsn, Envelope
from sentry_transport.core.request import build
from sentry_transport.transports.aio import _Connection  # the transport's own connection

CONCURRENCY = 16


def start_sink() -> tuple[subprocess.Popen[str], str]:
    sink = subprocess.Popen(
        [sys.executable, "-m", "sentry_transport.testing", "--quiet", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None
    return sink, sink.stdout.readline().strip()


async def run_streams(dsn: Dsn, body_request: object, count: int) -> None:
    request = body_request
    queue = iter(range(count))

    async def worker() -> None:
        conn = _Connection(dsn, None)
        for _ in queue:
            response = await conn.request(request)  # type: ignore[arg-type]
            assert response.status == 200
        conn.abort()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def run_aiohttp(dsn: Dsn, body_request: object, count: int) -> None:
    import aiohttp

    request = body_request
    queue = iter(range(count))
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for _ in queue:
                async with session.post(
                    request.url,  # type: ignore[attr-defined]
                    data=request.body,  # type: ignore[attr-defined]
                    headers=dict(request.headers),  # type: ignore[attr-defined]
                ) as response:
                    await response.read()
                    assert response.status == 200

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def run_httpx(dsn: Dsn, body_request: object, count: int) -> None:
    import httpx

    request = body_request
    queue = iter(range(count))
    limits = httpx.Limits(max_connections=CONCURRENCY)
    headers = {k: v for k, v in request.headers if k not in ("Host", "Content-Length")}  # type: ignore[attr-defined]
    async with httpx.AsyncClient(limits=limits) as client:

        async def worker() -> None:
            for _ in queue:
                response = await client.post(request.url, content=request.body, headers=headers)  # type: ignore[attr-defined]
                assert response.status_code == 200

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


Runner = Callable[[Dsn, object, int], Awaitable[None]]


def available() -> dict[str, Runner]:
    runners: dict[str, Runner] = {"streams": run_streams}
    for name, runner in (("aiohttp", run_aiohttp), ("httpx", run_httpx)):
        try:
            __import__(name)
        except ImportError:
            print(f"({name} not installed: skipped)")
            continue
        runners[name] = runner
    return runners


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sink, dsn_text = start_sink()
    try:
        dsn = Dsn.parse(dsn_text)
        envelope = Envelope.for_event({"message": {"formatted": "x" * 600}, "level": "error"})
        request = build(envelope, dsn, time.time(), None)
        print(f"{args.requests} POSTs of {len(request.body)} bytes, {CONCURRENCY} in flight")
        print(f"{'client':<10}{'requests/s':>14}{'client CPU s':>14}")
        for name, runner in available().items():
            rates, cpus = [], []
            for _ in range(args.repeats):
                cpu0, wall0 = time.process_time(), time.perf_counter()
                asyncio.run(runner(dsn, request, args.requests))
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                rates.append(args.requests / wall)
                cpus.append(cpu)
            print(f"{name:<10}{statistics.median(rates):>14,.0f}{statistics.median(cpus):>14.2f}")
    finally:
        sink.terminate()
        sink.wait(5)


if __name__ == "__main__":
    main()
