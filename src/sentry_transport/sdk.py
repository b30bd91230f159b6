"""A drop-in transport for the official ``sentry_sdk``: one line in ``sentry_sdk.init``.

    import sentry_sdk
    from sentry_transport.sdk import SentryTransport

    sentry_sdk.init(dsn="https://key@o1.ingest.sentry.io/42", transport=SentryTransport)

The sdk constructs the class itself with its options dict. The DSN comes from those options
(``dsn=`` or ``SENTRY_DSN``) and may carry our prefix and querystring
(``sync+https://key@host/42?timeout=3``): the sdk only parses the DSN inside its transport's
constructor, which this class replaces, so a prefixed DSN is accepted there. In code:
``SentryTransport.using("sync", timeout=2)`` (or ``transport(backend="sync", timeout=2)``)
is a configured subclass; ``using(dsn=...)`` gives us a DSN of our own while the sdk keeps a
plain one (for integrations that parse ``options["dsn"]`` themselves, such as OTLP).

Options, the later winning: our defaults < the sdk's options that mean the same thing
(proxies, TLS files, client reports, shutdown timeout, queue size, compression experiments)
< the DSN's querystring < ``using(**options)``. The backend: ``using(backend)`` > the DSN's
prefix > ``threaded``.

Envelopes are converted item by item, without serializing: a JSON payload stays an object
(encoded later on our worker), bytes stay bytes, every header is kept. No method raises into
the application once the transport is built; a bad DSN or option raises at ``init`` (as the
sdk's own transport does for a bad DSN).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast
from urllib.parse import parse_qsl, urlsplit

from .core.errors import ConfigurationError, DsnError, MissingDependencyError

try:
    import sentry_sdk.transport as _sdk_transport
    from sentry_sdk.consts import DEFAULT_QUEUE_SIZE as _SDK_QUEUE_SIZE
    from sentry_sdk.envelope import Envelope as SdkEnvelope
    from sentry_sdk.envelope import Item as SdkItem
    from sentry_sdk.envelope import PayloadRef
    from sentry_sdk.utils import BadDsn
    from sentry_sdk.utils import Dsn as SdkDsn
except ImportError:  # pragma: no cover - exercised without sentry_sdk installed
    raise MissingDependencyError("sentry_sdk", "sentry-sdk", "sentry_transport.sdk") from None

from ._factory import DEFAULT_BACKEND, make_transport
from ._transport import Transport as OurTransport
from .core import compress
from .core.categories import outcomes
from .core.dsn import Dsn
from .core.envelope import Envelope, Item
from .core.options import COMPRESSIONS, TransportOptions
from .registry import find as _find_backend

__all__ = ["SentryTransport", "to_envelope", "to_item", "transport"]

log = logging.getLogger("sentry_transport")

# A reason the core's list does not know yet (the sdk adds new ones, e.g. "callback_error")
# is passed through to the server when it looks like one: Relay keeps a client discard's
# reason as an opaque string. Anything else is counted as an internal error.
_FIRST_FLUSH = 0.1  # seconds before the sdk's flush callback ("N pending events") is called


# -- envelopes --------------------------------------------------------------------------------


def to_item(item: SdkItem) -> Item:
    """Our ``Item`` for an sdk ``Item``: the same headers, the payload not re-encoded."""
    payload = item.payload
    headers = item.headers
    if isinstance(payload, PayloadRef):
        if payload.bytes is not None:  # bytes, or JSON the sdk already encoded
            return Item(headers, payload.bytes)
        if payload.json is not None:
            return Item(headers, json=payload.json)
        if payload.path is not None:  # an attachment from a file: read it now
            return Item(headers, payload.get_bytes())
        return Item(headers, b"")
    return Item(headers, payload)  # the sdk always wraps payloads; a str or bytes just in case


def to_envelope(envelope: SdkEnvelope) -> Envelope:
    """Our ``Envelope`` for an sdk ``Envelope`` (headers and items mapped, nothing encoded)."""
    return Envelope(envelope.headers, [to_item(item) for item in envelope.items])


# -- options ----------------------------------------------------------------------------------


def _query(text: str) -> dict[str, str]:
    """The DSN's querystring options (the DSN was already validated by ``Dsn.parse``)."""
    return dict(parse_qsl(urlsplit(text).query, keep_blank_values=True))


