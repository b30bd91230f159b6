"""The TLS context for a DSN's options: verification with host-name check on by default,
``ca_certs`` for a custom CA bundle, ``verify_ssl=0`` to opt out, ``cert_file``/``key_file``
for a client certificate. Built once per transport; a bad path is a ConfigurationError.
"""

from __future__ import annotations

import ssl

from ..core.errors import ConfigurationError
from ..core.options import TransportOptions


def ssl_context(options: TransportOptions) -> ssl.SSLContext:
    try:
        if options.verify_ssl:
            context = ssl.create_default_context(cafile=options.ca_certs)
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if options.cert_file:
            context.load_cert_chain(options.cert_file, options.key_file)
    except (OSError, ssl.SSLError) as exc:
        if options.cert_file:
            which = f"cert_file/key_file ({options.cert_file!r}, {options.key_file!r})"
        else:
            which = f"ca_certs ({options.ca_certs!r})"
        raise ConfigurationError(f"cannot load the TLS files of option {which}: {exc}") from None
    return context


def proxy_context() -> ssl.SSLContext:
    """For an https:// proxy: verified against the system's CAs (the options' CA bundle is
    for the Sentry server)."""
    return ssl.create_default_context()
