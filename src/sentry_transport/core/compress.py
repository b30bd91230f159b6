"""Choosing and applying body compression.

``choose(requested, size, threshold, available)`` is the decision (pure). ``compress`` does the
CPU work; ``decompress`` undoes it for the test sink, optionally giving up once the output
passes a limit. gzip and deflate come with the standard library; br needs ``brotli`` and
zstd needs ``zstandard`` (or Python 3.14's ``compression.zstd``), imported only when asked
for. When ``isal`` is installed (the fast extra), gzip and deflate bodies at levels 1 to 3
are written by its zlib instead, in the same formats, three to eight times faster (levels 0
and 4 to 9 mean what zlib's mean, and stay with zlib); with it, the default gzip/deflate
level is isal's 2 instead of 3 (``ISAL_DEFAULT_LEVEL``).

Default levels favour throughput: on a 128 KB event (bench/compression.py), gzip level 3
took 0.44x the time of level 6 for a 14% larger body, and a fifth of level 9's time. Bodies
under ``compression_threshold`` (2 KiB) are sent as is: gzip on a 1.2 KB event cost about
40 us of CPU per envelope in the delivery loop to save about 650 bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import cache
from typing import Any

from .errors import MissingDependencyError

DEFAULT_LEVELS = {"gzip": 3, "deflate": 3, "br": 4, "zstd": 3}
# isal's level 3 is its slowest: on the benchmarks' 100 KB event its 2 took a third of the
# time (0.11 ms against 0.35 ms) for a body 5% larger (10% larger than zlib's 3, at a
# seventh of zlib 3's 0.80 ms)
ISAL_DEFAULT_LEVEL = 2
_ISAL_LEVELS = frozenset({1, 2, 3})  # isal's 0 is its fastest, not zlib's "stored"
_UNKNOWN: Any = object()

# isal's zlib module when installed, else None; looked up at the first gzip or deflate body.
# Tests and benchmarks may set it (None: the standard library's zlib only).
zlib_accelerator: Any = _UNKNOWN
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
    """``data`` compressed; ``level`` None: the default, ``default_level(encoding)``."""
    return _compressor_for(encoding)(data, default_level(encoding) if level is None else level)


def compress_chunks(chunks: list[bytes], encoding: str, level: int | None = None) -> bytes:
    """``compress(b"".join(chunks), ...)``: the same body once decoded (the same bytes but
    for isal's level 3); gzip and deflate take the pieces as they are (a large body is not
    copied into one string first)."""
    if encoding not in ("gzip", "deflate"):
        return compress(b"".join(chunks), encoding, level)
    level = default_level(encoding) if level is None else level
    lib = _zlib_for(level)
    packer = lib.compressobj(level, lib.DEFLATED, 31 if encoding == "gzip" else 15)
    out = [packer.compress(chunk) for chunk in chunks]
    out.append(packer.flush())
    return b"".join(out)


def default_level(encoding: str) -> int:
    """The level used when none is set: ``DEFAULT_LEVELS``, except gzip and deflate written
    by isal (installed), which take isal's level 2 (``ISAL_DEFAULT_LEVEL``)."""
    if encoding in ("gzip", "deflate") and _zlib_for(ISAL_DEFAULT_LEVEL) is not zlib:
        return ISAL_DEFAULT_LEVEL
    return DEFAULT_LEVELS[encoding]


class DecompressionLimitError(ValueError):
    """A body that decodes to more bytes than the ``limit`` given to ``decompress``."""

    def __init__(self, encoding: str, limit: int) -> None:
        super().__init__(f"{encoding or 'identity'} body decodes to more than {limit} bytes")
        self.encoding = encoding
        self.limit = limit


# With a limit, input is fed to a decompressor this much at a time and each call may return
# at most this much output, so memory stays near the limit however far the data expands.
_STEP = 64 * 1024
_OUT_STEP = 1024 * 1024
# brotli before 1.2 cannot cap the output of one call: it gets input this small instead.
_OLD_BROTLI_STEP = 16


def decompress(data: bytes, encoding: str, limit: int | None = None) -> bytes:
    """Undo a Content-Encoding (used by the test sink); ValueError on bad data.

    With ``limit``, decoding stops with DecompressionLimitError (a ValueError) as soon as
    the output passes ``limit`` bytes; an identity body longer than ``limit`` fails the same
    way. The output is built up in bounded steps, so a small body that would expand to
    gigabytes costs about ``limit`` bytes before it is refused.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        if limit is not None and len(data) > limit:
            raise DecompressionLimitError(encoding, limit)
        return data
    if encoding not in ("gzip", "x-gzip", "deflate", "br", "zstd"):
        raise ValueError(f"unsupported Content-Encoding {encoding!r}")
    try:
        if limit is None:
            return _decompress_whole(data, encoding)
        return _decompress_bounded(data, encoding, limit)
    except DecompressionLimitError:
        raise
    except Exception as exc:  # zlib.error / brotli.error / zstd errors have no common base
        raise ValueError(f"cannot decode {encoding} body: {exc}") from None


def _decompress_whole(data: bytes, encoding: str) -> bytes:
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
    return _zstd_decompress(data)


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


class _Output:
    """Decoded pieces collected under a size limit."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.size = 0
        self.pieces: list[bytes] = []

    def room(self) -> int:
        """How much the next call may return: one byte past the limit shows it was passed."""
        return min(_OUT_STEP, self.limit - self.size + 1)

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self.limit:
            self.pieces.clear()
            raise DecompressionLimitError(self.encoding, self.limit)
        if piece:
            self.pieces.append(piece)

    def result(self) -> bytes:
        return self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)


