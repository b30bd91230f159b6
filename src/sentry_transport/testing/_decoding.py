"""Turning a request body into its decoded bytes and envelope, within a size limit.

How it works: ``decode`` undoes each Content-Encoding in turn, the last one applied first,
through ``core.compress.decompress`` with a limit on its output, then parses the result as
an envelope. Decompressors are driven in small steps, so a body that would expand past the
limit is given up once its output passes the limit rather than after it has been expanded
completely: a 1 MB gzip body of zeros that would become 1 GiB costs about ``limit`` bytes
of memory and the time to produce them. ``decode`` touches no shared state, so the sink
runs it on its event loop when a body is small and on a worker thread when it is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core.compress import DecompressionLimitError, decompress
from ..core.envelope import Envelope

# The default limit on a body after Content-Encoding: Relay's limit on a decompressed
# envelope (200 MiB), so a body the sink accepts is one Sentry could accept too.
MAX_DECOMPRESSED = 200 * 1024 * 1024

# Decoding whose output stays under this is done on the event loop (well under a
# millisecond for ordinary envelopes); anything bigger moves to a worker thread.
INLINE_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class Decoded:
    """The outcome of decoding a body: what ``Received`` records, and how to refuse it."""

    decoded: bytes | None  # None if decoding failed
    envelope: Envelope | None
    error: str | None
    refusal: int = 400  # the status that replaces a 2xx answer when ``error`` is set


def decode(headers: Mapping[str, str], body: bytes, limit: int) -> Decoded:
    """The body after Content-Encoding (at most ``limit`` bytes) and its envelope."""
    codings = [c for c in headers.get("content-encoding", "").split(",") if c.strip()]
    if not codings and len(body) > limit:
        return Decoded(None, None, f"body of {len(body)} bytes is over {limit} bytes", 413)
    decoded = body
    try:
        for coding in reversed(codings):
            decoded = decompress(decoded, coding, limit)
    except DecompressionLimitError as exc:
        return Decoded(None, None, str(exc), 413)
    except Exception as exc:
        return Decoded(None, None, str(exc))
    try:
        return Decoded(decoded, Envelope.deserialize(decoded), None)
    except Exception as exc:
        return Decoded(decoded, None, f"not an envelope: {exc}")
