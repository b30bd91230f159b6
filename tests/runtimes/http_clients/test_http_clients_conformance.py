"""The conformance suite against the requests+ (blocking), threaded+requests+ and urllib3+
transports, each built directly from its class (the registry's rows may not exist yet)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sentry_transport import Transport
from sentry_transport.testing.conformance import *  # noqa: F403 -- the scenarios and fixtures
from sentry_transport.testing.conformance import Traits
from sentry_transport.transports.with_requests import (
    RequestsTransport,
    ThreadedRequestsTransport,
)
from sentry_transport.transports.with_urllib3 import Urllib3Transport

pytestmark = pytest.mark.network

CLASSES: dict[str, type[Transport]] = {
    "requests": RequestsTransport,
    "threaded+requests": ThreadedRequestsTransport,
    "urllib3": Urllib3Transport,
}


@pytest.fixture(params=list(CLASSES))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def traits(backend: str) -> Traits:
    return Traits(blocking=backend == "requests", pipelines=False)  # their client's connections


@pytest.fixture
def transport_factory(backend: str) -> Callable[..., Transport]:
    cls = CLASSES[backend]

    def factory(dsn: str, **options: Any) -> Transport:
        return cls(f"{backend}+{dsn}", **options)  # type: ignore[call-arg]

    return factory
