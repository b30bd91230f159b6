"""What urllib3 or requests raised, as the errors the engine knows.

``network_error(exc)`` finds the exception that happened under the library's wrappers (a
refused connect, a reset, a certificate that failed to verify, a timeout) and returns a copy
of it, an ``OSError`` the engine retries as a network error, or ``HttpProtocolError`` for an
answer that is not HTTP: never a library's own class.
"""

from __future__ import annotations

import http.client

from ..core.errors import HttpProtocolError, MissingDependencyError
from ..core.proxy import ProxyError

try:
    from urllib3 import exceptions as _errors
except ImportError:  # pragma: no cover - exercised in a subprocess without the library
    raise MissingDependencyError("urllib3", "urllib3", "the 'urllib3+' transport") from None

LIBRARY_ERRORS = (OSError, http.client.HTTPException, _errors.HTTPError)  # requests': OSError
_LIBRARIES = ("urllib3", "requests")


def network_error(exc: BaseException) -> Exception:
    """The error to hand the engine for what urllib3 or requests raised: an ``OSError``
    (retried as a network error) or ``HttpProtocolError``, never a library's own class.

    The library's exceptions wrap the one that happened (a refused connect, a reset, a
    certificate that failed to verify, a timeout): that one is copied, so the message is
    the original's; the library's wrapper stays reachable as ``__cause__`` for debugging.
    """
    chain = _chain(exc)
    root = next((e for e in chain if isinstance(e, OSError) and not _from_library(e)), None)
    proxy = next((e for e in chain if isinstance(e, _errors.ProxyError)), None)
    if proxy is not None:
        what = proxy.args[0] if proxy.args and isinstance(proxy.args[0], str) else "proxy"
        return ProxyError(f"{what}: {_text(root)}" if root is not None else _text(proxy))
    if root is not None:
        return _copy(root)
    for e in chain:
        if isinstance(e, http.client.HTTPException):
            return HttpProtocolError(_text(e))
    for e in chain:
        if isinstance(e, _errors.TimeoutError) or type(e).__name__.endswith("Timeout"):
            return TimeoutError(_text(e))
    for e in chain:
        if isinstance(e, (_errors.ProtocolError, _errors.DecodeError, _errors.ResponseError)):
            return HttpProtocolError(_text(e))
    return ConnectionError(_text(exc))


def _from_library(exc: BaseException) -> bool:
    """Whether the exception's class is one of the libraries' (as opposed to the stdlib's)."""
    return type(exc).__module__.split(".")[0] in _LIBRARIES


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps, nearest first: causes, urllib3's ``reason`` and
    ``original_error``, exceptions among the arguments, then the context."""
    found: list[BaseException] = []
    seen: set[int] = set()
    waiting = [exc]
    while waiting and len(found) < 32:
        current = waiting.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        inner = [
            current.__cause__,
            getattr(current, "reason", None),
            getattr(current, "original_error", None),
            *current.args,
            current.__context__,
        ]
        waiting += [e for e in inner if isinstance(e, BaseException)]
    return found


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _copy(exc: OSError) -> OSError:
    """A new exception of the stdlib class and message of ``exc``."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:  # an unusual constructor: the message is what counts
        return ConnectionError(_text(exc))
    return copy if str(copy) == str(exc) else ConnectionError(_text(exc))
