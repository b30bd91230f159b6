"""Lifecycle rules (pump.py) that need a process of their own or one runtime, checked
against a live sink (the rest are scenarios of the conformance suite: close with requests in
flight, a stale resend within the deadline, fork):

- the end of a program without close delivers within shutdown_timeout (threads: at exit;
  asyncio: when asyncio.run returns; a loop-less asyncio script: at exit);
- memory: 20,000 x 100 KB into a small queue_bytes against a dead server stays bounded, and
  no capture waits;
- a threaded transport made before gevent's monkey-patching keeps working after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sentry_transport import make_transport
from sentry_transport.testing import Respond, Sink
from sentry_transport.testing.conformance import FAST
from sentry_transport.testing.conformance._base import event

pytestmark = pytest.mark.network

SRC = os.path.join(os.path.dirname(__file__), "..", "src")


@pytest.fixture
def sink(sentry_sink: Sink) -> Sink:
    return sentry_sink


def run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


# -- the end of a program without close ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["sync", "threaded"])
def test_program_end_without_close_delivers(sink: Sink, backend: str) -> None:
    sink.default = Respond(200, delay=0.01)
    done = run_script(
        f"""
        from sentry_transport import make_transport
        t = make_transport("{backend}+{sink.dsn}", shutdown_timeout=10)
        for i in range(100):
            t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})
        """
    )
    assert done.returncode == 0, done.stderr
    assert sink.wait_for(100, timeout=10)
    assert len(sink.envelopes) == 100


def test_exit_drain_sends_on_the_exiting_thread_when_no_thread_can_start(sink: Sink) -> None:
    # Python 3.12.0-3.12.2 refuse new threads at interpreter exit ("can't create new thread
    # at interpreter shutdown"): the drain must then send on the exiting thread itself.
    done = run_script(
        f"""
        import _thread, threading
        from sentry_transport import make_transport

        def refuse(*args, **kwargs):
            raise RuntimeError("can't create new thread at interpreter shutdown")

        # as at exit on those versions: no worker can start
        _thread.start_new_thread = threading.Thread.start = refuse
        t = make_transport("threaded+{sink.dsn}", shutdown_timeout=10)
        for i in range(31):
            t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})
        assert t.stats()["workers"] == 0  # sent on this thread instead
        """
    )
    assert done.returncode == 0, done.stderr
    assert sink.wait_for(31, timeout=10)
    assert len(sink.envelopes) == 31


def test_asyncio_run_returning_without_aclose_delivers(sink: Sink) -> None:
    sink.default = Respond(200, delay=0.01)
    done = run_script(
        f"""
        import asyncio, json
        from sentry_transport import AsyncioTransport
        async def main():
            global t
            t = AsyncioTransport("{sink.dsn}", shutdown_timeout=10)
            for i in range(100):
                t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})
        asyncio.run(main())
        print(json.dumps(t.stats()["events"]))  # books final when asyncio.run returned
        """
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"accepted": 100, "delivered": 100, "lost": 0}
    assert len(sink.envelopes) == 100


def test_asyncio_transport_with_no_loop_warns_and_delivers(sink: Sink) -> None:
    done = run_script(
        f"""
        import logging, sys
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        from sentry_transport import AsyncioTransport
        t = AsyncioTransport("{sink.dsn}")  # made at import time: no loop runs
        for i in range(10):
            t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})
        print(t.flush(5), t.stats()["events"]["delivered"])
        t.capture_event({{"message": {{"formatted": "at exit"}}}})
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "10"]
    assert done.stderr.count("no event loop running") == 1, done.stderr
    assert sink.wait_for(11, timeout=5)  # the last one went at interpreter exit


# -- memory and caller cost ---------------------------------------------------------------------


