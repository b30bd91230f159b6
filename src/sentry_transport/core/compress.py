"""Choosing and applying body compression.

``choose(requested, size, threshold, available)`` is the decision (pure). ``compress`` does the
CPU work. gzip and deflate come with the standard library; br needs ``brotli`` and zstd needs
``zstandard`` (or Python 3.14's ``compression.zstd``), imported only when asked for.

Default levels favour throughput: on a 128 KB event (bench/compression.py), gzip level 3
took 0.44x the time of level 6 for a 14% larger body, and a fifth of level 9's time. Bodies
under ``compression_threshold`` (2 KiB) are sent as is: gzip on a 1.2 KB event cost about
40 us of CPU per envelope in the delivery loop to save about 650 bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import cache

from .errors import MissingDependencyError

DEFAULT_LEVELS = {"gzip": 3, "deflate": 3, "br": 4, "zstd": 3}
_PREFERENCE = ("br", "gzip")  # what "auto" picks, best first, among available encodings


@cache
def available() -> frozenset[str]:
    found = {"gzip", "deflate"}
    for name in ("br", "zstd"):
        try:
            _compressor_for(name)
        except MissingDependencyError:
            continue
        found.add(name)
    return frozenset(found)


def resolve(requested: str) -> str | None:
    """The encoding a transport will use for ``requested`` ('none' -> None).

    An explicitly requested encoding whose library is missing raises MissingDependencyError.
    """
    if requested == "none":
        return None
    if requested == "auto":
        have = available()
        return next(name for name in _PREFERENCE if name in have)
    _compressor_for(requested)
    return requested


def choose(encoding: str | None, size: int, threshold: int) -> str | None:
    """The Content-Encoding for a body of ``size`` bytes (None: send it as is)."""
    if encoding is None or size < threshold:
        return None
    return encoding


def compress(data: bytes, encoding: str, level: int | None = None) -> bytes:
    return _compressor_for(encoding)(data, DEFAULT_LEVELS[encoding] if level is None else level)


def decompress(data: bytes, encoding: str) -> bytes:
    """Undo a Content-Encoding (used by the test sink); ValueError on bad data."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(data, 47)  # gzip or zlib header, auto-detected
        if encoding == "deflate":
            try:
                return zlib.decompress(data)
            except zlib.error:
                return zlib.decompress(data, -15)  # raw deflate, as some clients send
        if encoding == "br":
            import brotli  # type: ignore[import-not-found,unused-ignore]

            result: bytes = brotli.decompress(data)
            return result
        if encoding == "zstd":
            return _zstd_decompress(data)
        if encoding in ("", "identity"):
            return data
    except (zlib.error, OSError, EOFError) as exc:
        raise ValueError(f"cannot decode {encoding} body: {exc}") from None
    except Exception as exc:  # brotli.error / zstd errors have no common base
        raise ValueError(f"cannot decode {encoding} body: {exc}") from None
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def _zstd_decompress(data: bytes) -> bytes:
    try:
        from compression import zstd  # type: ignore[import-not-found,unused-ignore]

        out: bytes = zstd.decompress(data)
        return out
    except ImportError:
        import zstandard  # type: ignore[import-not-found,unused-ignore]

        reader = zstandard.ZstdDecompressor().stream_reader(data)
        result: bytes = reader.read()
        return result


@cache
def _compressor_for(encoding: str) -> Callable[[bytes, int], bytes]:
    if encoding == "gzip":
        return _gzip
    if encoding == "deflate":
        return zlib.compress
    if encoding == "br":
        try:
            import brotli
        except ImportError:
            raise MissingDependencyError("brotli", "brotli", "compression=br") from None
        return lambda data, level: bytes(brotli.compress(data, quality=level))
    if encoding == "zstd":
        try:
            from compression import zstd

            return lambda data, level: bytes(zstd.compress(data, level=level))
        except ImportError:
            pass
        try:
            import zstandard
        except ImportError:
            raise MissingDependencyError("zstandard", "zstd", "compression=zstd") from None
        return lambda data, level: bytes(zstandard.ZstdCompressor(level=level).compress(data))
    raise ValueError(f"unknown compression {encoding!r}")


def _gzip(data: bytes, level: int) -> bytes:
    # zlib with wbits=31 writes a gzip member with mtime 0: same bytes as gzip.compress(mtime=0).
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()