def _sdk_layer(options: Mapping[str, Any], scheme: str) -> dict[str, Any]:
    """Our options for what the sdk's options say, keeping the sdk's meaning of each."""
    out: dict[str, Any] = {}
    http_proxy, https_proxy = options.get("http_proxy"), options.get("https_proxy")
    if http_proxy is not None:
        out["http_proxy"] = http_proxy
    if https_proxy is not None:
        out["https_proxy"] = https_proxy
    elif scheme == "https" and http_proxy:
        out["https_proxy"] = http_proxy  # the sdk's http_proxy serves https too, when alone
    if scheme == "https":
        # The sdk's trust store, so that switching transports changes no TLS decision.
        out["ca_certs"] = (
            options.get("ca_certs")
            or os.environ.get("SSL_CERT_FILE")
            or os.environ.get("REQUESTS_CA_BUNDLE")
            or _certifi()
        )
        cert_file = options.get("cert_file") or os.environ.get("CLIENT_CERT_FILE")
        key_file = options.get("key_file") or os.environ.get("CLIENT_KEY_FILE")
        if cert_file:
            out["cert_file"] = cert_file
        if key_file:
            out["key_file"] = key_file
    if "send_client_reports" in options:
        out["send_client_reports"] = bool(options["send_client_reports"])
    if options.get("shutdown_timeout") is not None:
        out["shutdown_timeout"] = options["shutdown_timeout"]
    size = options.get("transport_queue_size")
    if size is not None and size != _SDK_QUEUE_SIZE:  # the sdk's 100 is its own limit
        out["queue_size"] = size
    out.update(_compression(options.get("_experiments") or {}))
    for name, why in (
        ("socket_options", "set no socket options"),
        ("proxy_headers", "put proxy credentials in the proxy URL"),
    ):
        if options.get(name):
            log.warning("SentryTransport ignores sentry_sdk's %s: %s", name, why)
    return out


def _certifi() -> str | None:
    try:
        import certifi  # a dependency of sentry_sdk
    except ImportError:  # pragma: no cover
        return None
    where: str = certifi.where()
    return where


def _compression(experiments: Mapping[str, Any]) -> dict[str, Any]:
    """``_experiments={"transport_compression_algo": ..., "transport_compression_level": ...}``
    as our ``compression``/``compression_level`` (given ones only; level 0 = none)."""
    out: dict[str, Any] = {}
    algo = experiments.get("transport_compression_algo")
    level = experiments.get(
        "transport_compression_level", experiments.get("transport_zlib_compression_level")
    )
    if algo is not None:
        name = str(algo).lower()
        if name == "br" and "br" not in compress.available():
            log.warning("br compression needs the brotli library; using gzip")
            name, level = "gzip", None
        elif name not in COMPRESSIONS:
            log.warning("unknown compression %r in sentry_sdk's _experiments: none", algo)
            name = "none"
        out["compression"] = name
    elif level is not None:
        out["compression"] = "gzip"  # the sdk's meaning of a level alone
    if level is not None:
        if level == 0:
            out["compression"] = "none"
        else:
            out["compression_level"] = level
    return out


def _valid_only(layer: Mapping[str, Any]) -> dict[str, Any]:
    """The sdk options our parsers accept; the others are logged and left out (the sdk took
    them, so they must not make ``sentry_sdk.init`` fail here)."""
    good: dict[str, Any] = {}
    for name, value in layer.items():
        try:
            TransportOptions.parse({name: value})
        except DsnError as exc:
            log.warning("SentryTransport ignores a sentry_sdk option: %s", exc)
            continue
        good[name] = value
    return good