def test_queue_bytes_bounds_memory_from_capture_on(tmp_path: object) -> None:
    done = run_script(
        """
        import json, resource, socket, time
        from sentry_transport import make_transport
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nobody listens: every request is refused
        t = make_transport(f"http://k@127.0.0.1:{port}/1", queue_bytes=16 << 20,
                           retry_backoff=5, timeout=1)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        worst = 0.0
        for i in range(20_000):
            blob = "x" * 100_000 + str(i)  # distinct, so nothing is shared
            event = {"message": {"formatted": f"e{i}"}, "extra": {"blob": blob}}
            started = time.perf_counter()
            t.capture_event(event)
            worst = max(worst, time.perf_counter() - started)
            del event
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        stats = t.stats()
        print(json.dumps({"grown_mib": grown, "worst_ms": worst * 1000,
                          "lost": stats["lost"], "accepted": stats["accepted"]}))
        t.close(0)
        """,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["accepted"] == 20_000
    assert result["lost"]["queue_overflow"]["error"] > 19_000
    # 16 MiB of queue, at most 64 unmeasured envelopes (6.4 MB) and the interpreter's slack
    assert result["grown_mib"] < 64, result
    # no capture encoded the backlog or waited on the workers (that cost 1.4 s once)
    assert result["worst_ms"] < 500, result


# -- made before monkey-patching ----------------------------------------------------------------


def test_threaded_made_before_gevent_patching_works_after(sink: Sink) -> None:
    pytest.importorskip("gevent")
    done = run_script(
        f"""
        from sentry_transport import make_transport
        t = make_transport("{sink.dsn}")  # a preloading server makes it before patching
        from gevent import monkey
        monkey.patch_all()
        for i in range(20):
            t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})
        print(t.flush(5), t.stats()["events"]["delivered"])
        t.close(2)
        """,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "20"]
    assert len(sink.envelopes) == 20


# -- concurrency: the ledger is the engine's, under the pump's lock -----------------------------


@pytest.mark.parametrize("backend", ["sync", "threaded"])
def test_losses_recorded_from_many_threads_are_reported_exactly(sink: Sink, backend: str) -> None:
    import threading

    transport = make_transport(f"{backend}+{sink.dsn}", **FAST)
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        for i in range(300):
            transport.record_lost_event("sample_rate", "transaction" if n % 2 else "span", 1)
            if i % 50 == 0:
                transport.capture_envelope(event(f"t{n}-{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert transport.flush(5)
    totals: dict[tuple[str, str], int] = {}
    for envelope in sink.envelopes:
        for item in envelope.items:
            if item.type == "client_report":
                for entry in item.json["discarded_events"]:
                    key = (entry["reason"], entry["category"])
                    totals[key] = totals.get(key, 0) + entry["quantity"]
    assert totals == {("sample_rate", "transaction"): 1200, ("sample_rate", "span"): 1200}
    assert transport.stats()["events"] == {"accepted": 48, "delivered": 48, "lost": 0}
    transport.close(1)


@pytest.mark.parametrize("backend", ["threaded", "asyncio"])
def test_no_capture_waits_for_a_flush_to_be_sent(sink: Sink, backend: str) -> None:
    """Every capture is sent without a flush (which would wake the workers itself): one at a
    time with pauses, so that workers go idle between them and each capture must wake one,
    then bursts from 8 threads at once. Delivery is polled, never flushed."""
    import asyncio
    import threading
    import time

    from sentry_transport import AsyncioTransport

    def delivered(transport: object) -> int:
        return int(transport.stats()["events"]["delivered"])  # type: ignore[attr-defined]

    def until(transport: object, count: int) -> bool:
        deadline = time.monotonic() + 10
        while delivered(transport) < count and time.monotonic() < deadline:
            time.sleep(0.002)
        return delivered(transport) == count

    def scenario(transport: object, capture: object) -> None:
        for i in range(40):  # alone: the workers are idle each time
            capture(event(f"alone-{i}"))  # type: ignore[operator]
            assert until(transport, i + 1), f"capture {i} was not sent without a flush"

        def burst(k: int) -> None:
            for i in range(150):
                capture(event(f"t{k}-{i}"))  # type: ignore[operator]
                if i % 10 == 0:
                    time.sleep(0.002)  # a pause: the inbox runs dry now and then

        threads = [threading.Thread(target=burst, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert until(transport, 40 + 8 * 150)

    if backend == "threaded":
        transport = make_transport(sink.dsn)
        try:
            scenario(transport, transport.capture_envelope)
        finally:
            transport.close(5)
        return

    async def main() -> None:  # the loop runs in this thread; the scenario in another
        transport = AsyncioTransport(sink.dsn)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                scenario(transport, transport.capture_envelope)
            except BaseException as exc:  # reported below, on the loop's thread
                failure.append(exc)

        await asyncio.get_running_loop().run_in_executor(None, run)
        await transport.aclose(5)
        if failure:
            raise failure[0]

    asyncio.run(main())
