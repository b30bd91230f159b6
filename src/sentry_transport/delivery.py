"""What a user sees in their logs (``logging.getLogger("sentry_transport")``).

A warning when delivery starts failing, with the reason (refused, timed out, TLS, HTTP 401,
413, 429...), and again only when the reason changes; an info line when it recovers; a debug
line per request; a warning at close when events could not be delivered. Never one line per
event under a sustained failure, and never a key or a proxy credential: the endpoint is
named by its URL, which holds neither.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from .core.engine import REQUEUE, Attempt, Result
from .core.http11 import Response

log = logging.getLogger("sentry_transport")

_HINTS = {
    400: "the server refused the envelope",
    401: "the DSN's key was refused",
    403: "forbidden: check the DSN",
    404: "no such project: check the DSN",
    413: "too large",
    429: "rate limited",
}


def describe(result: Result) -> str | None:
    """What went wrong, in a few words; None when the request was delivered."""
    if isinstance(result, Response):
        if 200 <= result.status < 300:
            return None
        hint = _HINTS.get(result.status) or ("server error" if result.status >= 500 else "")
        return f"HTTP {result.status}" + (f" ({hint})" if hint else "")
    if isinstance(result, ssl.SSLError):
        return f"TLS: {getattr(result, 'reason', None) or result}"
    if isinstance(result, ConnectionRefusedError):
        return "connection refused"
    if isinstance(result, TimeoutError):
        return "timed out"
    if isinstance(result, socket.gaierror):
        return "cannot resolve the host name"
    return f"{type(result).__name__}: {result}"


def log_results(pump: Any, results: Sequence[tuple[Attempt, Result]]) -> str | None:
    """Under the pump's lock, after the engine took the results: log what changed. Returns
    the failure now in force (None: working)."""
    failing: str | None = pump.failing
    if not log.isEnabledFor(logging.DEBUG):  # only the last result says what is in force
        for _, result in reversed(results):
            if result is not REQUEUE and result is not None:
                failing = describe(result)
                break
    else:
        failing = _log_each(pump, results, failing)
    if failing is not None and failing != pump.failing:
        log.warning("delivery to %s is failing: %s", pump.dsn.envelope_url, failing)
    elif failing is None and pump.failing is not None:
        log.info("delivery to %s works again", pump.dsn.envelope_url)
    return failing


def _log_each(
    pump: Any, results: Sequence[tuple[Attempt, Result]], failing: str | None
) -> str | None:
    """log_results with DEBUG on: a line per request."""
    for attempt, result in results:
        if result is REQUEUE or result is None:
            continue
        failing = describe(result)
        what = f"{len(attempt.items)} item(s)" if attempt.items else "a client report"
        if attempt.items and attempt.report:
            what += " and a client report"
        log.debug("sent %s to %s: %s", what, pump.dsn.envelope_url, failing or "ok")
    return failing


def log_close(pump: Any) -> None:
    """Under the pump's lock, after close abandoned what was left."""
    events = pump.engine.stats.snapshot()["events"]
    if events["lost"]:
        log.warning(
            "closed: %d of %d events were not delivered to %s (see stats()['lost'])",
            events["lost"],
            events["accepted"],
            pump.dsn.envelope_url,
        )
    spool = pump.engine.spool
    if spool is not None and spool.spooled:
        log.info(
            "closed: %d envelopes wait in the spool %s for the next start",
            spool.spooled,
            pump.options.spool_dir,
        )
