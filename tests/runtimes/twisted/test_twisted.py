"""twisted+: the runner, the stream's contract, the transport on and off the reactor's thread,
the reactor kept free, TLS in TLS through an https:// proxy, and the end of a program (a
process each) that never closed: reactor stopped, reactor thread left running, no reactor."""

from __future__ import annotations

import ast
import contextlib
import gc
import inspect
import itertools
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import LoopingCall, deferLater

from sentry_transport import ConfigurationError, Envelope
from sentry_transport.io.aio import arun
from sentry_transport.io.sockets import run
from sentry_transport.io.twisted_io import TwistedStream, drive
from sentry_transport.runtime.twisted_runtime import in_reactor_thread
from sentry_transport.testing import Proxy, Respond, Sink
from sentry_transport.transports.with_twisted import TwistedTransport

pytestmark = pytest.mark.network
SRC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "src")
BIG = {"message": {"formatted": "big"}, "extra": {"blob": ["x" * 100] * 1000}}  # ~100 KB


def event(tag: str) -> Envelope:
    return Envelope.for_event({"message": {"formatted": tag}})


# -- the runner ---------------------------------------------------------------------------------


class _Plain(ast.NodeTransformer):
    """``yield x`` and ``await x`` as plain ``x``."""

    def visit_Yield(self, node: ast.Yield) -> Any:
        return self.visit(node.value) if node.value is not None else node

    def visit_Await(self, node: ast.Await) -> Any:
        return self.visit(node.value)


def body(function: Any) -> str:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    node = tree.body[0]
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    statements = node.body[1:] if ast.get_docstring(node) else node.body
    return "\n".join(ast.unparse(_Plain().visit(statement)) for statement in statements)


def test_drive_is_the_blocking_runner_with_yield() -> None:
    assert body(drive) == body(run) == body(arun)


def test_drive_sends_results_and_throws_failures_in() -> None:
    later: Deferred[int] = Deferred()
    log: list[object] = []

    def steps() -> Generator[tuple[Any, ...], Any, str]:
        log.append((yield (lambda: 1,)))  # a plain value
        log.append((yield (succeed, 2)))  # a Deferred that has fired
        log.append((yield (lambda: later,)))  # one that fires later
        try:
            yield (fail, ZeroDivisionError())
        except ZeroDivisionError:
            log.append("failed Deferred")
        try:
            yield (lambda: 1 / 0,)
        except ZeroDivisionError:
            log.append("raised")
        return "done"

    done = drive(steps())
    assert not done.called and log == [1, 2]
    later.callback(3)
    results: list[object] = []
    done.addCallback(results.append)
    assert results == ["done"]
    assert log == [1, 2, 3, "failed Deferred", "raised"]


def test_drive_does_not_recurse_on_deferreds_that_have_fired() -> None:
    def steps() -> Generator[tuple[Any, ...], Any, int]:
        total = 0
        for i in range(20_000):
            total += yield (succeed, i)
        return total

    results: list[object] = []
    drive(steps()).addBoth(results.append)
    assert results == [sum(range(20_000))]


def test_an_error_the_generator_does_not_handle_fails_the_deferred() -> None:
    def steps() -> Generator[tuple[Any, ...], Any, None]:
        yield (lambda: 1 / 0,)

    failures: list[Any] = []
    drive(steps()).addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(ZeroDivisionError)


# -- the stream ---------------------------------------------------------------------------------


