"""Worker growth's inputs (growth.py): the server's speed is judged by the fastest recent
round trip, so that waits for the GIL or the CPU (which only ever add) do not read as a slow
server, and a request hanging in flight counts before it ends. And the inbox's drains and how
loops and threads measure them (workers.py, runtime/threads.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sentry_transport import Dsn
from sentry_transport.growth import HANGING, RTT_WINDOW, SURE_SAMPLES
from sentry_transport.pump import Pump
from sentry_transport.runtime.threads import LoopSizes, Threads


@pytest.fixture
def pump() -> Iterator[Pump]:
    made = Pump(Dsn.parse("http://k@127.0.0.1:9/1"), Threads())
    yield made
    made.stop()


def test_the_fastest_of_recent_round_trips_is_the_estimate(pump: Pump) -> None:
    assert pump.round_trip == 0.0  # nothing measured yet
    pump._sample(0.008)  # a request that waited for the GIL
    assert pump.round_trip == 0.008
    pump._sample(0.0003)
    pump._sample(0.006)
    assert pump.round_trip == 0.0003
    assert pump._slowest() == 0.0  # too few to say the server is slow
    for _ in range(SURE_SAMPLES - 3):
        pump._sample(0.008)
    assert pump._slowest() == 0.0003


def test_a_few_slow_round_trips_do_not_grow_past_two_workers(pump: Pump) -> None:
    from sentry_transport import Envelope

    pump.engine.submit(Envelope.for_event({"message": "e"}), 0.0, 1000)
    pump.workers = 2
    pump.cpu_busy = 0.0  # measured: the process is far from busy
    for _ in range(SURE_SAMPLES - 1):
        pump._sample(0.005)  # waits for the GIL, say
    assert not pump._growth_due()
    pump._sample(0.005)
    assert pump._growth_due()  # consistently slow: latency-bound


def test_old_windows_are_forgotten(pump: Pump) -> None:
    pump._sample(0.0003)
    for _ in range(2 * RTT_WINDOW):  # the server became slow: 20 ms
        pump._sample(0.020)
    assert pump.round_trip == 0.020


def test_a_request_hanging_in_flight_counts_once_it_is_long(pump: Pump) -> None:
    class Conn:
        since = 0.0

    conn = Conn()
    pump.connections.add(conn)  # type: ignore[arg-type]
    for _ in range(SURE_SAMPLES):
        pump._sample(0.0003)
    from sentry_transport import growth

    conn.since = growth.monotonic() - HANGING / 2  # in flight, but not long: GIL noise
    assert pump._slowest() == 0.0003
    conn.since = growth.monotonic() - 1.0
    assert pump._slowest() >= 1.0
    pump.connections.discard(conn)  # type: ignore[arg-type]


# -- pipelining ---------------------------------------------------------------------------------


def test_batches_fill_a_pipeline_while_slow_and_stay_small_for_large_envelopes(pump: Pump) -> None:
    from sentry_transport import Envelope

    for i in range(100):
        pump.engine.submit(Envelope.for_event({"message": f"e{i}"}), 0.0, 1000)
    pump.workers = 2
    pump._sample(0.020)  # a slow server
    assert pump._batch() == pump.pipelining.depth == 32
    pump.pipelining.refuse("no pipelining here")
    assert pump._batch() == 1  # one request at a time, as without pipelining
    pump.engine.reset()
    for i in range(100):
        pump.engine.submit(Envelope.for_event({"message": f"e{i}"}), 0.0, 100_000)
    pump.pipelining.depth = 16
    assert pump._batch() == 2  # about 256 KiB


def test_a_slow_server_gets_full_pipelines_not_shares_of_the_backlog(pump: Pump) -> None:
    from sentry_transport import Envelope

    for i in range(20):
        pump.engine.submit(Envelope.for_event({"message": f"e{i}"}), 0.0, 1000)
    pump.workers = 8
    assert pump._batch() == 32  # not measured yet: a full pipeline
    pump._sample(0.020)
    assert pump._batch() == 32  # slow: a round trip costs the same for 2 as for 32
    pump._sample(0.0003)
    assert pump._batch() == 2  # fast: the CPU limits, each worker takes part


def _ramp(
    pump: Pump, seconds: float, queued: int, busy: bool = False, earlier: int = 1
) -> list[int]:
    """Workers started by a timed answer after ``earlier`` others as slow (spawning counted,
    not done)."""
    import time

    from sentry_transport import Envelope

    for i in range(queued):
        pump.engine.submit(Envelope.for_event({"message": f"e{i}"}), 0.0, 1000)
    pump.workers = 2
    started: list[int] = []
    pump._spawn = lambda: started.append(pump.workers)  # type: ignore[method-assign]
    cpu = time.process_time()
    if busy:  # the process was on the CPU all along
        end = time.process_time() + 0.01
        while time.process_time() < end:
            pass
    for _ in range(earlier):
        pump._sample(seconds)
    pump._cpu_mark = (time.monotonic() - 0.01, cpu)  # CPU measured from 10 ms ago
    pump._timed(seconds)
    return started


def test_a_far_server_starts_the_workers_the_backlog_fills_at_once(pump: Pump) -> None:
    assert len(_ramp(pump, 0.020, 500)) == 6  # 8 x 32 = 256 in flight
    assert pump.workers == 8 == pump._most_connections()


def test_the_ramp_starts_only_as_many_as_the_backlog_fills(pump: Pump) -> None:
    assert len(_ramp(pump, 0.020, 80)) == 3  # 80 queued: 3 more pipelines of 32


def test_no_ramp_for_a_near_server_a_busy_process_or_one_slow_answer(pump: Pump) -> None:
    assert _ramp(pump, 0.003, 500) == []  # slow-ish: grows a worker per round, as before
    for case in ({"busy": True}, {"earlier": 0}):  # the CPU limits; GIL noise, maybe
        pump.engine.reset()
        pump.round_trip, pump._fastest, pump.samples = 0.0, (float("inf"), float("inf"), 0), 0
        assert _ramp(pump, 0.020, 500, **case) == []  # type: ignore[arg-type]


def test_connections_grow_to_4_while_pipelining_8_when_far(pump: Pump) -> None:
    assert pump._most_connections() == 4  # 4 x 32 in flight
    pump._sample(0.005)
    pump._sample(0.005)
    assert pump._most_connections() == 4  # slow, not far: 128 is 25,600/s at 5 ms
    pump._sample(0.02)
    assert pump._most_connections() == 4  # one far round trip: the fastest still says 5 ms
    pump.round_trip, pump._fastest, pump.samples = 0.0, (float("inf"), float("inf"), 0), 0
    pump._sample(0.02)
    pump._sample(0.02)
    assert pump._most_connections() == 8  # 8 x 32 in flight
    pump.pipelining.depth = 64  # a deeper pipeline: as many connections (a server answers
    assert pump._most_connections() == 8  # one connection's requests one by one)
    pump.pipelining.refuse("no pipelining here")
    assert pump._most_connections() == pump.options.max_connections == 16


def test_a_runtime_with_its_own_http_client_does_not_pipeline() -> None:
    class Own(Threads):
        def connection(self, pump: Pump) -> object:
            raise AssertionError("not called here")

    made = Pump(Dsn.parse("http://k@127.0.0.1:9/1"), Own())
    try:
        assert made.pipelining.depth == 1
    finally:
        made.stop()


def test_growth_waits_for_the_cpu_to_be_measured(pump: Pump) -> None:
    from sentry_transport import Envelope

    pump.engine.submit(Envelope.for_event({"message": "e"}), 0.0, 1000)
    pump.workers = 2
    for _ in range(SURE_SAMPLES):
        pump._sample(0.005)
    assert pump.cpu_busy == 1.0 and not pump._growth_due()  # not measured yet: taken as busy
    since, cpu = pump._cpu_mark
    pump._cpu_mark = (since - 1.0, cpu)  # a window (a second, nearly idle) is over
    pump._measure_cpu()
    assert pump.cpu_busy < 0.75 and pump._growth_due()


def test_a_flush_measures_what_the_inbox_held_when_it_began_not_what_keeps_coming(
    pump: Pump,
) -> None:
    """A capturing thread that keeps the inbox full cannot keep a flush measuring: it drains
    what was there when it began, in batches, and the rest is admitted as it is."""
    import time

    from sentry_transport import Envelope
    from sentry_transport.runtime.threads import run
    from sentry_transport.workers import DRAIN_BATCH

    envelope = Envelope.for_event({"message": "e"})
    drains: list[int] = []

    def measure_all(batch: list[Envelope]) -> list[int]:
        drains.append(len(batch))
        pump.inbox.extend([envelope] * 300)  # captured meanwhile, faster than it drains
        return [100] * len(batch)

    pump.runtime.measure_all = measure_all  # type: ignore[method-assign]
    pump._spawn = lambda: None  # type: ignore[method-assign]  # no workers: nothing is sent
    pump.inbox.extend([envelope] * 600)
    begun = time.monotonic()
    assert run(pump.settle(begun + 0.2)) is False  # nothing can be delivered here
    assert drains == [DRAIN_BATCH] * 3  # as many rounds as the 600 take, not one more
    assert time.monotonic() - begun < 2.0


def test_a_loop_measures_by_encoding_with_orjson_up_to_a_budget_and_leaves_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sentry_transport import Envelope
    from sentry_transport.runtime import threads

    pytest.importorskip("orjson")
    big = [Envelope.for_event({"message": "m", "extra": {"blob": "x" * 100_000}}) for _ in range(5)]
    sizes = threads.budgeted_sizes(big)
    encoded = [envelope.items[0].payload_is_encoded for envelope in big]
    assert encoded == [True, True, True, False, False]  # 3 x 100 KB reach the 256 KiB budget
    assert sizes == [len(envelope.items[0].payload) for envelope in big[:3]]  # the rest: later
    huge = Envelope.for_event({"message": "m", "extra": {"blob": "x" * 300_000}})
    assert threads.budgeted_sizes([huge, *big[3:]]) == [len(huge.items[0].payload)]  # one at least
    small = Envelope.for_event({"message": "m"})
    assert threads.LoopSizes.measure(small) == len(small.items[0].payload)  # the caller's own


def test_without_orjson_a_loop_measures_on_the_loop_by_encoding_up_to_a_smaller_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The standard library's encoder holds the GIL throughout: a thread would stall the loop
    as long, so the loop encodes (once: the payloads are kept for sending), 64 KiB of JSON
    per drain at most (one envelope at least), and a capture measures its own exactly."""
    from sentry_transport import Envelope
    from sentry_transport.core import jsonenc
    from sentry_transport.runtime import threads

    monkeypatch.setattr(jsonenc, "accelerator", None)
    assert threads.loop_budget() == threads.LOOP_STDLIB_BUDGET == 64 * 1024
    blob = "x" * 30_000
    drained = [Envelope.for_event({"message": "m", "extra": {"blob": blob}}) for _ in range(4)]
    runtime = LoopSizes()
    sizes = runtime.measure_all(drained)
    encoded = [envelope.items[0].payload_is_encoded for envelope in drained]
    assert encoded == [True, True, True, False]  # 3 x 30 KB reach the 64 KiB budget
    assert sizes == [len(envelope.items[0].payload) for envelope in drained[:3]]
    huge = Envelope.for_event({"message": "m", "extra": {"blob": "x" * 100_000}})
    assert runtime.measure_all([huge, drained[3]]) == [len(huge.items[0].payload)]
    own = Envelope.for_event({"message": "m"})
    assert runtime.measure(own) == len(own.items[0].payload) and own.items[0].payload_is_encoded

    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from sentry_transport.runtime.aio import Asyncio

    hops: list[Any] = []

    class NoHops(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            hops.append(fn)
            return super().submit(fn, *args, **kwargs)

    again = [Envelope.for_event({"message": "m", "n": i}) for i in range(3)]

    async def main() -> list[int]:
        asyncio.get_running_loop().set_default_executor(NoHops(1))
        return await Asyncio.measure_all(again)

    assert asyncio.run(main()) == [len(envelope.items[0].payload) for envelope in again]
    assert hops == []


def test_a_loop_moves_an_encode_to_a_thread_only_for_its_slow_work() -> None:
    """JSON still to encode or bodies to compress, 16 KiB of it or more, go to a thread; a
    batch of small events measured (encoded) already is joined into requests on the loop."""
    from sentry_transport import Envelope
    from sentry_transport.core.actions import Attempt, Job
    from sentry_transport.runtime.threads import INLINE_ENCODE_BYTES, encodes_inline

    def attempts(count: int, blob: int, encoded: bool) -> list[Attempt]:
        made = []
        for i in range(count):
            envelope = Envelope.for_event({"message": "m", "extra": {"blob": "x" * blob}})
            # encoded: measured by encoding; else as an estimate would have it
            size = len(envelope.items[0].payload) if encoded else blob + 60
            made.append(Attempt(Job(i, envelope, size), list(envelope.items)))
        return made

    measured = attempts(32, 1000, encoded=True)  # 32 x ~1.1 KB: 35 KB, all ready
    assert sum(a.job.size for a in measured) >= INLINE_ENCODE_BYTES
    assert encodes_inline(measured)
    assert not encodes_inline(attempts(32, 1000, encoded=False))  # 35 KB of JSON to encode
    assert encodes_inline(attempts(4, 1000, encoded=False))  # 4 KB of it: on the loop
    assert not encodes_inline(attempts(8, 3000, encoded=True))  # 24 KB to compress
    assert encodes_inline(attempts(4, 3000, encoded=True))  # 12 KB of it


def test_a_thread_wake_behaves_as_an_event_for_its_waiter() -> None:
    import time

    from sentry_transport.runtime.threads import ThreadWake

    wake = Threads().wake()
    assert isinstance(wake, ThreadWake)  # an unpatched process: the raw-lock wake
    begun = time.monotonic()
    assert wake.wait(0.05) is False and not wake.is_set()  # nobody set it: the timeout
    assert 0.04 <= time.monotonic() - begun < 1.0
    wake.set()
    wake.set()  # twice: still one set wake, no error
    assert wake.wait(5) is True and wake.wait(0) is True  # stays set, as an Event does
    wake.clear()
    assert wake.wait(0.01) is False
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(wake.wait(5)))
    waiter.start()
    time.sleep(0.05)  # (it waits on the gate by now, or soon: either way it sees the set)
    begun = time.monotonic()
    wake.set()
    waiter.join(5)
    assert woke == [True] and time.monotonic() - begun < 1.0
    wake.clear()
    wake._gate.release()  # a set and a clear that raced: the gate open, the flag down
    begun = time.monotonic()
    assert wake.wait(5) is False  # at once, as a timeout: its caller looks again
    assert time.monotonic() - begun < 1.0
    wake.clear()
    assert wake.wait(0.01) is False and not wake.is_set()


