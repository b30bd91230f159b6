"""``make_transport(target, **options)``: one entry point for every way to name a transport.

``target`` may be a DSN (its prefix picks the driver; none means ``threaded``), a Transport
subclass (called with the DSN and options), a Transport instance (returned as is) or a plain
callable (wrapped in a FunctionTransport). Drivers are imported by name, only when chosen,
so an optional library is needed only by the transport that uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from . import registry
from ._transport import FunctionTransport, Transport
from .core.dsn import Dsn
from .core.errors import ConfigurationError

DEFAULT_BACKEND = registry.DEFAULT
BACKENDS = registry.BACKENDS


def transport_class(backend: str) -> type[Transport]:
    """The Transport class for a DSN prefix (imported on first use)."""
    cls: type[Transport] = registry.load(registry.find(backend))
    return cls


T = TypeVar("T", bound=Transport)


@overload
def make_transport(target: str | Dsn, dsn: None = None, **options: Any) -> Transport: ...
@overload
def make_transport(target: type[T], dsn: str | Dsn | None = None, **options: Any) -> T: ...
@overload
def make_transport(target: T) -> T: ...
@overload
def make_transport(target: Callable[..., Any]) -> FunctionTransport: ...


def make_transport(
    target: str | Dsn | type[Transport] | Transport | Callable[..., Any],
    dsn: str | Dsn | None = None,
    **options: Any,
) -> Transport:
    """A transport for ``target``: a DSN, a Transport class or instance, or a callable.

    - A DSN string: its prefix picks the transport (``sync+``, ``threaded+`` (the default),
      ``asyncio+``, ``tornado+``, ...), its querystring sets options, and keyword arguments
      override both: ``make_transport("https://key@o1.ingest.sentry.io/42?timeout=3")``.
    - A Transport class, typed as itself: ``make_transport(AsyncioTransport, dsn)``.
    - A Transport instance: returned as is.
    - Any other callable: each envelope is handed to it (``FunctionTransport``).

    A bad DSN or option raises ``DsnError`` naming it; a transport whose library is not
    installed raises ``MissingDependencyError`` naming the pip extra.
    """
    if isinstance(target, (str, Dsn)):
        if dsn is not None:
            raise ConfigurationError("give the DSN once: as target or as dsn=, not both")
        parsed = Dsn.parse(target, **options)
        return transport_class(parsed.backend or DEFAULT_BACKEND)(parsed)  # type: ignore[call-arg]
    if isinstance(target, type) and issubclass(target, Transport):
        if dsn is None:
            return target(**options)
        return target(dsn, **options)  # type: ignore[call-arg]
    if isinstance(target, Transport):
        if dsn is not None or options:
            raise ConfigurationError("a Transport instance is used as is: give no DSN or options")
        return target
    if callable(target):
        if dsn is not None or options:
            raise ConfigurationError("a function transport takes no DSN or options")
        return FunctionTransport(target)
    raise ConfigurationError(
        "make_transport() takes a DSN string, a Transport class or instance, or a callable; "
        f"got {type(target).__name__}"
    )
