"""Pure policies: retry, compression, request building, proxy choice, the HTTP/1.1 codec."""

from __future__ import annotations

import json
import re
import zlib
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry_transport import (
    Dsn,
    DsnError,
    Envelope,
    HttpProtocolError,
    Item,
    MissingDependencyError,
    RetryPolicy,
    TransportOptions,
)
from sentry_transport.core import compress as compression
from sentry_transport.core import http11 as http11
from sentry_transport.core import proxy as proxy
from sentry_transport.core import request as request
from sentry_transport.core.version import CLIENT

NOW = 1_700_000_000.0

# -- retry -------------------------------------------------------------------------------------


def test_retry_delays_are_exponential_without_jitter() -> None:
    policy = RetryPolicy(attempts=5, backoff=0.5, deadline=1000.0, jitter=0.0)
    delays = [policy.delay(n, NOW, NOW, 0.3) for n in range(1, 6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_retry_jitter_bounds() -> None:
    policy = RetryPolicy(attempts=3, backoff=2.0, deadline=1000.0, jitter=0.25)
    assert policy.delay(1, NOW, NOW, 0.5) == 2.0  # middle of the range: no jitter
    assert policy.delay(1, NOW, NOW, 0.0) == 1.5  # -25 %
    high = policy.delay(1, NOW, NOW, 0.999999)
    assert high is not None and 2.49 < high < 2.5  # +25 %, exclusive
    assert policy.delay(2, NOW, NOW, 0.0) == 3.0
    assert policy.delay(2, NOW, NOW, 0.5) == 4.0


@settings(max_examples=200, deadline=None)
@given(attempt=st.integers(1, 10), rand=st.floats(0, 1, exclude_max=True))
def test_retry_delay_always_within_jitter_band(attempt: int, rand: float) -> None:
    policy = RetryPolicy(attempts=10, backoff=0.5, max_backoff=30.0, deadline=1e9, jitter=0.25)
    delay = policy.delay(attempt, NOW, NOW, rand)
    base = min(30.0, 0.5 * 2 ** (attempt - 1))
    assert delay is not None
    assert base * 0.75 <= delay <= base * 1.25


def test_retry_backoff_is_capped() -> None:
    policy = RetryPolicy(attempts=20, backoff=1.0, max_backoff=5.0, deadline=1e9, jitter=0.0)
    assert policy.delay(10, NOW, NOW, 0.5) == 5.0


def test_retry_attempts_cut_off() -> None:
    policy = RetryPolicy(attempts=3, backoff=0.1, deadline=1000.0)
    assert policy.delay(3, NOW, NOW, 0.5) is not None
    assert policy.delay(4, NOW, NOW, 0.5) is None
    assert RetryPolicy(attempts=0).delay(1, NOW, NOW, 0.5) is None


def test_retry_deadline_cut_off() -> None:
    policy = RetryPolicy(attempts=10, backoff=1.0, deadline=10.0, jitter=0.0)
    assert policy.delay(1, NOW, NOW + 9.0, 0.5) == 1.0  # lands exactly on the deadline
    assert policy.delay(1, NOW, NOW + 9.5, 0.5) is None  # would land after it
    assert policy.delay(2, NOW, NOW + 20, 0.5) is None


# -- compression -------------------------------------------------------------------------------


def test_choose_threshold() -> None:
    assert compression.choose("gzip", 1023, 1024) is None
    assert compression.choose("gzip", 1024, 1024) == "gzip"
    assert compression.choose("br", 10**6, 1024) == "br"
    assert compression.choose(None, 10**6, 0) is None
    assert compression.choose("gzip", 0, 0) == "gzip"


def test_resolve() -> None:
    assert compression.resolve("none") is None
    assert compression.resolve("gzip") == "gzip"
    assert compression.resolve("deflate") == "deflate"
    with pytest.raises(ValueError):
        compression.resolve("lzma")


def test_resolve_optional_encodings() -> None:
    pytest.importorskip("brotli")
    pytest.importorskip("zstandard")
    assert compression.resolve("br") == "br"
    assert compression.resolve("zstd") == "zstd"
    assert compression.resolve("auto") == "br"
    assert {"gzip", "deflate", "br", "zstd"}.issubset(compression.available())


def test_missing_library_is_a_missing_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    compression._compressor_for.cache_clear()
    monkeypatch.setitem(sys.modules, "brotli", None)  # import brotli -> ImportError
    try:
        with pytest.raises(MissingDependencyError) as info:
            compression.resolve("br")
        assert isinstance(info.value, ImportError)
        assert "sentry-transport[brotli]" in str(info.value)
    finally:
        compression._compressor_for.cache_clear()


def test_auto_falls_back_to_gzip_without_brotli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compression, "available", lambda: frozenset({"gzip", "deflate"}))
    assert compression.resolve("auto") == "gzip"


def test_zstd_is_used_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installing zstandard (the zstd or fast extra) changes no default: a server that cannot
    decode zstd would refuse every body, so zstd is sent only to a DSN that asks for it."""
    pytest.importorskip("zstandard")
    assert TransportOptions().compression == "gzip"
    assert compression.resolve(TransportOptions().compression) == "gzip"
    monkeypatch.setattr(compression, "available", lambda: frozenset({"gzip", "deflate", "zstd"}))
    assert compression.resolve("auto") == "gzip"  # auto: br, else gzip; never zstd
    assert compression.resolve("zstd") == "zstd"


def test_default_levels_favour_throughput() -> None:
    assert set(compression.DEFAULT_LEVELS) == {"gzip", "deflate", "br", "zstd"}
    assert all(level < 9 for level in compression.DEFAULT_LEVELS.values())


BODY = b'{"message":"' + b"hello world " * 500 + b'"}\n' + bytes(range(256))


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_compress_round_trip(encoding: str) -> None:
    if encoding not in compression.available():
        pytest.skip(f"no {encoding} library installed")
    packed = compression.compress(BODY, encoding)
    assert len(packed) < len(BODY)
    assert compression.decompress(packed, encoding) == BODY
    assert compression.decompress(compression.compress(b"", encoding), encoding) == b""
    for level in (1, 5):
        assert compression.decompress(compression.compress(BODY, encoding, level), encoding) == BODY


def test_gzip_is_real_gzip_and_deterministic() -> None:
    import gzip

    packed = compression.compress(BODY, "gzip")
    assert packed[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed) == BODY
    assert packed == compression.compress(BODY, "gzip")  # mtime 0: same bytes every time
    assert compression.decompress(packed, "x-gzip") == BODY
    assert compression.decompress(packed, " GZIP ") == BODY


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_isal_writes_levels_1_to_3_in_the_same_formats(
    encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With isal installed (the fast extra), gzip and deflate at levels 1-3 come from isal's
    zlib: other bytes, the same format for any gzip or zlib reader; 0 and 4-9 stay zlib's."""
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    import gzip

    monkeypatch.setattr(compression, "zlib_accelerator", isal_zlib)
    wbits = 31 if encoding == "gzip" else 15
    for level in (1, 2, 3):
        packed = compression.compress(BODY, encoding, level)
        packer = isal_zlib.compressobj(level, isal_zlib.DEFLATED, wbits)
        assert packed == packer.compress(BODY) + packer.flush()
        assert zlib.decompress(packed, wbits) == BODY  # the standard library reads it
        assert compression.decompress(packed, encoding, limit=len(BODY)) == BODY
        if encoding == "gzip":
            assert gzip.decompress(packed) == BODY
    monkeypatch.setattr(compression, "zlib_accelerator", None)
    plain = {level: compression.compress(BODY, encoding, level) for level in (0, 3, 6, 9)}
    monkeypatch.setattr(compression, "zlib_accelerator", isal_zlib)
    assert compression.compress(BODY, encoding, 3) != plain[3]  # isal's
    for level in (0, 6, 9):  # 0 is "stored" in zlib, not isal's fastest: zlib keeps those
        assert compression.compress(BODY, encoding, level) == plain[level]


def test_without_isal_gzip_is_zlibs(monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    monkeypatch.setattr(compression, "zlib_accelerator", None)
    assert compression.compress(BODY, "gzip", 3) == gzip.compress(BODY, 3, mtime=0)
    assert compression.compress(BODY, "deflate", 3) == zlib.compress(BODY, 3)


def test_isal_is_looked_up_once_and_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(compression, "zlib_accelerator", compression._UNKNOWN)
    monkeypatch.setitem(sys.modules, "isal", None)  # import isal -> ImportError
    assert compression.decompress(compression.compress(BODY, "gzip"), "gzip") == BODY
    assert compression.zlib_accelerator is None


def test_default_level_is_used_and_differs_from_nine() -> None:
    default = compression.compress(BODY * 4, "gzip")
    assert default == compression.compress(BODY * 4, "gzip", compression.default_level("gzip"))
    assert default != compression.compress(BODY * 4, "gzip", 9)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_the_default_level_is_isal_s_2_with_isal_and_3_without(
    monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    monkeypatch.setattr(compression, "zlib_accelerator", isal_zlib)
    assert compression.default_level(encoding) == compression.ISAL_DEFAULT_LEVEL == 2
    assert compression.compress(BODY, encoding) == compression.compress(BODY, encoding, 2)
    assert compression.compress(BODY, encoding, 3) != compression.compress(BODY, encoding, 2)
    monkeypatch.setattr(compression, "zlib_accelerator", None)  # as without the fast extra
    assert compression.default_level(encoding) == compression.DEFAULT_LEVELS[encoding] == 3
    assert compression.default_level("br") == 4


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_a_body_compressed_in_pieces_decodes_to_the_whole(encoding: str) -> None:
    if encoding not in compression.available():
        pytest.skip(f"{encoding} is not installed")
    chunks = [b'{"event_id":"0"}', b"\n", b'{"type":"event"}', b"\n", BODY * 40]
    whole = b"".join(chunks)
    packed = compression.compress_chunks(chunks, encoding)
    assert compression.decompress(packed, encoding) == whole
    if encoding in ("gzip", "deflate") and compression.default_level(encoding) == 3:
        assert packed == compression.compress(whole, encoding)  # zlib: the very same bytes


def test_deflate_is_zlib_wrapped_and_raw_accepted_when_decoding() -> None:
    packed = compression.compress(BODY, "deflate")
    assert zlib.decompress(packed) == BODY
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw_deflate = raw.compress(BODY) + raw.flush()
    assert compression.decompress(raw_deflate, "deflate") == BODY


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_decompress_garbage_is_value_error(encoding: str) -> None:
    if encoding not in compression.available():
        pytest.skip(f"no {encoding} library installed")
    with pytest.raises(ValueError):
        compression.decompress(b"definitely not compressed \x00\xff", encoding)


def test_decompress_identity_and_unknown() -> None:
    assert compression.decompress(b"abc", "identity") == b"abc"
    assert compression.decompress(b"abc", "") == b"abc"
    with pytest.raises(ValueError, match="unsupported"):
        compression.decompress(b"abc", "compress")


LARGE = BODY * 3 + bytes(3 * 1024 * 1024)  # more than one output step of a limited decode


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_decompress_with_a_limit_stops_just_past_it(encoding: str) -> None:
    if encoding not in compression.available():
        pytest.skip(f"no {encoding} library installed")
    packed = compression.compress(LARGE, encoding)
    assert compression.decompress(packed, encoding, len(LARGE)) == LARGE
    for limit in (len(LARGE) - 1, 1000, 0):
        with pytest.raises(compression.DecompressionLimitError) as caught:
            compression.decompress(packed, encoding, limit)
        assert isinstance(caught.value, ValueError)
        assert caught.value.limit == limit
        assert str(caught.value) == f"{encoding} body decodes to more than {limit} bytes"
    assert compression.decompress(compression.compress(b"", encoding), encoding, 0) == b""


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_decompress_with_a_limit_still_rejects_bad_data(encoding: str) -> None:
    if encoding not in compression.available():
        pytest.skip(f"no {encoding} library installed")
    with pytest.raises(ValueError) as caught:
        compression.decompress(b"definitely not compressed \x00\xff", encoding, 1 << 20)
    assert not isinstance(caught.value, compression.DecompressionLimitError)
    if encoding != "zstd":  # zstandard's stream reader hands back a cut frame's output as is
        packed = compression.compress(LARGE, encoding)
        with pytest.raises(ValueError, match=f"cannot decode {encoding} body"):
            compression.decompress(packed[: len(packed) // 2], encoding, 1 << 30)


def test_decompress_with_a_limit_handles_raw_deflate_and_identity() -> None:
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw_deflate = raw.compress(LARGE) + raw.flush()
    assert compression.decompress(raw_deflate, "deflate", len(LARGE)) == LARGE
    with pytest.raises(compression.DecompressionLimitError):
        compression.decompress(raw_deflate, "deflate", len(LARGE) - 1)
    assert compression.decompress(b"abc", "identity", 3) == b"abc"
    with pytest.raises(compression.DecompressionLimitError, match="identity body"):
        compression.decompress(b"abc", "", 2)


def test_decompress_with_a_limit_on_brotli_without_an_output_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    brotli = pytest.importorskip("brotli")
    real = brotli.Decompressor
    fed: list[int] = []

    class OldDecompressor:  # the interface of brotli before 1.2: no output_buffer_limit
        def __init__(self) -> None:
            self._inner = real()

        def process(self, data: bytes) -> bytes:
            fed.append(len(data))
            return bytes(self._inner.process(data))

        def is_finished(self) -> bool:
            return bool(self._inner.is_finished())

    monkeypatch.setattr(brotli, "Decompressor", OldDecompressor)
    packed = compression.compress(LARGE, "br")
    assert compression.decompress(packed, "br", len(LARGE)) == LARGE
    with pytest.raises(compression.DecompressionLimitError):
        compression.decompress(packed, "br", len(LARGE) - 1)
    assert 0 < max(fed) <= 16  # fed in small pieces, since one call's output is not capped


# -- request building --------------------------------------------------------------------------


def headers_of(req: request.Request) -> dict[str, str]:
    names = [name.lower() for name, _ in req.headers]
    assert len(names) == len(set(names)), "no header twice"
    return {name: value for name, value in req.headers}


def sample_envelope() -> Envelope:
    return Envelope.for_event({"message": "hi " * 1000}, headers={"trace": {"t": "x"}})


def test_build_uncompressed() -> None:
    dsn = Dsn.parse("https://pub@o1.ingest.example:8443/pre/42")
    envelope = sample_envelope()
    req = request.build(envelope, dsn, NOW, None)
    headers = headers_of(req)
    assert req.method == "POST"
    assert req.url == "https://o1.ingest.example:8443/pre/api/42/envelope/"
    assert req.target == "/pre/api/42/envelope/"
    assert headers["X-Sentry-Auth"] == dsn.auth_header(CLIENT)
    assert "sentry_key=pub" in headers["X-Sentry-Auth"]
    assert headers["Content-Type"] == "application/x-sentry-envelope"
    assert headers["User-Agent"] == CLIENT
    assert headers["Host"] == "o1.ingest.example:8443"
    assert headers["Content-Length"] == str(len(req.body))
    assert "Content-Encoding" not in headers
    assert req.encoding is None
    assert req.raw_size == len(req.body)
    sent = Envelope.deserialize(req.body)
    assert sent.items == envelope.items


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_heads_rendered_once_are_the_bytes_of_the_full_rendering(encoding: str | None) -> None:
    dsn = Dsn.parse("https://pub:secret@o1.ingest.example:8443/pre/42")
    heads = request.Heads(dsn, CLIENT)
    req = request.build(sample_envelope(), dsn, NOW, encoding, threshold=0, heads=heads)
    assert req.head == proxy.request_head(req, dsn, None)  # same bytes as rendering it all
    assert req.head.endswith(b"Content-Length: %d\r\n\r\n" % len(req.body)) == (not encoding)
    alone = request.build(sample_envelope(), dsn, NOW, None)  # without Heads: made for it
    assert alone.head == proxy.request_head(alone, dsn, None)


def test_build_compressed_only_above_threshold() -> None:
    dsn = Dsn.parse("https://pub@h/1")
    envelope = sample_envelope()
    req = request.build(envelope, dsn, NOW, "gzip", threshold=1024)
    headers = headers_of(req)
    assert headers["Content-Encoding"] == "gzip"
    assert req.encoding == "gzip"
    assert headers["Content-Length"] == str(len(req.body))
    raw = compression.decompress(req.body, "gzip")
    assert len(raw) == req.raw_size > len(req.body)
    assert Envelope.deserialize(raw).items == envelope.items
    small = request.build(Envelope({}, [Item.session({})]), dsn, NOW, "gzip", threshold=1024)
    assert "Content-Encoding" not in headers_of(small)
    assert small.encoding is None
    everything = request.build(Envelope({}, [Item.session({})]), dsn, NOW, "deflate", threshold=0)
    assert headers_of(everything)["Content-Encoding"] == "deflate"
    assert compression.decompress(everything.body, "deflate").startswith(b"{")


def test_build_with_level() -> None:
    dsn = Dsn.parse("https://pub@h/1")
    fast = request.build(sample_envelope(), dsn, NOW, "gzip", level=1, threshold=0)
    assert compression.decompress(fast.body, "gzip")


def test_sent_at_is_stamped_from_now_and_not_stored() -> None:
    dsn = Dsn.parse("https://pub:sec@h/1")
    envelope = sample_envelope()
    before = envelope.serialize()
    req = request.build(envelope, dsn, 1_700_000_000.123456, None)
    sent = Envelope.deserialize(req.body)
    assert sent.headers["sent_at"] == "2023-11-14T22:13:20.123456Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", sent.headers["sent_at"])
    assert sent.headers["event_id"] == envelope.headers["event_id"]
    assert sent.headers["trace"] == {"t": "x"}
    assert "sent_at" not in envelope.headers
    assert envelope.serialize() == before
    assert "sentry_secret=sec" in headers_of(req)["X-Sentry-Auth"]


def test_sent_at_replaces_an_old_one() -> None:
    envelope = Envelope({"sent_at": "1999-01-01T00:00:00Z"}, [Item.session({})])
    req = request.build(envelope, Dsn.parse("https://k@h/1"), 0.0, None)
    assert Envelope.deserialize(req.body).headers["sent_at"] == "1970-01-01T00:00:00.000000Z"
    assert envelope.headers["sent_at"] == "1999-01-01T00:00:00Z"


def test_rfc3339_is_utc() -> None:
    text = request.rfc3339(86400.5)
    assert text == "1970-01-02T00:00:00.500000Z"
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert parsed.timestamp() == 86400.5


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, request.Outcome.DELIVERED),
        (202, request.Outcome.DELIVERED),
        (299, request.Outcome.DELIVERED),
        (429, request.Outcome.RATE_LIMITED),
        (413, request.Outcome.TOO_LARGE),
        (400, request.Outcome.SEND_ERROR),
        (401, request.Outcome.SEND_ERROR),
        (403, request.Outcome.SEND_ERROR),
        (500, request.Outcome.SEND_ERROR),
        (503, request.Outcome.SEND_ERROR),
        (301, request.Outcome.SEND_ERROR),
        (199, request.Outcome.SEND_ERROR),
        (300, request.Outcome.SEND_ERROR),
    ],
)
def test_classify(status: int, outcome: request.Outcome) -> None:
    assert request.classify(status) is outcome


# -- proxy -------------------------------------------------------------------------------------


def select(dsn: str, environ: dict[str, str], **options: object) -> proxy.Proxy | None:
    return proxy.select(Dsn.parse(dsn, **options), environ)


def test_no_proxy_by_default() -> None:
    assert select("https://k@h/1", {}) is None


def test_proxy_from_environment_per_scheme() -> None:
    env = {"HTTPS_PROXY": "http://secure:3128", "HTTP_PROXY": "http://plain:8080"}
    assert select("https://k@h/1", env) == proxy.Proxy("http", "secure", 3128)
    assert select("http://k@h/1", env) == proxy.Proxy("http", "plain", 8080)


def test_lower_case_environment_wins() -> None:
    env = {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"}
    assert select("https://k@h/1", env) == proxy.Proxy("http", "lower", 1)


def test_all_proxy_and_bare_host() -> None:
    assert select("https://k@h/1", {"ALL_PROXY": "proxy.local:3128"}) == proxy.Proxy(
        "http", "proxy.local", 3128
    )
    assert select("https://k@h/1", {"https_proxy": "p"}) == proxy.Proxy("http", "p", 80)


def test_option_wins_over_environment() -> None:
    env = {"HTTPS_PROXY": "http://env:1"}
    chosen = select("https://k@h/1", env, https_proxy="https://opt:2")
    assert chosen == proxy.Proxy("https", "opt", 2)
    # http_proxy does not apply to an https DSN
    assert select("https://k@h/1", env, http_proxy="http://opt:3") == proxy.Proxy("http", "env", 1)


def test_empty_option_disables_proxy() -> None:
    env = {"HTTPS_PROXY": "http://env:1", "HTTP_PROXY": "http://env:1"}
    assert select("https://k@h/1", env, https_proxy="") is None
    assert select("http://k@h/1", env, http_proxy="") is None
    assert select("https://k@h/1?https_proxy=", env) is None


def test_trust_env_false_ignores_environment() -> None:
    env = {"HTTPS_PROXY": "http://env:1"}
    assert select("https://k@h/1", env, trust_env=False) is None
    assert select("https://k@h/1", env, trust_env=False, https_proxy="http://o:9") == proxy.Proxy(
        "http", "o", 9
    )


def test_no_proxy_in_environment() -> None:
    env = {"HTTPS_PROXY": "http://env:1", "NO_PROXY": "localhost,.internal.example"}
    assert select("https://k@localhost/1", env) is None
    assert select("https://k@sentry.internal.example/1", env) is None
    assert select("https://k@other.example/1", env) is not None
    # an explicit option is not subject to NO_PROXY
    assert select("https://k@localhost/1", env, https_proxy="http://o:1") is not None


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "expected"),
    [
        ("example.com", 443, "example.com", True),
        ("sub.example.com", 443, "example.com", True),
        ("sub.example.com", 443, ".example.com", True),
        ("example.com", 443, ".example.com", True),
        ("notexample.com", 443, "example.com", False),
        ("example.com.evil", 443, "example.com", False),
        ("EXAMPLE.com", 443, "example.COM", True),
        ("anything", 1, "*", True),
        ("a.com", 443, " b.com , a.com ", True),
        ("a.com", 443, ",,", False),
        ("a.com", 443, "", False),
        ("a.com", 443, "a.com:443", True),
        ("a.com", 8443, "a.com:443", False),
        ("::1", 9000, "::1", True),
        ("[::1]", 9000, "[::1]", True),
        ("::1", 9000, "[::1]:9000", True),
        ("::1", 9001, "[::1]:9000", False),
        ("10.0.0.1", 80, "10.0.0.1", True),
        ("10.0.0.12", 80, "10.0.0.1", False),
    ],
)
def test_no_proxy_matching(host: str, port: int, no_proxy: str, expected: bool) -> None:
    assert proxy.bypassed(host, port, no_proxy) is expected