def test_a_worker_waits_while_another_measures_what_it_took_from_the_inbox(pump: Pump) -> None:
    """Captured while a peer measures what it took (on another thread: a thread runtime's
    worker, a flush called from another OS thread): the inbox is not empty, yet nothing is
    for this worker to take. It waits to be woken instead of going round again: going round
    without yielding would spin, and on an event loop or a hub whose measuring could wait
    (it once waited for a thread) it stalled the loop for good."""
    from sentry_transport import Envelope

    pump.inbox.append(Envelope.for_event({"message": "captured meanwhile"}))
    pump.draining = True  # a peer's measure_all is under way
    rounds: list[int] = []
    drain = pump._drain

    def counted() -> Any:
        rounds.append(1)
        assert len(rounds) < 5, "the worker goes round without waiting"
        return drain()

    pump._drain = counted  # type: ignore[method-assign]
    steps = pump._work()
    wait = next(steps)
    assert getattr(wait[0], "__name__", "") == "wait" and wait[1] is None, wait
    assert len(rounds) == 1 and len(pump.idle) == 1  # idle: a capture or the peer wakes it
    waiting = pump.idle[0]
    assert not waiting.is_set()

    # The peer's drain ends with more captured meanwhile: it wakes the idle worker
    from sentry_transport.runtime.threads import run

    def measure_all(batch: list[Envelope]) -> list[int]:
        pump.inbox.append(Envelope.for_event({"message": "and another"}))
        return [100] * len(batch)

    pump.runtime.measure_all = measure_all  # type: ignore[method-assign]
    pump.draining = False
    run(drain())
    assert waiting.is_set() and not pump.idle and len(pump.inbox) == 1
    steps.close()


