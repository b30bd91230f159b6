"""The public surface is pinned: a change to it is deliberate."""

import sentry_transport

EXPECTED = {
    "AsyncioTransport",
    "ClientReportLedger",
    "ConfigurationError",
    "Dsn",
    "DsnError",
    "EngineTransport",
    "Envelope",
    "EnvelopeError",
    "FunctionTransport",
    "HttpProtocolError",
    "Item",
    "MissingDependencyError",
    "ProtocolError",
    "REASONS",
    "RateLimits",
    "RetryPolicy",
    "SentryTransportError",
    "SyncTransport",
    "ThreadedTransport",
    "Transport",
    "TransportOptions",
    "__version__",
    "make_transport",
}


def test_all_is_pinned() -> None:
    assert set(sentry_transport.__all__) == EXPECTED
    assert len(sentry_transport.__all__) == len(EXPECTED)


def test_every_exported_name_resolves() -> None:
    for name in sentry_transport.__all__:
        assert getattr(sentry_transport, name) is not None, name


def test_unknown_attribute_raises() -> None:
    try:
        sentry_transport.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_every_public_name_says_how_to_use_it() -> None:
    import inspect

    missing = []
    for name in sentry_transport.__all__:
        value = getattr(sentry_transport, name)
        if (inspect.isclass(value) or inspect.isfunction(value)) and not inspect.getdoc(value):
            missing.append(name)
        if inspect.isclass(value):
            for attr, member in vars(value).items():
                public = not attr.startswith("_") and inspect.isfunction(member)
                if public and not inspect.getdoc(member):
                    missing.append(f"{name}.{attr}")
    assert not missing, missing