def test_proxy_parse_and_credentials() -> None:
    parsed = proxy.Proxy.parse("http://us%40er:p%3Ass@proxy:3128")
    assert (parsed.host, parsed.port) == ("proxy", 3128)
    assert parsed.username == "us@er" and parsed.password == "p:ss"
    assert "p:ss" not in repr(parsed) and "us@er" not in repr(parsed)
    assert parsed.authorization() == "Basic dXNAZXI6cDpzcw=="
    assert proxy.Proxy.parse("https://proxy").port == 443
    assert proxy.Proxy.parse("http://proxy").authorization() is None
    assert proxy.Proxy.parse("http://user@proxy").authorization() == "Basic dXNlcjo="


@pytest.mark.parametrize("url", ["socks5://p:1080", "http://", "http://p:notaport", "p:3128x"])
def test_proxy_parse_rejects(url: str) -> None:
    with pytest.raises(DsnError):
        proxy.Proxy.parse(url)


# -- HTTP/1.1 response parser ------------------------------------------------------------------


def feed_bytewise(
    data: bytes, parser: http11.ResponseParser | None = None
) -> http11.Response | None:
    parser = parser or http11.ResponseParser()
    result = None
    for i in range(len(data)):
        result = parser.feed(data[i : i + 1])
        if result is not None:
            assert i == len(data) - 1, "finished before the end of the response"
    return result


