"""twisted+: the conformance suite against TwistedTransport, its reactor running in a helper
thread; the scenarios drive it through its thread-safe API (captures from another thread,
``flush``/``close`` waiting for the reactor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sentry_transport import Transport
from sentry_transport.testing.conformance import *  # noqa: F403 -- the scenarios and fixtures
from sentry_transport.transports.with_twisted import TwistedTransport

pytestmark = pytest.mark.network


@pytest.fixture
def transport_factory(reactor: Any) -> Callable[..., Transport]:
    return lambda dsn, **options: TwistedTransport(dsn, **options)
