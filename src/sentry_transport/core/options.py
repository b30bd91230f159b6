"""Transport options: one typed, immutable object, parsed once.

Every option is a row of ``_SPECS`` (name, parser, default, help). A DSN's querystring and a
caller's keyword arguments go through the same parsers, so ``?timeout=5`` and ``timeout=5``
mean the same thing, and a bad value is one clear ``DsnError`` naming the option.
Precedence: keyword arguments > querystring > defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DsnError

COMPRESSIONS = ("gzip", "deflate", "br", "zstd", "none", "auto")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected 1/0/true/false/yes/no/on/off")


def _number(kind: type, minimum: float, allow_zero: bool) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a number, not a boolean")
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("expected an integer")  # int(1.5) would silently give 1
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        if number < minimum or (number == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"expected a number {bound}")
        return number

    return parse


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value or None


def _proxy(value: Any) -> str | None:
    # "" is meaningful: it disables the proxy (and the environment's) for that scheme.
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a proxy URL string")
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// proxy URL, or '' for no proxy")
    return value


def _compress(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in COMPRESSIONS:
        raise ValueError(f"expected one of {', '.join(COMPRESSIONS)}")
    return value.lower()


def _optional_level(value: Any) -> int | None:
    if value is None or value == "":
        return None
    parsed: int = _number(int, 0, True)(value)
    return parsed


@dataclass(frozen=True)
class _Spec:
    parse: Callable[[Any], Any]
    help: str


_SPECS: dict[str, _Spec] = {
    "timeout": _Spec(_number(float, 0, False), "seconds to wait for connect and for each read"),
    "verify_ssl": _Spec(_bool, "verify the server's TLS certificate and host name"),
    "ca_certs": _Spec(_optional_text, "path to a PEM bundle of trusted CA certificates"),
    "cert_file": _Spec(_optional_text, "path to a PEM client certificate"),
    "key_file": _Spec(_optional_text, "path to the client certificate's private key"),
    "http_proxy": _Spec(_proxy, "proxy URL for http:// DSNs ('' = none, ignore environment)"),
    "https_proxy": _Spec(_proxy, "proxy URL for https:// DSNs ('' = none, ignore environment)"),
    "trust_env": _Spec(_bool, "read HTTP(S)_PROXY / NO_PROXY from the environment"),
    "compression": _Spec(_compress, "body compression"),
    "compression_level": _Spec(_optional_level, "level for the chosen compression"),
    "compression_threshold": _Spec(
        _number(int, 0, True), "bytes below which nothing is compressed"
    ),
    "queue_size": _Spec(_number(int, 1, False), "most envelopes waiting in the queue"),
    "queue_bytes": _Spec(_number(int, 1, False), "most payload bytes waiting in the queue"),
    "max_connections": _Spec(_number(int, 1, False), "most connections open at once"),
    "pipeline_depth": _Spec(
        _number(int, 1, False), "most requests in flight on one connection (1: no pipelining)"
    ),
    "shutdown_timeout": _Spec(_number(float, 0, True), "seconds a clean exit waits to drain"),
    "retry_attempts": _Spec(_number(int, 0, True), "retries after a network error"),
    "retry_deadline": _Spec(
        _number(float, 0, True), "seconds after which an envelope is not retried"
    ),
    "retry_backoff": _Spec(_number(float, 0, True), "first retry delay in seconds (doubles)"),
    "send_client_reports": _Spec(_bool, "send client reports of dropped items"),
    "client_report_interval": _Spec(_number(float, 0, False), "seconds between client reports"),
    "spool_dir": _Spec(_optional_text, "directory of the disk spool (unset: no spool)"),
    "spool_bytes": _Spec(_number(int, 1, False), "most bytes the disk spool holds"),
    "spool_fsync": _Spec(_bool, "fsync each spool file (survives power loss; slower)"),
}


@dataclass(frozen=True)
class TransportOptions:
    """The transport's options, validated. Build one with :meth:`parse` or :meth:`replace`."""

    timeout: float = 5.0
    verify_ssl: bool = True
    ca_certs: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    http_proxy: str | None = field(default=None, repr=False)  # may hold credentials
    https_proxy: str | None = field(default=None, repr=False)
    trust_env: bool = True
    compression: str = "gzip"
    compression_level: int | None = None
    compression_threshold: int = 2048
    queue_size: int = 10_000
    queue_bytes: int = 64 * 1024 * 1024
    max_connections: int = 16
    pipeline_depth: int = 32
    shutdown_timeout: float = 2.0
    retry_attempts: int = 3
    retry_deadline: float = 30.0
    retry_backoff: float = 0.5
    send_client_reports: bool = True
    client_report_interval: float = 30.0
    spool_dir: str | None = None
    spool_bytes: int = 64 * 1024 * 1024
    spool_fsync: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(_SPECS)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Option name -> one line of help (for tools that list the options)."""
        return {name: spec.help for name, spec in _SPECS.items()}

    @classmethod
    def parse(cls, *layers: Mapping[str, Any]) -> TransportOptions:
        """Options from layers of raw values, later layers winning (querystring, then kwargs)."""
        return cls().replace(*layers)

    def replace(self, *layers: Mapping[str, Any]) -> TransportOptions:
        """A copy with some options changed, each checked as when parsed."""
        changes: dict[str, Any] = {}
        for layer in layers:
            for name, raw in layer.items():
                changes[name] = _parse_one(name, raw)
        if not changes:
            return self
        return dataclasses.replace(self, **changes)


def _parse_one(name: str, raw: Any) -> Any:
    spec = _SPECS.get(name)
    if spec is None:
        valid = ", ".join(sorted(_SPECS))
        raise DsnError(f"unknown transport option {name!r}; valid options are: {valid}")
    try:
        return spec.parse(raw)
    except ValueError as exc:
        shown = "***" if "proxy" in name else repr(raw)
        raise DsnError(f"bad value {shown} for option {name!r}: {exc}") from None