@pytest.mark.parametrize("accelerated", [True, False])
def test_a_loop_holds_as_many_unmeasured_as_threads_with_either_encoder(
    monkeypatch: pytest.MonkeyPatch, accelerated: bool
) -> None:
    """Captures append to the inbox up to INBOX_UNMEASURED; past it the caller measures its
    own envelope (by encoding it, also on a loop without orjson) and submits it."""
    from sentry_transport import Envelope
    from sentry_transport.core import jsonenc
    from sentry_transport.runtime.aio import Asyncio
    from sentry_transport.workers import INBOX_UNMEASURED

    if accelerated:
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(jsonenc, "accelerator", None)
    for runtime in (Asyncio(), Threads()):  # (no loop runs here: no asyncio worker starts)
        measured: list[Envelope] = []
        measure = runtime.measure
        monkeypatch.setattr(
            runtime, "measure", lambda e, seen=measured, real=measure: seen.append(e) or real(e)
        )
        pump = Pump(Dsn.parse("http://k@127.0.0.1:9/1"), runtime)
        pump._spawn = lambda: None  # type: ignore[method-assign]  # no thread drains either
        try:
            for i in range(INBOX_UNMEASURED + 1):
                pump.capture(Envelope.for_event({"message": f"e{i}"}))
            assert len(pump.inbox) == INBOX_UNMEASURED and len(measured) == 1, runtime
            assert measured[0].items[0].payload_is_encoded  # exactly, by encoding: no estimate
            assert pump.engine.queued == 1  # the last one, measured by its caller
        finally:
            pump.stop()