def both_ways(data: bytes) -> http11.Response:
    whole = http11.ResponseParser().feed(data)
    bytewise = feed_bytewise(data)
    assert whole is not None and bytewise is not None
    assert whole == bytewise
    quick = http11.quick_response(data)  # the fast read, where it applies, gives the same
    assert quick is None or quick == (whole, b"")
    return whole


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204\r\n\r\n",
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\nContent-Length: 1\r\n\r\nx",
    ],
)
def test_the_quick_read_of_a_whole_answer_is_the_parser_s_and_keeps_what_follows(
    data: bytes,
) -> None:
    parser = http11.ResponseParser()
    whole = parser.feed(data + b"HTTP/1.1 200")
    assert http11.quick_response(data + b"HTTP/1.1 200") == (whole, b"HTTP/1.1 200")
    assert parser.rest() == b"HTTP/1.1 200"
    assert http11.quick_response(data[:-1]) is None  # not all there yet: the parser waits


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
        b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 20x OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n bad: header\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_the_quick_read_leaves_anything_unusual_to_the_parser(data: bytes) -> None:
    assert http11.quick_response(data) is None


def test_the_quick_read_remembers_a_head_and_reads_repeats_of_it_the_same() -> None:
    memo = http11.HeadMemo()
    first = b"HTTP/1.1 200 OK\r\nDate: A\r\nContent-Length: 4\r\n\r\n"
    answers = [first + b"abcd", first + b"wxyz"]  # same head, other bodies
    answers.append(first.replace(b"Date: A", b"Date: B") + b"1234")  # a new head
    answers.append(b"HTTP/1.1 429 Too Many\r\nRetry-After: 9\r\nContent-Length: 0\r\n\r\n")
    for data in answers:
        expected = http11.quick_response(data + b"HTTP/")
        assert expected is not None
        assert http11.quick_response(data + b"HTTP/", memo) == expected
        assert memo.head == data[: data.index(b"\r\n\r\n")]
    assert http11.quick_response(first + b"ab", memo) is None  # the body is not all there
    unusual = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert http11.quick_response(unusual, memo) is None
    assert http11.quick_response(unusual, memo) is None  # remembered as one for the parser


