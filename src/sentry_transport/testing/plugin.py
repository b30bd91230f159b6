"""The ``sentry_sink`` pytest fixture: a started ``Sink`` for one test.

How it works: pytest finds this fixture through the ``pytest11`` entry point, which names
``sentry_transport.testing``; that package re-exports ``sentry_sink`` from here. pytest is
imported only if it is installed, and the fixture exists only then, so importing
``sentry_transport.testing`` never needs pytest.
"""

from __future__ import annotations

from collections.abc import Iterator

from .sink import Sink

try:
    import pytest
except ImportError:  # pragma: no cover - the fixture is only defined with pytest installed
    HAVE_PYTEST = False
else:
    HAVE_PYTEST = True

if HAVE_PYTEST:

    def pytest_configure(config: pytest.Config) -> None:
        """The marker the conformance suite's scenarios carry."""
        config.addinivalue_line("markers", "network: opens sockets on 127.0.0.1 only")

    @pytest.fixture
    def sentry_sink() -> Iterator[Sink]:
        """A started ``Sink`` on 127.0.0.1, stopped after the test."""
        sink = Sink().start()
        try:
            yield sink
        finally:
            sink.stop()
