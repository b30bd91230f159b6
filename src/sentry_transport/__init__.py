"""sentry-transport: deliver Sentry envelopes from any Python program.

The core (codec, DSN and options, categories, rate limits, client reports, policies, the
delivery engine) does no I/O and reads no clock; transports are thin drivers over it.
"""

from __future__ import annotations

from ._client_reports import REASONS, ClientReportLedger
from ._dsn import Dsn
from ._envelope import Envelope, Item
from ._errors import (
    ConfigurationError,
    DsnError,
    EnvelopeError,
    HttpProtocolError,
    MissingDependencyError,
    ProtocolError,
    SentryTransportError,
)
from ._options import TransportOptions
from ._ratelimit import RateLimits
from ._retry import RetryPolicy
from ._version import VERSION

__version__ = VERSION

__all__ = [
    "REASONS",
    "ClientReportLedger",
    "ConfigurationError",
    "Dsn",
    "DsnError",
    "Envelope",
    "EnvelopeError",
    "HttpProtocolError",
    "Item",
    "MissingDependencyError",
    "ProtocolError",
    "RateLimits",
    "RetryPolicy",
    "SentryTransportError",
    "TransportOptions",
    "__version__",
]