def test_a_head_that_only_begins_like_the_remembered_one_is_read_afresh() -> None:
    memo = http11.HeadMemo()
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 4"
    assert http11.quick_response(first + b"\r\n\r\nabcd", memo) is not None
    longer = first + b"0\r\n\r\n" + b"x" * 40  # Content-Length: 40, not 4
    found = http11.quick_response(longer, memo)
    assert found is not None and found[0].body == b"x" * 40 and found[1] == b""
    more = first + b"\r\nRetry-After: 9\r\n\r\nabcd"  # one more header line
    found = http11.quick_response(more, memo)
    assert found is not None and found[0].header("retry-after") == "9"
    assert memo.head == more[: more.index(b"\r\n\r\n")]
    response = found[0]
    assert type(response) is http11.Response and response._fields[0] == "status"


def test_content_length() -> None:
    response = both_ways(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
        b'{"id":"abc"}\n'
    )
    assert response.status == 200
    assert response.reason == "OK"
    assert response.body == b'{"id":"abc"}\n'
    assert response.keep_alive
    assert response.header("content-type") == "application/json"
    assert response.header("CONTENT-LENGTH") == "13"
    assert response.header("missing") is None


def test_header_values_are_stripped_and_kept_in_order() -> None:
    response = both_ways(
        b"HTTP/1.1 429 Too Many Requests\r\nX-Sentry-Rate-Limits:   60:error:org  \r\n"
        b"Retry-After: 60\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 0\r\n\r\n"
    )
    assert response.status == 429
    assert response.reason == "Too Many Requests"
    assert response.header("x-sentry-rate-limits") == "60:error:org"
    assert [v for k, v in response.headers if k == "X-A"] == ["1", "2"]
    assert response.header("X-A") == "1"


