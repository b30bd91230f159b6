"""The base of the sink and the proxy: an asyncio server running in a daemon thread.

How it works: ``start()`` starts a thread that makes its own event loop, binds the listening
socket (``asyncio.start_server``) and reports the port, or the error, back before
``start()`` returns. Each accepted connection runs ``_serve`` (the subclass's part) as a
task. ``stop()`` sets an event on the loop; the loop then closes the server, aborts every
open connection, cancels their tasks and ends, and the thread is joined. State shared with
other threads (counts, errors, what subclasses record) is guarded by ``self._cond``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import threading
from types import TracebackType
from typing import Any, TypeVar

from ._http import MAX_HEAD, _format_host

_START_TIMEOUT = 10.0
_JOIN_TIMEOUT = 5.0

_S = TypeVar("_S", bound="_ServerThread")


class _ServerThread:
    """An asyncio server in a daemon thread: start(), stop(), context manager, port."""

    _thread_name = "sentry-transport-server"

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"host must be an IP address such as 127.0.0.1, not {host!r}"
            ) from None
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, not {port}")
        self._host = host
        self._requested_port = port
        self._ssl_context = ssl_context
        self._cond = threading.Condition()
        self._life = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._port: int | None = None
        self._connections = 0
        self._errors: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self: _S) -> _S:
        """Start serving (idempotent); the port is bound when this returns.

        After stop(), start() binds the same port again, so a DSN stays valid.
        """
        with self._life:
            if self._thread is not None:
                return self
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._run, args=(ready, failure), name=self._thread_name, daemon=True
            )
            thread.start()
            if not ready.wait(_START_TIMEOUT):
                self._request_stop()
                thread.join(_JOIN_TIMEOUT)
                raise RuntimeError(f"{type(self).__name__} did not start in {_START_TIMEOUT} s")
            if failure:
                thread.join(_JOIN_TIMEOUT)
                raise failure[0]
            self._thread = thread
        return self

    def stop(self) -> None:
        """Close the server and every connection and join the thread (idempotent)."""
        with self._life:
            thread = self._thread
            if thread is None:
                return
            self._request_stop()
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT)
            self._thread = None

    def _request_stop(self) -> None:
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(event.set)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"the {type(self).__name__} has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:PORT``."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{_format_host(self._host)}:{self.port}"

    @property
    def connections(self) -> int:
        """How many TCP connections have been accepted so far."""
        with self._cond:
            return self._connections

    @property
    def errors(self) -> list[str]:
        """Problems with connections or requests that could not be recorded as a request."""
        with self._cond:
            return list(self._errors)

    # -- the loop thread ---------------------------------------------------------------------

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(ready, failure))
        except BaseException as exc:  # pragma: no cover - _main catches what it expects
            if not ready.is_set():
                failure.append(exc)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None
            ready.set()

    async def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        self._stop_event = asyncio.Event()
        port = self._requested_port or self._port or 0
        try:
            server = await self._listen(port)
        except Exception as exc:
            failure.append(exc)
            ready.set()
            return
        self._port = int(server.sockets[0].getsockname()[1])
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            self._abort_connections()
            tasks = [task for task in self._tasks if not task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _listen(self, port: int) -> asyncio.Server:
        """Bind and listen; each connection runs ``_accept`` (a subclass may serve otherwise)."""
        return await asyncio.start_server(
            self._accept, self._host, port, ssl=self._ssl_context, limit=MAX_HEAD, backlog=1024
        )

    def _abort_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", "event loop error"))
        self._record_error(f"{message}: {exc!r}" if exc is not None else message)

    def _record_error(self, message: str) -> None:
        with self._cond:
            self._errors.append(message)
            self._cond.notify_all()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        with self._cond:
            self._connections += 1
            number = self._connections
        try:
            await self._serve(reader, writer, number)
        except asyncio.CancelledError:
            pass  # stop()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass  # the client went away
        except Exception as exc:
            self._record_error(f"connection {number}: {type(exc).__name__}: {exc}")
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        raise NotImplementedError
