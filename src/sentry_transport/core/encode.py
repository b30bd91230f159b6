"""Turning an attempt into request bytes: pure, so drivers run it outside their lock.

``Encoder.encode(attempt, now)`` encodes JSON payloads, applies Relay's item size limits,
attaches the client report riding along, stamps ``sent_at``, compresses when worth it and
checks the body limit. It reads only fixed settings and writes only into the attempt; what it
drops is noted there (``attempt.dropped``) and counted by the engine with the result.
"""

from __future__ import annotations

from . import compress as _compress
from . import limits as _limits
from . import request as _request
from .actions import Attempt
from .client_reports import report_item
from .dsn import Dsn
from .envelope import Envelope, Item
from .version import CLIENT


class Encoder:
    def __init__(self, dsn: Dsn, client: str = CLIENT) -> None:
        self.dsn = dsn
        self.options = dsn.options
        self.client = client
        self.encoding = _compress.resolve(self.options.compression)
        self.heads = _request.Heads(dsn, client)
        self._stamp = (-1.0, "")  # the last (now, rfc3339(now)): a batch is stamped once

    def sent_at(self, now: float) -> str:
        """``rfc3339(now)``, rendered once for the attempts of a batch (one ``now``). The
        pair is replaced whole, so workers sharing the encoder read a matching one."""
        stamp = self._stamp
        if stamp[0] != now:
            stamp = self._stamp = (now, _request.rfc3339(now))
        return stamp[1]

    def encode(self, attempt: Attempt, now: float) -> None:
        """JSON, size limits, compression and the request bytes, into ``attempt``.

        Reads only the engine's fixed settings: call it outside the lock. What it drops is
        noted in the attempt and counted when the result is reported. Never raises.
        """
        job = attempt.job
        try:
            items: list[Item] = []
            for item in attempt.items:
                try:
                    item.payload  # noqa: B018 -- encodes JSON payloads, off the caller's thread
                except (TypeError, ValueError, RecursionError):
                    attempt.dropped.append(("internal_sdk_error", [item]))
                    continue
                items.append(item)
            violations = _limits.check_items(items) if items else None
            if violations:
                too_big = {v.index for v in violations}
                attempt.dropped.append(("send_error", [items[i] for i in sorted(too_big)]))
                items = [item for i, item in enumerate(items) if i not in too_big]
            if not items and not attempt.report:
                return
            envelope = job.envelope
            if attempt.report or not _same(items, envelope.items):
                body_items = list(items)
                if attempt.report:
                    body_items.append(report_item(attempt.report, round(now, 3)))
                envelope = Envelope(envelope.headers if items else {}, body_items)
                envelope._raw_header = job.envelope._raw_header if items else None
            request = _request.build(
                envelope,
                self.dsn,
                now,
                self.encoding,
                self.options.compression_level,
                self.options.compression_threshold,
                self.client,
                self.heads,
                self.sent_at(now),
            )
            if _limits.body_too_large(len(request.body)):
                attempt.dropped.append(("send_error", items))
                return
            attempt.request = request
        except Exception as exc:  # a bug must cost the job, not the worker
            attempt.request = None
            attempt.dropped = [("internal_sdk_error", attempt.items)]
            attempt.error = f"internal error: {type(exc).__name__}: {exc}"


def _same(items: list[Item], others: list[Item]) -> bool:
    """Whether two item lists hold the same items (then the envelope is sent as it is)."""
    if len(items) == 1:  # the usual: one event
        return len(others) == 1 and items[0] is others[0]
    return len(items) == len(others) and all(a is b for a, b in zip(items, others, strict=True))
