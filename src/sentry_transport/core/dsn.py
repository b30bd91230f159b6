"""DSN parsing: ``[backend+]scheme://key[:secret]@host[:port][/prefix]/project[?options]``.

The transport prefix (``threaded+``, ``gevent+``, ...) and the querystring options are split
off here, once, and never reach the ingest URL. The secret key is kept but never shown:
``str``/``repr`` print ``***`` in its place.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .errors import DsnError
from .options import TransportOptions

SCHEMES = ("http", "https")
_BACKEND = re.compile(r"^[a-z][a-z0-9_]*(\+[a-z][a-z0-9_]*)*$")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_PROJECT_ID = re.compile(r"[0-9]+")  # Sentry project ids are integers (Relay: u64)


@dataclass(frozen=True)
class Dsn:
    """A parsed DSN. Every part is an opaque string except ``port`` (an int or None)."""

    scheme: str
    public_key: str
    host: str  # IPv6 literals keep their brackets: "[::1]"
    project_id: str
    port: int | None = None
    path_prefix: str = ""
    secret_key: str | None = field(default=None, repr=False)
    backend: str | None = None
    options: TransportOptions = field(default_factory=TransportOptions)

    @classmethod
    def parse(cls, text: str | Dsn, **options: Any) -> Dsn:
        """Parse ``text``; keyword ``options`` override the querystring's."""
        if isinstance(text, Dsn):
            return text.with_options(**options)
        if not isinstance(text, str):
            raise DsnError(f"a DSN must be a string, not {type(text).__name__}")
        if not text:
            raise DsnError("the DSN is empty")
        bad = _CONTROL.search(text)
        if bad:
            what = {"\r": "CR", "\n": "LF", " ": "a space", "\t": "a tab"}.get(
                bad.group(), f"control character {bad.group()!r}"
            )
            raise DsnError(f"the DSN contains {what} at position {bad.start()}")
        if "://" not in text:
            raise DsnError("the DSN has no scheme: expected 'https://<key>@<host>/<project>'")
        full_scheme, _, rest = text.partition("://")
        backend, plus, scheme = full_scheme.lower().rpartition("+")
        if scheme not in SCHEMES:
            raise DsnError(f"unsupported DSN scheme {scheme!r}: expected http or https")
        if plus and not _BACKEND.match(backend):
            raise DsnError(f"malformed transport prefix {backend!r} (expected e.g. 'threaded+')")
        try:
            parts = urlsplit(f"{scheme}://{rest}")
            port = parts.port
        except ValueError as exc:
            raise DsnError(f"malformed DSN: {exc}") from None
        if port == 0:
            raise DsnError("the DSN's port must be 1..65535, not 0")
        if parts.fragment:
            raise DsnError("the DSN must not have a #fragment")
        netloc = parts.netloc
        userinfo, at, hostport = netloc.rpartition("@")
        if not at or not userinfo:
            raise DsnError("the DSN has no public key: expected 'https://<key>@<host>/<project>'")
        public_key, colon, secret = userinfo.partition(":")
        if not public_key:
            raise DsnError("the DSN's public key is empty")
        host = hostport
        if host.startswith("["):
            close = host.find("]")
            if close < 0 or host[close + 1 :][:1] not in ("", ":"):
                raise DsnError(f"malformed IPv6 host in the DSN: {hostport!r}")
            host = host[: close + 1]
        elif ":" in host:
            host = host.rsplit(":", 1)[0]
        if not host or host == "[]":
            raise DsnError("the DSN has no host")
        path = parts.path[:-1] if parts.path.endswith("/") else parts.path
        prefix, _, project_id = path.rpartition("/")
        if not project_id:
            raise DsnError("the DSN has no project id: expected 'https://<key>@<host>/<project>'")
        if not _PROJECT_ID.fullmatch(project_id):
            raise DsnError(
                f"the DSN's project id must be a number, not {project_id!r} "
                "(expected 'https://<key>@<host>/<project>')"
            )
        query: dict[str, str] = {}
        if parts.query:
            try:
                pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
            except ValueError as exc:
                raise DsnError(f"malformed DSN querystring: {exc}") from None
            for name, value in pairs:
                if name in query:
                    raise DsnError(f"transport option {name!r} is given twice in the DSN")
                query[name] = value
        return cls(
            scheme=scheme,
            public_key=public_key,
            secret_key=secret if colon and secret else None,
            host=host.lower() if not host.startswith("[") else host,
            port=port,
            path_prefix=prefix,
            project_id=project_id,
            backend=backend or None,
            options=TransportOptions.parse(query, options),
        )

    def with_options(self, **options: Any) -> Dsn:
        """The same DSN with some options replaced (validated like the querystring)."""
        if not options:
            return self
        return dataclasses.replace(self, options=self.options.replace(options))

    @property
    def hostname(self) -> str:
        """The host to connect to (IPv6 without brackets)."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (443 if self.scheme == "https" else 80)

    @property
    def netloc(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def envelope_url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.envelope_path}"

    @property
    def envelope_path(self) -> str:
        return f"{self.path_prefix}/api/{self.project_id}/envelope/"

    def auth_header(self, client: str) -> str:
        """The ``X-Sentry-Auth`` header value; ``client`` is ``name/version``."""
        value = f"Sentry sentry_version=7, sentry_client={client}, sentry_key={self.public_key}"
        if self.secret_key:
            value += f", sentry_secret={self.secret_key}"
        return value

    def to_string(self, *, reveal_secret: bool = False) -> str:
        """The DSN without prefix or options (as put in an envelope's ``dsn`` header)."""
        user = self.public_key
        if self.secret_key:
            user += ":" + (self.secret_key if reveal_secret else "***")
        return f"{self.scheme}://{user}@{self.netloc}{self.path_prefix}/{self.project_id}"

    def __str__(self) -> str:
        prefix = f"{self.backend}+" if self.backend else ""
        return prefix + self.to_string()

    def __repr__(self) -> str:
        return f"Dsn({str(self)!r})"
