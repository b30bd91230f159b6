"""The exception tree of sentry_transport.

    SentryTransportError            anything this library raises on purpose
    ├── ConfigurationError(ValueError)   you used the API wrong
    │   ├── DsnError                      a DSN or a transport option is invalid
    │   └── MissingDependencyError(ImportError)  an optional library is not installed
    └── ProtocolError(ValueError)        the peer (or the bytes) misbehaved
        ├── EnvelopeError                 bytes that are not a valid envelope (with offset)
        └── HttpProtocolError             a server answer that is not valid HTTP/1.1

Library exceptions (ssl, socket, json, zlib, ...) are translated at the edge of the module
that calls them, so a caller only ever needs to catch these.
"""

from __future__ import annotations


class SentryTransportError(Exception):
    """Base class of every error raised on purpose by sentry_transport."""


class ConfigurationError(SentryTransportError, ValueError):
    """The library was used wrongly: a bad DSN, option or argument."""


class DsnError(ConfigurationError):
    """A DSN or one of its transport options is invalid; the message says what and why."""


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional third-party library is needed; the message names the extra to install."""

    def __init__(self, library: str, extra: str, what: str) -> None:
        self.library = library
        self.extra = extra
        super().__init__(
            f"{what} needs the '{library}' library, which is not installed: "
            f"pip install 'sentry-transport[{extra}]'"
        )


class ProtocolError(SentryTransportError, ValueError):
    """Bytes received from a peer or read from storage do not follow the protocol."""


class EnvelopeError(ProtocolError):
    """The bytes are not a valid envelope. ``offset`` is where the problem was found."""

    def __init__(self, message: str, offset: int) -> None:
        self.offset = offset
        super().__init__(f"{message} (at byte {offset})")


class HttpProtocolError(ProtocolError):
    """A server's answer is not valid HTTP/1.1."""
