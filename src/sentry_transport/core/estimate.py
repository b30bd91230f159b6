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


_SCALARS = frozenset((int, float, bool, type(None)))  # 8 bytes each, as a guess


def _leaf(value: Any) -> int | None:
    """The size of a value that is not a container (text: its length), else None. Types
    outside JSON's are taken for what they behave as, else for a scalar."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value) + 2
    if isinstance(value, (Mapping, list, tuple)):
        return None
    return 8


def estimate(obj: Any) -> int:
    """The encoded size of a JSON-able object, from a bounded sample of it.

    Containers are sampled (their first few elements, scaled by their length) and the walk
    stops after a fixed number of values, so the cost is bounded whatever the object's size.
    Within about 2x of the real size for typical events; it exists to bound queue memory.
    One loop over a stack of (container, weight): a sampled element stands for ``weight``
    alike. A container's scalars and text are counted in its own loop, not pushed (a
    container costs a push, a value a few operations: a 1 KB event is some 60 values).
    """
    size = _leaf(obj)
    if size is not None:
        return size
    total = 0.0
    budget = _BUDGET
    stack: list[tuple[Any, float]] = [(obj, 1.0)]
    push = stack.append
    scalars = _SCALARS
    while stack:
        value, weight = stack.pop()
        count = len(value)
        if not count:
            total += 2 * weight
            continue
        if budget <= 0:
            total += 32 * count * weight
            continue
        part = 0  # the sampled elements' bytes, each standing for ``each`` alike
        if type(value) is dict or isinstance(value, Mapping):
            if count > _SAMPLE_KEYS:
                pairs: Any = islice(value.items(), _SAMPLE_KEYS)
                each = weight * count / _SAMPLE_KEYS
            else:
                pairs, each = value.items(), weight
            total += 2 * weight  # braces
            for key, element in pairs:
                budget -= 1
                part += len(key) + 4 if type(key) is str else len(str(key)) + 4
                kind = type(element)
                if kind is str:
                    part += len(element) + 2
                elif kind in scalars:
                    part += 8
                elif (size := _leaf(element)) is not None:
                    part += size
                else:
                    push((element, each))
        else:  # a list or tuple
            each = weight * count / min(count, _SAMPLE_ITEMS)
            total += (2 + count) * weight  # brackets, commas
            for element in value[:_SAMPLE_ITEMS]:  # (as the mapping's loop, inlined: no call
                budget -= 1  # per value)
                kind = type(element)
                if kind is str:
                    part += len(element) + 2
                elif kind in scalars:
                    part += 8
                elif (size := _leaf(element)) is not None:
                    part += size
                else:
                    push((element, each))
        total += part * each
    return int(total)