@contextlib.contextmanager
def server(behave: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection TCP server on 127.0.0.1 doing ``behave(connection)``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(10)
                behave(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(10)


def exchange(on_reactor: Callable[..., Any], port: int, *calls: tuple[Any, ...]) -> Any:
    """Connect a stream to ``port``, make ``calls`` (name, args...) with a 2 s deadline, and
    return the last one's result (or raise its error)."""
    stream = new_stream()

    def steps() -> Generator[tuple[Any, ...], Any, Any]:
        deadline = time.monotonic() + 2.0
        yield (stream.connect, "127.0.0.1", port, None, "127.0.0.1", deadline)
        result = None
        try:
            for name, *args in calls:
                result = yield (getattr(stream, name), *args, deadline)
        finally:
            yield (stream.close,)
        return result

    return on_reactor(lambda: drive(steps()))


def new_stream() -> TwistedStream:
    from twisted.internet import reactor

    return TwistedStream(reactor, in_reactor_thread)


def test_a_clean_close_before_any_data_reads_as_the_end(on_reactor: Callable[..., Any]) -> None:
    with server(lambda connection: None) as port:
        assert exchange(on_reactor, port, ("recv",)) == b""


def test_what_came_before_a_close_is_read_first(on_reactor: Callable[..., Any]) -> None:
    def answer(connection: socket.socket) -> None:
        connection.recv(100)
        connection.sendall(b"hello")

    with server(answer) as port:
        assert exchange(on_reactor, port, ("send", b"hi"), ("recv",)) == b"hello"


def test_a_reset_is_connection_reset_error(on_reactor: Callable[..., Any]) -> None:
    def reset(connection: socket.socket) -> None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with server(reset) as port, pytest.raises(ConnectionResetError):
        exchange(on_reactor, port, ("recv",))


def test_sending_after_the_server_closed_is_broken_pipe(on_reactor: Callable[..., Any]) -> None:
    def close(connection: socket.socket) -> None:
        connection.shutdown(socket.SHUT_RDWR)

    with server(close) as port, pytest.raises((BrokenPipeError, ConnectionResetError)):
        exchange(on_reactor, port, ("recv",), ("send", b"too late"))


def test_a_silent_server_times_out_at_the_deadline(on_reactor: Callable[..., Any]) -> None:
    stream = new_stream()
    release = threading.Event()

    def steps() -> Generator[tuple[Any, ...], Any, Any]:
        deadline = time.monotonic() + 2.0
        yield (stream.connect, "127.0.0.1", port, None, "127.0.0.1", deadline)
        try:
            yield (stream.recv, time.monotonic() + 0.2)
        finally:
            stream.close_now()

    with server(lambda connection: release.wait(5)) as port:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            on_reactor(lambda: drive(steps()))
        elapsed = time.monotonic() - started
        release.set()
    assert 0.15 < elapsed < 1.0, elapsed


def test_a_refused_connection_is_connection_refused_error(
    on_reactor: Callable[..., Any],
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        exchange(on_reactor, port, ("recv",))


def test_abort_from_another_thread_fails_a_read_at_once(on_reactor: Callable[..., Any]) -> None:
    stream = new_stream()
    release = threading.Event()
    reading = threading.Event()

    def steps() -> Generator[tuple[Any, ...], Any, Any]:
        deadline = time.monotonic() + 5.0
        yield (stream.connect, "127.0.0.1", port, None, "127.0.0.1", deadline)
        reading.set()
        yield (stream.recv, deadline)

    with server(lambda connection: release.wait(5)) as port:
        outcome: list[BaseException] = []

        def read() -> None:
            try:
                on_reactor(lambda: drive(steps()))
            except BaseException as exc:
                outcome.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert reading.wait(5)
        started = time.monotonic()
        stream.abort()  # from this thread, not the reactor's
        reader.join(5)
        release.set()
    assert time.monotonic() - started < 0.5
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionAbortedError)


def test_send_waits_while_the_transport_pushes_back(on_reactor: Callable[..., Any]) -> None:
    release = threading.Event()
    with server(lambda connection: release.wait(5)) as port:  # accepts, never reads
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            exchange(on_reactor, port, ("send", b"x" * (48 * 1024 * 1024)))
        release.set()
    assert time.monotonic() - started < 3.0


# -- the transport on and off the reactor's thread ----------------------------------------------


def test_aflush_and_aclose_are_deferreds_on_the_reactor(
    sentry_sink: Sink, on_reactor: Callable[..., Any]
) -> None:
    @inlineCallbacks
    def main() -> Generator[Any, Any, Any]:
        transport = TwistedTransport(sentry_sink.dsn)
        for i in range(50):
            transport.capture_event({"message": {"formatted": f"reactor{i}"}})
        flushing = transport.aflush(5)
        assert isinstance(flushing, Deferred)
        flushed = yield flushing
        closing = transport.aclose(2)
        assert isinstance(closing, Deferred)
        yield closing
        transport.capture_event({"message": {"formatted": "after close"}})
        return flushed, transport.stats()

    flushed, stats = on_reactor(main)
    assert flushed is True
    assert stats["events"] == {"accepted": 51, "delivered": 50, "lost": 1}
    assert len(sentry_sink.envelopes) == 50


def test_sync_flush_on_the_reactor_thread_does_not_block(
    sentry_sink: Sink, on_reactor: Callable[..., Any]
) -> None:
    sentry_sink.default = Respond(200, delay=0.5)

    @inlineCallbacks
    def main() -> Generator[Any, Any, Any]:
        transport = TwistedTransport(sentry_sink.dsn)
        transport.capture_event({"message": {"formatted": "slow"}})
        started = time.monotonic()
        answer = transport.flush(5)  # cannot wait on its own reactor: answers at once
        elapsed = time.monotonic() - started
        done = yield transport.aflush(5)
        yield transport.aclose(1)
        return answer, elapsed, done

    answer, elapsed, done = on_reactor(main)
    assert answer is False and elapsed < 0.1 and done is True


def test_close_on_the_reactor_thread_drains_in_the_background(
    sentry_sink: Sink, on_reactor: Callable[..., Any], reactor: Any
) -> None:
    @inlineCallbacks
    def main() -> Generator[Any, Any, Any]:
        transport = TwistedTransport(sentry_sink.dsn)
        transport.capture_event({"message": {"formatted": "closing"}})
        started = time.monotonic()
        transport.close(5)  # on its own reactor: cannot wait, so it drains in the background
        returned = time.monotonic() - started
        while not transport.engine.stopped and time.monotonic() - started < 6:
            yield deferLater(reactor, 0.01, lambda: None)
        return returned, time.monotonic() - started, transport.stats()

    returned, took, stats = on_reactor(main)
    assert returned < 0.1
    assert took < 1  # the drain ended when the work did, not at the 5 s deadline
    assert stats["events"] == {"accepted": 1, "delivered": 1, "lost": 0}


def test_flush_and_close_from_another_thread_wait_until_done(
    sentry_sink: Sink, reactor: Any
) -> None:
    sentry_sink.default = Respond(200, delay=0.3)
    transport = TwistedTransport(sentry_sink.dsn)
    transport.capture_envelope(event("first"))
    started = time.monotonic()
    assert transport.flush(5) is True
    assert time.monotonic() - started >= 0.25  # it waited for the slow answer
    assert transport.stats()["events"]["delivered"] == 1
    transport.capture_envelope(event("second"))
    started = time.monotonic()
    transport.close(5)
    assert time.monotonic() - started >= 0.25
    assert transport.stats()["events"] == {"accepted": 2, "delivered": 2, "lost": 0}  # final


def test_flush_from_another_thread_keeps_its_deadline(sentry_sink: Sink, reactor: Any) -> None:
    sentry_sink.default = Respond(200, delay=2.0)
    transport = TwistedTransport(sentry_sink.dsn)
    transport.capture_envelope(event("slow"))
    started = time.monotonic()
    assert transport.flush(0.3) is False
    assert time.monotonic() - started < 0.6
    transport.close(0.2)


def test_captures_from_many_threads_are_delivered(sentry_sink: Sink, reactor: Any) -> None:
    transport = TwistedTransport(sentry_sink.dsn)

    def capture(thread: int) -> None:
        for i in range(50):
            transport.capture_event({"message": {"formatted": f"t{thread}-{i}"}})

    threads = [threading.Thread(target=capture, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert transport.flush(10)
    transport.close(2)
    assert transport.stats()["events"] == {"accepted": 200, "delivered": 200, "lost": 0}
    assert len(sentry_sink.envelopes) == 200


def test_aflush_off_the_reactor_thread_is_a_clear_error(sentry_sink: Sink, reactor: Any) -> None:
    transport = TwistedTransport(sentry_sink.dsn)
    with pytest.raises(ConfigurationError, match="reactor"):
        transport.aflush(1)
    with pytest.raises(ConfigurationError, match="reactor"):
        transport.aclose(1)
    transport.close(1)


def test_large_jobs_are_encoded_off_the_reactor(
    sentry_sink: Sink, on_reactor: Callable[..., Any]
) -> None:
    where: dict[str, bool] = {}

    @inlineCallbacks
    def main() -> Generator[Any, Any, Any]:
        transport = TwistedTransport(sentry_sink.dsn, max_connections=1)
        encode = transport.engine.encode

        def watched(attempt: Any, now: float) -> None:
            tag = "big" if attempt.job.size > 16 * 1024 else "small"
            where[tag] = in_reactor_thread()
            encode(attempt, now)

        transport.engine.encode = watched  # type: ignore[method-assign]
        transport.capture_event({"message": {"formatted": "small"}})
        yield transport.aflush(5)
        transport.capture_event(BIG)
        yield transport.aflush(5)
        yield transport.aclose(1)

    on_reactor(main)
    assert where == {"small": True, "big": False}
    assert len(sentry_sink.envelopes) == 2


@pytest.mark.parametrize("capturing", ["on the reactor", "from a thread"])
def test_the_reactor_stays_free(
    sentry_sink: Sink, on_reactor: Callable[..., Any], reactor: Any, capturing: str
) -> None:
    sentry_sink.default = Respond(200, delay=0.02)
    ticks: list[float] = []
    captures: list[float] = []
    holder: list[TwistedTransport] = []
    ticker = LoopingCall(lambda: ticks.append(time.monotonic()))

    def capture_batch() -> None:
        for _ in range(10):
            started = time.monotonic()
            holder[0].capture_event(BIG)
            captures.append(time.monotonic() - started)

    @inlineCallbacks
    def on_the_reactor() -> Generator[Any, Any, Any]:
        for _ in range(30):
            capture_batch()
            yield deferLater(reactor, 0.002, lambda: None)
        flushed = yield holder[0].aflush(30)
        return flushed

    def start() -> None:
        holder.append(TwistedTransport(sentry_sink.dsn))
        ticker.start(0.005)

    # The test process's own heap (pytest, earlier tests, the sink's records) makes a full
    # collection take tens of ms on a busy machine; frozen, what is measured is the transport.
    gc.collect()
    gc.freeze()
    on_reactor(start)
    try:
        if capturing == "on the reactor":
            flushed = on_reactor(on_the_reactor, 45)
        else:
            for _ in range(30):
                capture_batch()
                time.sleep(0.002)
            flushed = holder[0].flush(30)
    finally:
        on_reactor(ticker.stop)
        gc.unfreeze()
    holder[0].close(5)
    assert flushed is True
    assert holder[0].stats()["events"] == {"accepted": 300, "delivered": 300, "lost": 0}
    assert len(sentry_sink.envelopes) == 300
    assert len(ticks) > 20  # the ticker ran all along
    worst_gap = max(b - a for a, b in itertools.pairwise(ticks))
    assert worst_gap < 0.05, worst_gap
    assert max(captures) < 0.02, max(captures)


# -- TLS in TLS ---------------------------------------------------------------------------------


class TlsProxy(Proxy):
    """The testing proxy, spoken to over TLS (an https:// proxy)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self._ssl_context = context


def test_https_through_an_https_proxy(
    reactor: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    bundle = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(bundle)
    monkeypatch.setenv("SSL_CERT_FILE", bundle)  # an https proxy is checked against these
    contexts = []
    for _ in range(2):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        contexts.append(context)
    with Sink(ssl_context=contexts[0]) as sink, TlsProxy(contexts[1]) as proxy:
        assert proxy.url.startswith("https://")
        transport = TwistedTransport(sink.dsn, https_proxy=proxy.url, ca_certs=bundle)
        transport.capture_envelope(event("tls-in-tls"))
        assert transport.flush(5)
        transport.close(1)
        assert [e.items[0].json["message"]["formatted"] for e in sink.envelopes] == ["tls-in-tls"]
        assert proxy.seen == [f"CONNECT 127.0.0.1:{sink.port}"]


# -- the end of a program, and no twisted -------------------------------------------------------


def run_script(code: str, timeout: float = 50) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONPATH": SRC},
    )


def test_stopping_the_reactor_without_close_delivers(sentry_sink: Sink) -> None:
    sentry_sink.default = Respond(200, delay=0.01)
    done = run_script(
        f"""
        import json
        from twisted.internet import reactor
        from sentry_transport.transports.with_twisted import TwistedTransport

        t = TwistedTransport("{sentry_sink.dsn}", shutdown_timeout=10)

        def main():
            for i in range(100):
                t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})
            reactor.stop()  # at once: nothing has been sent yet

        reactor.callWhenRunning(main)
        reactor.run()
        print(json.dumps(t.stats()["events"]))  # final when reactor.run returned
        """
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"accepted": 100, "delivered": 100, "lost": 0}
    assert len(sentry_sink.envelopes) == 100


def test_program_end_with_the_reactor_thread_running_delivers(sentry_sink: Sink) -> None:
    sentry_sink.default = Respond(200, delay=0.01)
    done = run_script(
        f"""
        import threading
        from twisted.internet import reactor
        from sentry_transport.transports.with_twisted import TwistedTransport

        threading.Thread(
            target=reactor.run, kwargs={{"installSignalHandlers": False}}, daemon=True
        ).start()
        t = TwistedTransport("{sentry_sink.dsn}", shutdown_timeout=10)
        for i in range(100):
            t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})
        """  # the main thread ends here; the reactor's thread still runs
    )
    assert done.returncode == 0, done.stderr
    assert sentry_sink.wait_for(100, timeout=10)
    assert len(sentry_sink.envelopes) == 100


def test_with_no_reactor_flush_sends_on_the_calling_thread(sentry_sink: Sink) -> None:
    done = run_script(
        f"""
        from sentry_transport.transports.with_twisted import TwistedTransport

        t = TwistedTransport("{sentry_sink.dsn}")  # the reactor is never started
        for i in range(10):
            t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})
        print(t.flush(5), t.stats()["events"]["delivered"])
        t.capture_event({{"message": {{"formatted": "at exit"}}}})
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "10"]
    assert sentry_sink.wait_for(11, timeout=5)  # the last one went at interpreter exit
    assert len(sentry_sink.envelopes) == 11


