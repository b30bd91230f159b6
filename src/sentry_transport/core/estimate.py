"""The encoded size of a JSON-able object, estimated without encoding it.

``estimate(obj)`` walks a bounded sample of the object (a mapping's first keys, a list's
first elements, scaled by their lengths), so its cost is bounded whatever the object's size.
It bounds queue memory where encoding would cost too much (an event loop without orjson).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import islice
from typing import Any

_SAMPLE_KEYS = 64  # keys of a mapping looked at (an event's big part may be any key)
_SAMPLE_ITEMS = 8  # elements of a list looked at; the rest are assumed alike
_BUDGET = 512  # values looked at in all, per estimate


_TEXT, _SCALAR, _MAPPING, _SEQUENCE = "text", "scalar", "mapping", "sequence"
_KINDS: dict[type, str] = {
    str: _TEXT,
    bytes: _TEXT,
    int: _SCALAR,
    float: _SCALAR,
    bool: _SCALAR,
    type(None): _SCALAR,
    dict: _MAPPING,
    list: _SEQUENCE,
    tuple: _SEQUENCE,
}


def _kind(value: Any) -> str:
    """What ``estimate`` takes a value of a type outside ``_KINDS`` for."""
    if isinstance(value, (str, bytes, bytearray)):
        return _TEXT
    if isinstance(value, Mapping):
        return _MAPPING
    if isinstance(value, (list, tuple)):
        return _SEQUENCE
    return _SCALAR


def estimate(obj: Any) -> int:
    """The encoded size of a JSON-able object, from a bounded sample of it.

    Containers are sampled (their first few elements, scaled by their length) and the walk
    stops after a fixed number of values, so the cost is bounded whatever the object's size.
    Within about 2x of the real size for typical events; it exists to bound queue memory.
    One loop over a stack of (value, weight): a sampled element stands for ``weight`` alike.
    """
    total = 0.0
    budget = _BUDGET
    stack: list[tuple[Any, float]] = [(obj, 1.0)]
    pop, push = stack.pop, stack.append
    while stack:
        value, weight = pop()
        budget -= 1
        kind = _KINDS.get(type(value)) or _kind(value)
        if kind is _TEXT:
            total += (len(value) + 2) * weight
        elif kind is _SCALAR:
            total += 8 * weight
        elif not value:
            total += 2 * weight
        elif budget <= 0:
            total += 32 * len(value) * weight
        elif kind is _MAPPING:
            count = len(value)
            each = weight * count / min(count, _SAMPLE_KEYS)
            total += 2 * weight
            for key, element in islice(value.items(), _SAMPLE_KEYS):
                total += (len(key if type(key) is str else str(key)) + 4) * each
                push((element, each))
        else:  # a sequence
            count = len(value)
            each = weight * count / min(count, _SAMPLE_ITEMS)
            total += 2 * weight + count * weight  # brackets, commas
            for element in value[:_SAMPLE_ITEMS]:
                push((element, each))
    return int(total)