def test_status_line_without_reason() -> None:
    response = both_ways(b"HTTP/1.1 204\r\n\r\n")
    assert (response.status, response.reason, response.body) == (204, "", b"")


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        # the framing's lines ended with bare LFs (but one), as the head's may be
        b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"
        b"5\nhello\n7;ext=1\r\n, world\n0\nX-Trailer: 1\n\n",
    ],
)
def test_chunked(data: bytes) -> None:
    response = both_ways(data)
    assert response.body == b"hello, world"
    assert response.keep_alive


@pytest.mark.parametrize("ending", [b"\n", b"\r\n\n", b"\n\r\n"])
def test_a_head_whose_lines_end_with_a_bare_lf_is_read(ending: bytes) -> None:
    """RFC 9112 section 2.2: a recipient may read a bare LF as a line end (http.client
    does, so requests and urllib3 read such a server's answers): so do we, never the quick
    read, which leaves any head that is not CRLF throughout to the parser."""
    data = b"HTTP/1.1 429 Too Many\nRetry-After: 9\r\nContent-Length: 2" + ending
    data += b"" if ending != b"\n" else b"\n"  # (a lone b"\n" ends the last line only)
    data += b"{}"
    response = both_ways(data)
    assert (response.status, response.reason, response.body) == (429, "Too Many", b"{}")
    assert response.headers == (("Retry-After", "9"), ("Content-Length", "2"))
    assert http11.quick_response(data) is None


