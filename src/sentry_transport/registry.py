"""The one table of transports: DSN prefix -> where its class lives, and what it needs.

The factory (``make_transport``), the package's lazy attributes (``sentry_transport.X``)
and the test suite all read it, so a new runtime is one row here plus its small files.
Nothing is imported until a transport is asked for; a missing optional library raises a
``MissingDependencyError`` that names the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from .core.errors import DsnError, MissingDependencyError


@dataclass(frozen=True)
class Backend:
    prefix: str  # the DSN prefix: "sync" in "sync+https://..."
    module: str
    cls: str
    library: str | None = None  # the third-party library it needs, if any
    extra: str | None = None  # the pip extra that installs it
    group: str = "main"  # the test group (a pytest process) its suite runs in


BACKENDS: dict[str, Backend] = {
    b.prefix: b
    for b in (
        Backend("sync", "sentry_transport.transports.sync", "SyncTransport"),
        Backend("threaded", "sentry_transport.transports.threaded", "ThreadedTransport"),
        Backend("asyncio", "sentry_transport.transports.aio", "AsyncioTransport"),
        Backend(
            "requests",
            "sentry_transport.transports.with_requests",
            "RequestsTransport",
            library="requests",
            extra="requests",
            group="http_clients",
        ),
        Backend(
            "threaded+requests",
            "sentry_transport.transports.with_requests",
            "ThreadedRequestsTransport",
            library="requests",
            extra="requests",
            group="http_clients",
        ),
        Backend(
            "urllib3",
            "sentry_transport.transports.with_urllib3",
            "Urllib3Transport",
            library="urllib3",
            extra="urllib3",
            group="http_clients",
        ),
        Backend(
            "gevent",
            "sentry_transport.transports.with_gevent",
            "GeventTransport",
            library="gevent",
            extra="gevent",
            group="gevent",
        ),
        Backend(
            "eventlet",
            "sentry_transport.transports.with_eventlet",
            "EventletTransport",
            library="eventlet",
            extra="eventlet",
            group="eventlet",
        ),
        Backend(
            "twisted",
            "sentry_transport.transports.with_twisted",
            "TwistedTransport",
            library="twisted",
            extra="twisted",
            group="twisted",
        ),
        Backend(
            "tornado",
            "sentry_transport.transports.with_tornado",
            "TornadoTransport",
            library="tornado",
            extra="tornado",
            group="tornado",
        ),
    )
}
DEFAULT = "threaded"

# Prefixes raven knew that this version does not implement yet: a clear error, not a guess.
PLANNED = ("http2",)

CLASSES = {b.cls: b for b in BACKENDS.values()}  # class name -> backend (lazy attributes)


def load(backend: Backend) -> type:
    """The backend's class, importing its module (and its library) now."""
    if backend.library is not None:
        # Looked for, not imported: the transport's module imports it its own way (eventlet,
        # for one, warns at import unless told not to).
        try:
            found = importlib.util.find_spec(backend.library) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            assert backend.extra is not None
            raise MissingDependencyError(
                backend.library, backend.extra, f"the '{backend.prefix}+' transport"
            ) from None
    cls: type = getattr(importlib.import_module(backend.module), backend.cls)
    return cls


def find(prefix: str) -> Backend:
    """The backend for a DSN prefix; a DsnError that lists the known ones otherwise."""
    backend = BACKENDS.get(prefix)
    if backend is not None:
        return backend
    known = ", ".join(f"{name}+" for name in BACKENDS)
    if prefix in PLANNED:
        raise DsnError(
            f"transport prefix '{prefix}+' is not available in this version; "
            f"available prefixes: {known}"
        )
    raise DsnError(f"unknown transport prefix '{prefix}+'; known prefixes: {known}")
