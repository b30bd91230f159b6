"""Looking at a spool from outside (the ``sentry-transport spool`` command): what waits,
whose it is, and emptying it. Read-only but for ``purge``; see spool_files.py for the layout.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from ..core import spool as _spool
from ..core.envelope import Envelope
from ..core.errors import ConfigurationError, EnvelopeError
from .spool_files import READ_LIMIT
from .spool_owners import owner_alive


def survey(path: str) -> dict[str, Any]:
    """What waits in a spool: envelopes, bytes, the oldest, items by type (read-only)."""
    folder = os.path.abspath(os.path.expanduser(path))
    queue = os.path.join(folder, "queue")
    if not os.path.isdir(queue):
        raise ConfigurationError(f"no spool at {folder!r} (it has no queue/ folder)")
    envelopes = total = unreadable = 0
    oldest: int | None = None
    items: dict[str, int] = {}
    owners: dict[str, int] = {}
    for name in sorted(os.listdir(queue)):
        named = _spool.parse_name(name)
        try:
            size = os.path.getsize(os.path.join(queue, name))
            with open(os.path.join(queue, name), "rb") as file:
                parsed = _spool.parse_file(file.read(READ_LIMIT))
        except FileNotFoundError:
            continue
        except OSError:
            unreadable += 1
            continue
        live = parsed.live()
        if parsed.foreign or named is None:
            unreadable += 1
            continue
        total += size
        if live:
            oldest = named[0] if oldest is None else min(oldest, named[0])
            owners[named[1]] = owners.get(named[1], 0) + len(live)
        for _, _, body in live:
            try:
                envelope = Envelope.deserialize(body)
            except EnvelopeError:
                unreadable += 1
                continue
            envelopes += 1
            for item in envelope.items:
                items[item.type] = items.get(item.type, 0) + 1
    aside = os.path.join(folder, "set-aside")
    live_owners = {token: n for token, n in owners.items() if owner_alive(folder, token)}
    return {
        "path": folder,
        "envelopes": envelopes,
        "bytes": total,
        "oldest_ns": oldest,
        "items": dict(sorted(items.items())),
        "unreadable": unreadable,
        "set_aside": len(os.listdir(aside)) if os.path.isdir(aside) else 0,
        "held_by_running_processes": sum(live_owners.values()),
    }


def purge(path: str) -> int:
    """Delete every record and set-aside file of a spool; returns how many went."""
    folder = os.path.abspath(os.path.expanduser(path))
    removed = 0
    for sub in ("queue", "set-aside"):
        where = os.path.join(folder, sub)
        if not os.path.isdir(where):
            continue
        for name in os.listdir(where):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(where, name))
                removed += 1
    return removed