def _sdk_dsn(dsn: Dsn, org_id: Any) -> SdkDsn:
    try:
        return SdkDsn(dsn.to_string(reveal_secret=True), org_id)
    except BadDsn as exc:
        raise DsnError(f"sentry_sdk cannot read this DSN: {exc}") from None


# -- the transport ----------------------------------------------------------------------------


class SentryTransport(_sdk_transport.Transport):
    """``sentry_sdk.init(dsn=..., transport=SentryTransport)``: the sdk's envelopes delivered
    by a sentry_transport backend (``threaded`` unless the DSN's prefix or ``using`` says).

    ``sentry_sdk.get_client().transport.stats()`` shows our books; ``.inner`` is the backend.
    """

    backend: ClassVar[str | None] = None  # set by using(): wins over the DSN's prefix
    dsn_override: ClassVar[str | None] = None  # set by using(dsn=...): wins over the sdk's
    overrides: ClassVar[Mapping[str, Any]] = {}  # set by using(**options): win over all

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = options if options is not None else {}
        raw = self.dsn_override or self.options.get("dsn")
        if not raw:
            raise ConfigurationError("SentryTransport needs a DSN (sentry_sdk's dsn option)")
        text = str(raw)
        base = Dsn.parse(text)  # a DsnError names what is wrong
        layer = _valid_only(_sdk_layer(self.options, base.scheme))
        dsn = Dsn.parse(base, **{**layer, **_query(text), **self.overrides})
        dsn = dataclasses.replace(dsn, backend=self.backend or base.backend or DEFAULT_BACKEND)
        self.parsed_dsn = _sdk_dsn(dsn, self.options.get("org_id"))
        self.inner: OurTransport = make_transport(dsn)
        try:  # our own log lines must not come back as breadcrumbs or events
            from sentry_sdk.integrations.logging import ignore_logger

            ignore_logger("sentry_transport")
        except ImportError:  # pragma: no cover
            pass

    @classmethod
    def using(
        cls, backend: str | None = None, /, *, dsn: str | None = None, **options: Any
    ) -> type[SentryTransport]:
        """A subclass for ``sentry_sdk.init(transport=...)`` with a backend (``"sync"``,
        ``"asyncio"``, ...), a DSN of its own and options, checked now:
        ``sentry_sdk.init(dsn=DSN, transport=SentryTransport.using("sync", timeout=2))``."""
        if backend is not None:
            _find_backend(backend)  # an unknown prefix fails here, not inside init
        if dsn is not None:
            Dsn.parse(dsn)
        TransportOptions.parse(options)
        attributes = {
            "backend": backend or cls.backend,
            "dsn_override": dsn or cls.dsn_override,
            "overrides": {**cls.overrides, **options},
        }
        return cast("type[SentryTransport]", type(cls.__name__, (cls,), attributes))

    # -- the sdk's interface --------------------------------------------------------------------

    def capture_envelope(self, envelope: SdkEnvelope) -> None:
        """Hand the sdk's envelope to the backend (converted, not serialized); never raises.
        An item that cannot be converted is counted lost (``internal_sdk_error``), the
        rest go."""
        try:
            items, bad = [], []
            for item in envelope.items:
                try:
                    items.append(to_item(item))
                except Exception:
                    bad.append(item)
            ours = Envelope(envelope.headers, items)
        except Exception:
            log.debug("SentryTransport: cannot convert an envelope", exc_info=True)
            self._lose_items("internal_sdk_error", getattr(envelope, "items", ()))
            return
        if bad:
            log.debug("SentryTransport: %d item(s) could not be converted", len(bad))
            self._lose_items("internal_sdk_error", bad)
            if not items:
                return
        try:
            self.inner.capture_envelope(ours)
        except Exception:
            log.debug("SentryTransport: capture failed", exc_info=True)

    def flush(
        self, timeout: float | None = None, callback: Callable[..., Any] | None = None
    ) -> None:
        """Wait at most ``timeout`` seconds for what was captured; the sdk's ``callback``
        (``callback(pending, timeout)``) is called when that takes more than 0.1 s."""
        try:
            seconds = self.inner_options.shutdown_timeout if timeout is None else float(timeout)
            seconds = max(0.0, seconds)
            deadline = time.monotonic() + seconds
            if self.inner.flush(min(_FIRST_FLUSH, seconds)):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if callback is not None:
                try:
                    callback(self._pending(), seconds)
                except Exception:
                    log.debug("SentryTransport: the flush callback failed", exc_info=True)
            self.inner.flush(max(0.0, deadline - time.monotonic()))
        except Exception:
            log.debug("SentryTransport: flush failed", exc_info=True)

    def kill(self) -> None:
        """Stop now: what is not delivered yet is counted lost and in-flight requests are
        aborted (``client.close()`` flushes before it calls this)."""
        try:
            self.inner.close(0.0)
        except Exception:
            log.debug("SentryTransport: close failed", exc_info=True)

    def is_healthy(self) -> bool:
        """False while the backend cannot deliver (rate limited, failing, or its queue full)."""
        try:
            return self.inner.is_healthy()
        except Exception:
            return True

    def record_lost_event(
        self,
        reason: str,
        data_category: str | None = None,
        item: SdkItem | None = None,
        *,
        quantity: int = 1,
    ) -> None:
        """Count a loss the sdk made (sampling, before_send, ...): by ``item`` (its
        categories and quantities, spans of a transaction included) or by category."""
        try:
            if item is not None:
                try:
                    counted = outcomes(to_item(item))
                except Exception:  # an item we cannot read still counts once
                    counted = [(str(getattr(item, "data_category", None) or "default"), 1)]
            elif data_category is not None:
                counted = [(str(data_category), int(quantity))]
            else:
                return
            for category, count in counted:
                self._lose(str(reason), category, count)
        except Exception:
            log.debug("SentryTransport: cannot count a lost event", exc_info=True)

    # -- ours -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The backend's books: ``accepted``, ``delivered``, ``lost`` {reason: {category: n}}."""
        return self.inner.stats()

    async def aflush(self, timeout: float | None = None) -> bool:
        """``await`` a flush on an event loop (asyncio backends), else in a thread."""
        method = getattr(self.inner, "aflush", None)
        if method is not None:
            return bool(await method(timeout))
        import asyncio

        return await asyncio.to_thread(self.inner.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        """``await`` a close on an event loop (asyncio backends), else in a thread."""
        method = getattr(self.inner, "aclose", None)
        if method is not None:
            await method(timeout)
            return
        import asyncio

        await asyncio.to_thread(self.inner.close, timeout)

    @property
    def inner_options(self) -> TransportOptions:
        """The options the backend runs with (after every layer was applied)."""
        dsn = self.inner.dsn
        return dsn.options if dsn is not None else TransportOptions()

    def _pending(self) -> int:
        stats = self.inner.stats()
        return int(stats.get("queued", 0)) + int(stats.get("in_flight", 0))

    def _lose_items(self, reason: str, items: Any) -> None:
        try:
            for item in items:
                self.record_lost_event(reason, item=item)
        except Exception:  # not even a list of items: nothing to count
            log.debug("SentryTransport: cannot count a lost envelope", exc_info=True)

    def _lose(self, reason: str, category: str, quantity: int) -> None:
        try:  # a reason newer than the spec's list still counts, and reaches the server
            self.inner.record_lost_event(reason, category, quantity, strict=False)
        except (TypeError, ValueError):  # not shaped like a reason, or a backend without strict
            self.inner.record_lost_event("internal_sdk_error", category, quantity)

    def __repr__(self) -> str:
        return f"<SentryTransport {self.inner!r}>"


def transport(
    backend: str | None = None, *, dsn: str | None = None, **options: Any
) -> type[SentryTransport]:
    """``SentryTransport.using(backend, dsn=..., **options)``: a class for
    ``sentry_sdk.init(transport=...)``."""
    return SentryTransport.using(backend, dsn=dsn, **options)