def _decompress_bounded(data: bytes, encoding: str, limit: int) -> bytes:
    out = _Output(encoding, limit)
    if encoding in ("gzip", "x-gzip"):
        _inflate(data, 47, out)
    elif encoding == "deflate":
        try:
            _inflate(data, 15, out)
        except zlib.error:
            out = _Output(encoding, limit)
            _inflate(data, -15, out)
    elif encoding == "br":
        _unbrotli(data, out)
    else:
        _unzstd(data, out)
    return out.result()


def _inflate(data: bytes, wbits: int, out: _Output) -> None:
    decoder = zlib.decompressobj(wbits)
    view = memoryview(data)
    for start in range(0, max(len(view), 1), _STEP):  # empty input: one round, then truncated
        piece: bytes | memoryview = view[start : start + _STEP]
        while True:
            room = out.room()
            chunk = decoder.decompress(piece, room)
            out.add(chunk)
            if decoder.eof:
                return  # like zlib.decompress, ignore anything after the end of the stream
            piece = decoder.unconsumed_tail
            if not piece and len(chunk) < room:
                break  # this input is used up and zlib holds no more output for it
    raise zlib.error("incomplete or truncated stream")


def _unbrotli(data: bytes, out: _Output) -> None:
    import brotli

    decoder = brotli.Decompressor()
    view = memoryview(data)
    if not hasattr(decoder, "can_accept_more_data"):  # brotli < 1.2
        for start in range(0, len(view), _OLD_BROTLI_STEP):
            out.add(decoder.process(view[start : start + _OLD_BROTLI_STEP]))
    else:
        for start in range(0, len(view), _STEP):
            out.add(decoder.process(view[start : start + _STEP], output_buffer_limit=out.room()))
            while not decoder.can_accept_more_data():
                out.add(decoder.process(b"", output_buffer_limit=out.room()))
        # can_accept_more_data() is also true when the input is used up but output is still
        # pending, so after the last piece ask for output until none comes
        while not decoder.is_finished():
            chunk = decoder.process(b"", output_buffer_limit=out.room())
            if not chunk:
                break
            out.add(chunk)
    if not decoder.is_finished():
        raise brotli.error("incomplete compressed stream")


def _unzstd(data: bytes, out: _Output) -> None:
    try:
        from compression import zstd
    except ImportError:
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(data)
        while chunk := reader.read(out.room()):
            out.add(chunk)
        return
    rest = data  # Python 3.14: like zstd.decompress, every frame in turn
    while True:
        decoder = zstd.ZstdDecompressor()
        out.add(decoder.decompress(rest, out.room()))
        while not decoder.eof and not decoder.needs_input:
            out.add(decoder.decompress(b"", out.room()))
        if not decoder.eof:
            raise zstd.ZstdError("compressed data ended before the end of a frame")
        rest = decoder.unused_data
        if not rest:
            return


@cache
def _compressor_for(encoding: str) -> Callable[[bytes, int], bytes]:
    if encoding == "gzip":
        return _gzip
    if encoding == "deflate":
        return _deflate
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


def _zlib_for(level: int) -> Any:
    """The zlib module to compress at ``level`` with: isal's when installed and it has the
    level, else the standard library's."""
    global zlib_accelerator
    if zlib_accelerator is _UNKNOWN:  # a race only looks it up twice
        found: Any
        try:
            from isal import isal_zlib as found
        except ImportError:
            found = None
        zlib_accelerator = found
    if zlib_accelerator is not None and level in _ISAL_LEVELS:
        return zlib_accelerator
    return zlib


def _gzip(data: bytes, level: int) -> bytes:
    # wbits=31: a gzip member with mtime 0 (from zlib: the bytes of gzip.compress(mtime=0))
    lib = _zlib_for(level)
    compressor = lib.compressobj(level, lib.DEFLATED, 31)
    out: bytes = compressor.compress(data) + compressor.flush()
    return out


def _deflate(data: bytes, level: int) -> bytes:
    out: bytes = _zlib_for(level).compress(data, level)
    return out