def test_a_thread_drain_hands_each_256_kib_of_json_to_the_engine_and_leaves_the_rest(
    pump: Pump,
) -> None:
    """Threads measure by encoding; a drain of large events stops at DRAIN_BYTES of JSON so
    that what it encoded can be compressed and sent by this worker while a peer, woken,
    encodes the next (the standard library's JSON holds the GIL, compression does not). What
    it did not measure goes back to the front of the inbox, in order, before newer captures."""
    from sentry_transport import Envelope
    from sentry_transport.runtime.threads import DRAIN_BYTES, run

    def big(i: int) -> Envelope:
        return Envelope.for_event({"message": f"big{i}", "extra": {"blob": "x" * 100_000}})

    large = [big(i) for i in range(5)]
    sizes = Threads.measure_all(large)
    assert len(sizes) == 3 and sum(sizes[:2]) < DRAIN_BYTES <= sum(sizes)  # 3 x ~100 KB
    assert [e.items[0].payload_is_encoded for e in large] == [True] * 3 + [False] * 2
    small = [Envelope.for_event({"message": f"s{i}"}) for i in range(100)]
    assert len(Threads.measure_all(small)) == 100  # 100 small ones are far below

    batch = [big(i) for i in range(5)]
    later = Envelope.for_event({"message": "captured later"})
    pump.inbox.extend(batch)
    wake = pump.runtime.wake()
    pump.idle.append(wake)  # a peer waiting for work
    measure_all = Threads.measure_all

    def measured(envelopes: list[Envelope]) -> list[int]:
        pump.inbox.append(later)  # captured while the drain encodes
        return measure_all(envelopes)

    pump.runtime.measure_all = measured  # type: ignore[method-assign]
    assert run(pump._drain()) == 3
    assert pump.engine.queued == 3
    assert list(pump.inbox) == [batch[3], batch[4], later]
    assert wake.is_set() and not pump.idle  # the peer drains the rest


