"""Compact JSON as UTF-8 bytes for envelope headers and JSON payloads.

``dumps`` uses orjson when it is installed (the ``fast`` extra) and the standard library
otherwise. Both paths give the same JSON value for the same object, though not always the
same bytes: the standard library escapes non-ASCII text (``\\u00e9``), orjson writes it as
UTF-8, and a few floats are spelled differently (both are exact). The rules, on both paths:

- ``str`` keys as they are; ``int``, ``float``, ``bool`` and ``None`` keys as their JSON text
  (``"1"``, ``"1.5"``, ``"true"``, ``"null"``); any other key is a TypeError.
- NaN and infinities are written as ``null``: JSON has no such numbers, and Relay refuses a
  payload that spells them ``NaN``.
- Integers of any size are written exactly; tuples (namedtuples too) are arrays.
- An enum member is written as its value (what the standard library already does for
  ``IntEnum`` and ``str`` enums, and orjson for every enum).
- Anything else that is not JSON becomes its ``str()``: a datetime ``"2024-01-02
  03:04:05+00:00"``, a UUID its hyphenated form, bytes ``"b'...'"``, a dataclass its repr.

orjson takes the common case. What it refuses (non-``str`` keys, integers past 64 bits,
strings with lone surrogates, nesting past 255 levels, a ``str()`` that raises) is encoded
again by the standard library, which writes it by the rules above or raises as it would
have without orjson. A cycle raises ValueError, and so does nesting deeper than Python's
recursion limit (the standard library's encoder meets both as that limit).

``accelerator`` is the orjson module in use, or None; tests set it to None to run the
standard-library path.
"""

from __future__ import annotations

import json
import math
from enum import Enum
from typing import Any

_orjson: Any
try:  # an optional accelerator (the ``fast`` extra): pure computation, no I/O
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on what is installed
    _orjson = None

accelerator: Any = _orjson

# datetimes and dataclasses would be written natively by orjson (ISO 8601 with a "T", an
# object): hand them to _default instead, so that they come out as their str() on both paths
_ORJSON_OPTIONS = (
    _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS if _orjson else 0
)


def _default(obj: Any) -> Any:
    """What an object JSON has no type for is written as."""
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, float):  # a float subclass: orjson asks, the standard library does not
        return float(obj)
    if isinstance(obj, tuple):  # likewise for tuple subclasses
        return list(obj)
    return str(obj)


# made once: about 3x cheaper per call than json.dumps with the same settings. No check for
# cycles on the way (a dict of every container's id: about a tenth of the time for a large
# event): a cycle ends in RecursionError instead, as nesting past the recursion limit did
# anyway, and both are reported as the ValueError a cycle was (see stdlib_dumps).
_ENCODER = json.JSONEncoder(
    separators=(",", ":"), default=_default, allow_nan=False, check_circular=False
)


def _c_encoder() -> Any:
    """The C encoder (CPython's ``_json``) that ``_ENCODER.encode`` builds on every call,
    built once with the same settings, or None where there is none or it does not write
    what ``_ENCODER`` writes. ``encode`` also makes a float formatter per call and goes
    through two Python frames: timed alone (timeit), 0.6-0.7 us of the 8.3 the benchmarks'
    small event took, and of the 1.5 an envelope header took; ``bench/engine_floor.py
    --plain`` gave 18.7 against 20.1 us per small envelope."""
    make = getattr(json.encoder, "c_make_encoder", None)  # (not in typeshed)
    escape = getattr(json.encoder, "c_encode_basestring_ascii", None)
    if make is None or escape is None:  # pragma: no cover - CPython has both
        return None
    probe = {"a": [1, 1.5, -0.0, 10**20, None, True, "\u00e9\n\ud800"], 2: {"b": ()}, None: []}
    try:
        encoder = make(None, _default, escape, None, ":", ",", False, False, False)
        if "".join(encoder(probe, 0)) != _ENCODER.encode(probe):  # pragma: no cover
            return None
    except Exception:  # pragma: no cover - another interpreter's signature
        return None
    return encoder


_C_ENCODER = _c_encoder()


def dumps(obj: Any) -> bytes:
    """``obj`` as compact JSON in UTF-8 (see the module docstring for the rules)."""
    fast = accelerator
    if fast is not None:
        try:
            out: bytes = fast.dumps(obj, default=_default, option=_ORJSON_OPTIONS)
            return out
        except TypeError:  # orjson.JSONEncodeError: let the standard library have a go
            pass
    return stdlib_dumps(obj)


def dumps_kept(obj: Any) -> bytes:
    """``dumps`` for bytes that are kept (a queued item's payload): exactly their size in
    memory. orjson's bytes keep the buffer it wrote into, 4 KiB at least and then powers of
    two: 8 KiB held for a 1.2 KB event, so a queue's bytes bound would count a seventh of
    what it holds, and a burst of captures would take fresh pages for the slack. One copy
    (about 0.2 us for 1 KB) returns the buffer at once, for the next encode to reuse. The
    standard library's bytes are exact already."""
    out = dumps(obj)
    if accelerator is not None:
        return b"%b" % (out,)  # (the cheapest exact copy of a bytes)
    return out


def stdlib_dumps(obj: Any) -> bytes:
    """``dumps`` through the standard library only."""
    fast = _C_ENCODER
    try:
        text = "".join(fast(obj, 0)) if fast is not None else _ENCODER.encode(obj)
    except ValueError:  # a NaN or an infinity somewhere (or a cycle, which _finite reports)
        text = _ENCODER.encode(_finite(obj))
    except RecursionError:
        raise ValueError("Circular reference detected (or nesting too deep)") from None
    return text.encode("utf-8")


_NON_FINITE_KEYS = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _finite(obj: Any) -> Any:
    """A copy of the containers of ``obj`` with NaN and infinities made None.

    Keys that are such floats become the text the standard library wrote for them before
    (``"NaN"``, ``"Infinity"``). Only runs when the encoder met one, so its cost is the rare
    event's. A container met again inside itself raises ValueError, as the encoder does.
    """
    on_path: set[int] = set()

    def walk(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, Enum):
            return walk(value.value)
        if not isinstance(value, (dict, list, tuple)):
            return value
        key = id(value)
        if key in on_path:
            raise ValueError("Circular reference detected")
        on_path.add(key)
        try:
            if isinstance(value, dict):
                return {_finite_key(k): walk(v) for k, v in value.items()}
            return [walk(v) for v in value]
        finally:
            on_path.discard(key)

    return walk(obj)


def _finite_key(key: Any) -> Any:
    if isinstance(key, float) and not math.isfinite(key):
        return "NaN" if math.isnan(key) else _NON_FINITE_KEYS[key]
    return key