def test_a_bare_lf_answer_before_a_crlf_one_is_two_answers() -> None:
    """Pipelined: the first answer's head ends at its own empty line, not at the next
    answer's CRLF one (which read them as one answer, with the second one's headers)."""
    first = b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}"
    second = b"HTTP/1.1 429 Too Many\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n"
    assert http11.quick_response(first + second) is None  # the parser reads the first
    parser = http11.ResponseParser()
    response = parser.feed(first + second)
    assert response is not None
    assert (response.status, response.reason, response.header("retry-after")) == (200, "OK", None)
    assert parser.rest() == second
    assert http11.quick_response(parser.rest()) == (
        http11.ResponseParser().feed(second),
        b"",
    )


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\r\n\r\n",
    ],
)
def test_a_bare_cr_in_a_head_is_a_protocol_error(head: bytes) -> None:
    assert http11.quick_response(head) is None
    with pytest.raises(HttpProtocolError, match="bare CR"):
        http11.ResponseParser().feed(head)
    with pytest.raises(HttpProtocolError, match="bare CR"):
        feed_bytewise(head)


def test_chunked_wins_over_content_length() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    assert both_ways(data).body == b"abc"


def test_close_delimited_body_needs_eof() -> None:
    parser = http11.ResponseParser()
    assert feed_bytewise(b"HTTP/1.1 200 OK\r\n\r\nsome body", parser) is None
    response = parser.eof()
    assert response.body == b"some body"
    assert not response.keep_alive
    assert parser.eof() is response
    assert parser.feed(b"more") is response


