"""Event ids for the core's envelope builders: random, so they come from outside the core."""

from __future__ import annotations

import uuid

from .core import envelope


def _uuid4_hex() -> str:
    return uuid.uuid4().hex


envelope.id_source = _uuid4_hex
