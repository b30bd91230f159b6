"""sentry-transport: deliver Sentry envelopes from any Python program.

The core (codec, DSN and options, categories, rate limits, client reports, policies, the
delivery engine) does no I/O and reads no clock; transports are thin drivers over it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _ids  # noqa: F401 -- gives the core its event id source
from . import registry as _registry
from ._factory import make_transport
from ._transport import EngineTransport, FunctionTransport, Transport
from .core.client_reports import REASONS, ClientReportLedger
from .core.dsn import Dsn
from .core.envelope import Envelope, Item
from .core.errors import (
    ConfigurationError,
    DsnError,
    EnvelopeError,
    HttpProtocolError,
    MissingDependencyError,
    ProtocolError,
    SentryTransportError,
)
from .core.options import TransportOptions
from .core.ratelimit import RateLimits
from .core.retry import RetryPolicy
from .core.version import VERSION

if TYPE_CHECKING:
    from .transports.aio import AsyncioTransport
    from .transports.sync import SyncTransport
    from .transports.threaded import ThreadedTransport


# Drivers load on first use (registry.py names them), so importing the package stays cheap.
def __getattr__(name: str) -> Any:
    backend = _registry.CLASSES.get(name)
    if backend is not None:
        return _registry.load(backend)
    raise AttributeError(f"module 'sentry_transport' has no attribute {name!r}")


__version__ = VERSION

__all__ = [
    "REASONS",
    "AsyncioTransport",
    "ClientReportLedger",
    "ConfigurationError",
    "Dsn",
    "DsnError",
    "EngineTransport",
    "Envelope",
    "EnvelopeError",
    "FunctionTransport",
    "HttpProtocolError",
    "Item",
    "MissingDependencyError",
    "ProtocolError",
    "RateLimits",
    "RetryPolicy",
    "SentryTransportError",
    "SyncTransport",
    "ThreadedTransport",
    "Transport",
    "TransportOptions",
    "__version__",
    "make_transport",
]