def test_the_registry_row_loads_this_transport() -> None:
    from sentry_transport import registry

    row = registry.Backend(
        "twisted",
        "sentry_transport.transports.with_twisted",
        "TwistedTransport",
        library="twisted",
        extra="twisted",
        group="twisted",
    )
    assert registry.load(row) is TwistedTransport


def test_the_reactor_is_looked_up_at_first_capture(sentry_sink: Sink) -> None:
    done = run_script(
        f"""
        import asyncio, json
        from sentry_transport.transports.with_twisted import TwistedTransport

        t = TwistedTransport("{sentry_sink.dsn}")  # made before the application's reactor
        from twisted.internet import asyncioreactor

        asyncioreactor.install(asyncio.new_event_loop())
        from twisted.internet import reactor

        def main():
            for i in range(10):
                t.capture_event({{"message": {{"formatted": f"e{{i}}"}}}})
            t.aflush(5).addCallback(lambda ok: print(ok)).addBoth(lambda _: reactor.stop())

        reactor.callWhenRunning(main)
        reactor.run()
        print(type(reactor).__name__, json.dumps(t.stats()["events"]))
        """
    )
    assert done.returncode == 0, done.stderr
    flushed, kind, events = done.stdout.split(maxsplit=2)
    assert flushed == "True" and kind == "AsyncioSelectorReactor"
    assert json.loads(events) == {"accepted": 10, "delivered": 10, "lost": 0}


def test_without_twisted_the_import_names_the_extra() -> None:
    done = run_script(
        """
        import sys

        class NoTwisted:
            def find_spec(self, name, path=None, target=None):
                if name == "twisted" or name.startswith("twisted."):
                    raise ImportError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoTwisted())
        from sentry_transport import MissingDependencyError
        for module in (
            "sentry_transport.transports.with_twisted",
            "sentry_transport.runtime.twisted_runtime",
            "sentry_transport.io.twisted_io",
        ):
            try:
                __import__(module)
            except MissingDependencyError as exc:
                assert exc.extra == "twisted" and exc.library == "twisted", exc
                assert "sentry-transport[twisted]" in str(exc), exc
            else:
                raise SystemExit(f"{module} imported without twisted")
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