def test_interim_100_continue_is_skipped() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    response = both_ways(data)
    assert response.status == 200
    assert response.body == b"ok"
    assert response.header("X") is None


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nconnection: upgrade\r\nContent-Length: 0\r\n\r\n", True),
    ],
)
def test_keep_alive_rules(head: bytes, keep_alive: bool) -> None:
    assert both_ways(head).keep_alive is keep_alive


def test_no_body_statuses_and_head_requests() -> None:
    assert both_ways(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n").body == b""
    parser = http11.ResponseParser(no_body=True)
    response = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    assert response is not None and response.body == b""


def test_body_is_kept_only_up_to_a_bound() -> None:
    size = http11.MAX_KEPT_BODY + 1000
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    response = http11.ResponseParser().feed(data)
    assert response is not None
    assert response.body == b"x" * http11.MAX_KEPT_BODY


def test_bytes_after_the_response_are_not_part_of_it() -> None:
    parser = http11.ResponseParser()
    response = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 500")
    assert response is not None and response.body == b"ok"


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 99 Low\r\n\r\n",
        b"HTTP/1.1 1000 High\r\n\r\n",
        b"HTTP/1.1 0200 OK\r\nContent-Length: 0\r\n\r\n",  # not three digits: no 200
        b"HTTP/1.1 00200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 020 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 \xb200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name : x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
    ],
)
def test_protocol_errors(data: bytes) -> None:
    with pytest.raises(HttpProtocolError):
        http11.ResponseParser().feed(data)
    with pytest.raises(HttpProtocolError):
        feed_bytewise(data)


def test_oversized_headers() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * (http11.MAX_HEAD + 10)
    parser = http11.ResponseParser()
    with pytest.raises(HttpProtocolError, match="headers"):
        parser.feed(head)
    # the same, complete with its blank line, in one piece: still refused
    with pytest.raises(HttpProtocolError, match="headers"):
        http11.ResponseParser().feed(head + b"\r\n\r\n")


def test_headers_just_under_the_bound_are_fine() -> None:
    head = b"HTTP/1.1 204 No Content\r\nX-Big: "
    head += b"a" * (http11.MAX_HEAD - len(head)) + b"\r\n\r\n"
    response = http11.ResponseParser().feed(head)
    assert response is not None and response.status == 204


def test_a_head_in_small_pieces_is_searched_on_from_where_the_last_search_ended() -> None:
    """A head trickled in byte by byte is not searched again from its start on every piece
    (a server could make that cost seconds of CPU with a long head): the search goes on
    from the last two bytes seen, and still finds an empty line split between pieces."""
    parser = http11.ResponseParser()
    head = b"HTTP/1.1 200 OK\r\n" + b"X-A: b\n" * 1000 + b"Content-Length: 0\r"
    for i in range(len(head)):
        assert parser.feed(head[i : i + 1]) is None
        assert parser._scanned == max(0, i + 1 - 2)
    assert parser.feed(b"\n") is None
    response = parser.feed(b"\r\n")
    assert response is not None and len(response.headers) == 1001


