"""Which proxy a DSN's requests go through (pure: the environment is an argument).

Options win over the environment: ``https_proxy`` for https DSNs, ``http_proxy`` for http
ones; an option set to '' means "no proxy" even if the environment names one. With
``trust_env``, ``HTTPS_PROXY``/``HTTP_PROXY`` (either case, lower case first) apply unless
``NO_PROXY`` matches the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .dsn import Dsn
from .errors import DsnError
from .http11 import Response, render_head
from .request import Request


class ProxyError(ConnectionError):
    """The proxy refused to open a tunnel (a network error: the envelope may be retried)."""


@dataclass(frozen=True)
class Proxy:
    scheme: str
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> Proxy:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise DsnError(f"malformed proxy URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DsnError("a proxy URL must look like http://[user:pass@]host:port")
        return cls(
            parts.scheme,
            parts.hostname,
            port or (443 if parts.scheme == "https" else 80),
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )

    def authorization(self) -> str | None:
        if self.username is None:
            return None
        import base64

        token = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(token).decode("ascii")


def _env(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name.lower()) or environ.get(name.upper()) or None


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` matches the host (suffix, domain, '*', optional :port)."""
    host = host.strip("[]").lower()
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        has_port = entry.count(":") == 1 or (entry.startswith("[") and "]:" in entry)
        name, _, entry_port = entry.rpartition(":") if has_port else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.strip("[]").lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def select(dsn: Dsn, environ: Mapping[str, str]) -> Proxy | None:
    options = dsn.options
    explicit = options.https_proxy if dsn.scheme == "https" else options.http_proxy
    if explicit is not None:
        return Proxy.parse(explicit) if explicit else None
    if not options.trust_env:
        return None
    url = _env(environ, f"{dsn.scheme}_proxy") or _env(environ, "all_proxy")
    if not url:
        return None
    no_proxy = _env(environ, "no_proxy")
    if no_proxy and bypassed(dsn.hostname, dsn.effective_port, no_proxy):
        return None
    if "://" not in url:
        url = "http://" + url
    return Proxy.parse(url)


def request_head(request: Request, dsn: Dsn, proxy: Proxy | None) -> bytes:
    """The request head: origin-form, or absolute-form with credentials through an http proxy
    (an https DSN goes through a CONNECT tunnel, where the origin-form applies)."""
    headers = list(request.headers)
    target = request.target
    if proxy is not None and dsn.scheme == "http":
        target = request.url
        auth = proxy.authorization()
        if auth:
            headers.append(("Proxy-Authorization", auth))
    return render_head(request.method, target, headers)


def tunnel_head(dsn: Dsn, proxy: Proxy) -> bytes:
    """The ``CONNECT host:port`` request that opens a tunnel to the DSN's host."""
    where = f"{dsn.host}:{dsn.effective_port}"
    headers = [("Host", where)]
    auth = proxy.authorization()
    if auth:
        headers.append(("Proxy-Authorization", auth))
    return render_head("CONNECT", where, headers)


def check_tunnel(dsn: Dsn, response: Response) -> None:
    if not 200 <= response.status < 300:
        where = f"{dsn.host}:{dsn.effective_port}"
        raise ProxyError(f"proxy refused CONNECT {where}: HTTP {response.status}")