def _drain_three_large_while(pump: Pump, meanwhile: Any) -> tuple[list[Any], int]:
    """Three 200 KB events in the inbox, drained by a thread's measure_all during which
    ``meanwhile()`` happens: (the three, how many the drain moved)."""
    from sentry_transport import Envelope
    from sentry_transport.runtime.threads import run

    batch = [
        Envelope.for_event({"message": f"b{i}", "extra": {"x": "y" * 200_000}}) for i in range(3)
    ]
    pump.inbox.extend(batch)
    measure_all = Threads.measure_all

    def measured(envelopes: list[Envelope]) -> list[int]:
        meanwhile()
        return measure_all(envelopes)

    pump.runtime.measure_all = measured  # type: ignore[method-assign]
    moved: int = run(pump._drain())
    return batch, moved


def test_what_a_drain_left_unmeasured_is_counted_when_the_transport_stopped_meanwhile(
    pump: Pump,
) -> None:
    """Stopped while a worker measured (a close past its deadline): what the drain measured
    and what it left are counted lost, not left in an inbox nobody drains any more."""
    _batch, moved = _drain_three_large_while(pump, pump.stop)  # from another thread
    assert moved == 2  # 2 x 200 KB reach DRAIN_BYTES: 1 left
    assert not pump.inbox
    assert pump.snapshot()["events"] == {"accepted": 3, "delivered": 0, "lost": 3}


def test_what_a_drain_left_unmeasured_goes_to_the_new_inbox_after_a_rebuild(pump: Pump) -> None:
    """Monkey-patched while a worker measured: the pump rebuilt with a new inbox, and what
    the drain left goes there (the old one is nobody's any more)."""
    pump._spawn = lambda: None  # type: ignore[method-assign]  # no workers: nothing is sent
    batch, moved = _drain_three_large_while(pump, pump.rebuild)  # from another thread
    assert moved == 2
    assert list(pump.inbox) == [batch[2]]
    assert pump.engine.queued == 2
