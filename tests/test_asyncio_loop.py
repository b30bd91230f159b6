"""The asyncio transport used from inside its own loop: no threads, awaitable flush/close."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

import pytest

from sentry_transport import AsyncioTransport, Envelope
from sentry_transport.testing import Respond, Sink

pytestmark = pytest.mark.network


async def ticking(ticks: list[float]) -> None:
    """Note the time every 5 ms (as the loop lets it) until cancelled."""
    while True:
        ticks.append(time.monotonic())
        await asyncio.sleep(0.005)


def test_in_loop_capture_aflush_aclose(sentry_sink: Sink) -> None:
    async def main() -> dict[str, object]:
        transport = AsyncioTransport(sentry_sink.dsn)
        threads = threading.active_count()
        for i in range(50):
            transport.capture_event({"message": {"formatted": f"loop{i}"}})
        assert await transport.aflush(5)
        assert threading.active_count() == threads  # small events: no executor thread
        await transport.aclose(2)
        transport.capture_event({"message": {"formatted": "after close"}})
        return transport.stats()

    stats = asyncio.run(main())
    assert stats["events"] == {"accepted": 51, "delivered": 50, "lost": 1}
    assert len(sentry_sink.envelopes) == 50


def test_sync_flush_on_the_loop_thread_does_not_block(sentry_sink: Sink) -> None:
    sentry_sink.default = Respond(200, delay=0.5)

    async def main() -> tuple[bool, float, bool]:
        transport = AsyncioTransport(sentry_sink.dsn)
        transport.capture_envelope(Envelope.for_event({"message": {"formatted": "slow"}}))
        await asyncio.sleep(0)
        started = time.monotonic()
        answer = transport.flush(5)  # cannot wait on its own loop: answers at once
        elapsed = time.monotonic() - started
        done = await transport.aflush(5)
        await transport.aclose(1)
        return answer, elapsed, done

    answer, elapsed, done = asyncio.run(main())
    assert answer is False and elapsed < 0.1 and done is True


def test_large_event_is_prepared_off_the_loop(sentry_sink: Sink) -> None:
    async def main() -> float:
        transport = AsyncioTransport(sentry_sink.dsn)
        ticks: list[float] = []

        async def ticker() -> None:
            for _ in range(200):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        big = {"message": {"formatted": "big"}, "extra": {"blob": ["x" * 100] * 20_000}}
        transport.capture_event(big)
        assert await transport.aflush(10)
        await task
        await transport.aclose(1)
        return max(b - a for a, b in itertools.pairwise(ticks))

    worst_gap = asyncio.run(main())
    assert len(sentry_sink.envelopes) == 1
    assert worst_gap < 0.05  # gzip of ~2 MB ran in the executor (its JSON, on the loop)


def test_close_on_the_loop_thread_drains_in_the_background(sentry_sink: Sink) -> None:
    async def main() -> tuple[float, dict[str, object]]:
        transport = AsyncioTransport(sentry_sink.dsn)
        transport.capture_event({"message": {"formatted": "closing"}})
        started = time.monotonic()
        transport.close(5)  # on its own loop: cannot wait, so it drains in a task
        while not transport.engine.stopped and time.monotonic() - started < 6:
            await asyncio.sleep(0.01)
        return time.monotonic() - started, transport.stats()

    took, stats = asyncio.run(main())
    assert took < 1  # the drain ended when the work did, not at the 5 s deadline
    assert stats["events"] == {"accepted": 1, "delivered": 1, "lost": 0}


@pytest.mark.parametrize("json", ["orjson", "stdlib"])
def test_the_loop_stays_free_while_large_events_go_out(
    sentry_sink: Sink, json: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without orjson the JSON is encoded on the loop too (a thread would hold the GIL as
    long), one ~400 KB event per drain, with a turn for the loop between a flush's drains:
    7-8 ms here at the most (a thread encoding it: 13-26 ms)."""
    import gc

    from sentry_transport.core import jsonenc

    blob, count = ["x" * 100] * 1000, 300  # ~100 KB
    if json == "stdlib":
        monkeypatch.setattr(jsonenc, "accelerator", None)
        blob, count = ["x" * 100] * 4000, 100
    else:
        pytest.importorskip("orjson")
    sentry_sink.default = Respond(200, delay=0.02)

    async def main() -> tuple[float, float, dict[str, int]]:
        transport = AsyncioTransport(sentry_sink.dsn)
        ticks: list[float] = []
        task = asyncio.create_task(ticking(ticks))
        worst = 0.0
        for i in range(count):
            event = {"message": {"formatted": f"big{i}"}, "extra": {"blob": blob}}
            started = time.monotonic()
            transport.capture_event(event)
            worst = max(worst, time.monotonic() - started)
            if i % 10 == 0:
                await asyncio.sleep(0)
        assert await transport.aflush(30)
        task.cancel()
        await transport.aclose(2)
        return max(b - a for a, b in itertools.pairwise(ticks)), worst, transport.stats()["events"]

    # A full collection of this test process's heap takes ~30 ms here: freeze it, so that
    # what is measured is the transport, not the process's past.
    gc.collect()
    gc.freeze()
    try:
        gap, worst, events = asyncio.run(main())
    finally:
        gc.unfreeze()
    assert events == {"accepted": count, "delivered": count, "lost": 0}
    assert gap < 0.05, gap
    assert worst < 0.02, worst


def test_captures_while_workers_wait_for_compression_in_a_thread_keep_the_loop_running(
    sentry_sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers whose batches are compressed in a thread (slowed here) wait for it while
    captures keep coming: the loop runs on, the flush ends in time, nothing is lost. (That a
    worker does not go round while a peer drains is test_workers'
    test_a_worker_waits_while_another_measures_what_it_took_from_the_inbox.)"""
    from sentry_transport.core import jsonenc
    from sentry_transport.runtime.aio import Asyncio

    monkeypatch.setattr(jsonenc, "accelerator", None)
    offload = Asyncio.offload
    offloaded: list[int] = []

    async def slowly(fn: Any, *args: Any) -> Any:
        def late(*args: Any) -> Any:
            time.sleep(0.02)  # in the executor's thread: the loop runs on meanwhile
            return fn(*args)

        offloaded.append(1)
        return await offload(late, *args)

    monkeypatch.setattr(Asyncio, "offload", staticmethod(slowly))
    sentry_sink.default = Respond(200, delay=0.01)

    async def main() -> tuple[dict[str, int], float]:
        transport = AsyncioTransport(sentry_sink.dsn)
        ticks: list[float] = []
        task = asyncio.create_task(ticking(ticks))
        blob = "x" * 20_000
        for i in range(600):  # 20 KB each: a batch's compression goes to a thread
            transport.capture_event({"message": {"formatted": f"e{i}"}, "extra": {"b": blob}})
            if i % 5 == 0:
                await asyncio.sleep(0.001)
        flushed = await asyncio.wait_for(transport.aflush(20), 25)
        task.cancel()
        await transport.aclose(2)
        assert flushed
        return transport.stats(), max(b - a for a, b in itertools.pairwise(ticks))

    # On a thread of its own: a loop stalled for good cannot time itself out (wait_for needs
    # the loop), the test's join can.
    result: list[tuple[dict[str, int], float]] = []
    runner = threading.Thread(target=lambda: result.append(asyncio.run(main())), daemon=True)
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "the loop stalled"
    stats, gap = result[0]
    assert stats["events"] == {"accepted": 600, "delivered": 600, "lost": 0}
    assert gap < 1.0, gap
    assert offloaded  # the rounds did wait for a thread