@pytest.mark.parametrize("ending", [b"\r\n\r\n", b"\n\n", b"\r\n\n", b"\n\r\n"])
def test_a_head_of_max_head_bytes_is_read_whole_or_in_pieces(ending: bytes) -> None:
    start = b"HTTP/1.1 204 No Content\r\nX-Big: "
    head = start + b"a" * (http11.MAX_HEAD - len(start)) + ending
    assert both_ways(head).status == 204
    with pytest.raises(HttpProtocolError, match="headers"):
        http11.ResponseParser().feed(head[: -len(ending)] + b"a" + ending)
    with pytest.raises(HttpProtocolError, match="headers"):
        feed_bytewise(head[: -len(ending)] + b"a" + ending)


def test_a_chunk_size_line_of_1024_bytes_is_read_whole_or_in_pieces() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    size = b"1;" + b"x" * 1022
    assert both_ways(head + size + b"\r\nz\r\n0\r\n\r\n").body == b"z"
    with pytest.raises(HttpProtocolError, match="too long"):
        http11.ResponseParser().feed(head + size + b"x\r\nz\r\n0\r\n\r\n")
    with pytest.raises(HttpProtocolError, match="too long"):
        feed_bytewise(head + size + b"x\r\nz\r\n0\r\n\r\n")


def test_a_trailer_line_over_max_head_is_refused_whole_or_in_pieces() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n"
    data += b"X-T: " + b"t" * http11.MAX_HEAD + b"\r\n\r\n"
    with pytest.raises(HttpProtocolError, match="trailer"):
        http11.ResponseParser().feed(data)
    parser = http11.ResponseParser()
    with pytest.raises(HttpProtocolError, match="trailer"):
        for i in range(0, len(data), 4096):
            parser.feed(data[i : i + 4096])


def test_a_bare_cr_in_a_chunk_size_line_is_a_protocol_error() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\r\nz\r\n0\r\n\r\n"
    with pytest.raises(HttpProtocolError, match="bare CR"):
        http11.ResponseParser().feed(data)
    with pytest.raises(HttpProtocolError, match="bare CR"):
        feed_bytewise(data)


def test_oversized_chunk_size_line() -> None:
    parser = http11.ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(HttpProtocolError):
        parser.feed(b"1" * 2000)


def test_eof_in_the_middle() -> None:
    with pytest.raises(HttpProtocolError, match="headers"):
        parser = http11.ResponseParser()
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Le")
        parser.eof()
    with pytest.raises(HttpProtocolError, match="body"):
        parser = http11.ResponseParser()
        assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort") is None
        parser.eof()
    with pytest.raises(HttpProtocolError, match="body"):
        parser = http11.ResponseParser()
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
        parser.eof()
    with pytest.raises(HttpProtocolError):
        http11.ResponseParser().eof()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 17))
def test_property_garbage_only_raises_protocol_error(data: bytes, step: int) -> None:
    parser = http11.ResponseParser()
    try:
        for i in range(0, len(data), step):
            parser.feed(data[i : i + step])
        parser.eof()
    except HttpProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=300),
    chunks=st.lists(st.integers(1, 50), max_size=10),
    step=st.integers(1, 40),
)
def test_property_chunked_body_reassembles(body: bytes, chunks: list[int], step: int) -> None:
    encoded = b""
    rest = body
    for size in chunks:
        piece, rest = rest[:size], rest[size:]
        if piece:
            encoded += b"%x\r\n" % len(piece) + piece + b"\r\n"
    if rest:
        encoded += b"%X\r\n" % len(rest) + rest + b"\r\n"
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + encoded + b"0\r\n\r\n"
    parser = http11.ResponseParser()
    result = None
    for i in range(0, len(data), step):
        result = parser.feed(data[i : i + step])
    assert result is not None and result.body == body


def test_render_head() -> None:
    head = http11.render_head("POST", "/api/1/envelope/", [("Host", "h"), ("Content-Length", "3")])
    assert head == b"POST /api/1/envelope/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"


@pytest.mark.parametrize(
    "headers",
    [[("X", "a\r\nInjected: 1")], [("X", "a\nb")], [("X\r\nY", "1")], [("X", "a\rb")]],
)
def test_render_head_refuses_cr_lf(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        http11.render_head("POST", "/", headers)


def test_request_and_parser_work_together() -> None:
    dsn = Dsn.parse("http://k@127.0.0.1:9/1")
    req = request.build(Envelope.for_event({"m": 1}), dsn, NOW, None)
    head = http11.render_head(req.method, req.target, list(req.headers))
    assert head.startswith(b"POST /api/1/envelope/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
    assert b"\r\nContent-Length: %d\r\n" % len(req.body) in head
    json.loads(Envelope.deserialize(req.body).items[0].payload)


@pytest.mark.parametrize("size", [b"0x10", b"1_0", b"+5", b"-1", b"", b"g"])
def test_chunk_size_must_be_plain_hex(size: bytes) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    with pytest.raises(HttpProtocolError, match="chunk size"):
        http11.ResponseParser().feed(head + size + b"\r\nxxxx\r\n0\r\n\r\n")
