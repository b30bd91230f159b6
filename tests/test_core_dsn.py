"""DSN parsing and transport options (core, no I/O)."""

from __future__ import annotations

import dataclasses

import pytest

from sentry_transport import ConfigurationError, Dsn, DsnError, TransportOptions

DSN = "https://public@sentry.example.com/42"


# -- the parts of a DSN ----------------------------------------------------------------------


def test_all_parts_of_a_plain_dsn() -> None:
    dsn = Dsn.parse(DSN)
    assert dsn.scheme == "https"
    assert dsn.public_key == "public"
    assert dsn.secret_key is None
    assert dsn.host == "sentry.example.com"
    assert dsn.hostname == "sentry.example.com"
    assert dsn.port is None
    assert dsn.effective_port == 443
    assert dsn.path_prefix == ""
    assert dsn.project_id == "42"
    assert dsn.backend is None
    assert dsn.options == TransportOptions()
    assert dsn.envelope_url == "https://sentry.example.com/api/42/envelope/"
    assert dsn.envelope_path == "/api/42/envelope/"
    assert dsn.netloc == "sentry.example.com"


def test_http_scheme_default_port_is_80() -> None:
    dsn = Dsn.parse("http://k@localhost/1")
    assert dsn.scheme == "http"
    assert dsn.effective_port == 80
    assert dsn.envelope_url == "http://localhost/api/1/envelope/"


def test_explicit_port_is_kept_in_url() -> None:
    dsn = Dsn.parse("http://k@localhost:9000/7")
    assert dsn.port == 9000
    assert dsn.effective_port == 9000
    assert dsn.netloc == "localhost:9000"
    assert dsn.envelope_url == "http://localhost:9000/api/7/envelope/"


def test_scheme_is_case_insensitive() -> None:
    dsn = Dsn.parse("HTTPS://k@h/1")
    assert dsn.scheme == "https"
    assert dsn.envelope_url == "https://h/api/1/envelope/"


def test_host_is_lower_cased_but_key_and_project_are_opaque() -> None:
    dsn = Dsn.parse("https://AbCdEf@Sentry.EXAMPLE.com/0042")
    assert dsn.host == "sentry.example.com"
    assert dsn.public_key == "AbCdEf"
    assert dsn.project_id == "0042"
    assert dsn.envelope_url == "https://sentry.example.com/api/0042/envelope/"


def test_ipv6_host_keeps_brackets_and_hostname_drops_them() -> None:
    dsn = Dsn.parse("https://k@[::1]:9000/42")
    assert dsn.host == "[::1]"
    assert dsn.hostname == "::1"
    assert dsn.port == 9000
    assert dsn.envelope_url == "https://[::1]:9000/api/42/envelope/"
    no_port = Dsn.parse("http://k@[2001:db8::1]/3")
    assert no_port.host == "[2001:db8::1]"
    assert no_port.hostname == "2001:db8::1"
    assert no_port.port is None
    assert no_port.envelope_url == "http://[2001:db8::1]/api/3/envelope/"


def test_path_prefix() -> None:
    dsn = Dsn.parse("https://k@h/prefix/sub/42")
    assert dsn.path_prefix == "/prefix/sub"
    assert dsn.project_id == "42"
    assert dsn.envelope_url == "https://h/prefix/sub/api/42/envelope/"
    assert dsn.envelope_path == "/prefix/sub/api/42/envelope/"


def test_trailing_slash_after_project_is_tolerated() -> None:
    dsn = Dsn.parse("https://k@h/prefix/42/")
    assert dsn.project_id == "42"
    assert dsn.path_prefix == "/prefix"


def test_secret_is_kept_but_never_shown() -> None:
    dsn = Dsn.parse("https://pub:s3cr3tvalue@h:8443/p/9")
    assert dsn.public_key == "pub"
    assert dsn.secret_key == "s3cr3tvalue"
    for shown in (str(dsn), repr(dsn), dsn.to_string(), f"{dsn}", str([dsn])):
        assert "s3cr3tvalue" not in shown
        assert "***" in shown
    assert str(dsn) == "https://pub:***@h:8443/p/9"
    assert dsn.to_string(reveal_secret=True) == "https://pub:s3cr3tvalue@h:8443/p/9"


def test_empty_secret_is_no_secret() -> None:
    dsn = Dsn.parse("https://pub:@h/1")
    assert dsn.secret_key is None
    assert "***" not in str(dsn)


def test_auth_header_without_secret() -> None:
    dsn = Dsn.parse(DSN)
    assert dsn.auth_header("my-client/1.2") == (
        "Sentry sentry_version=7, sentry_client=my-client/1.2, sentry_key=public"
    )


def test_auth_header_with_secret() -> None:
    dsn = Dsn.parse("https://pub:sec@h/1")
    assert dsn.auth_header("c/0") == (
        "Sentry sentry_version=7, sentry_client=c/0, sentry_key=pub, sentry_secret=sec"
    )


def test_str_and_repr_without_secret() -> None:
    dsn = Dsn.parse("https://k@h/pre/1")
    assert str(dsn) == "https://k@h/pre/1"
    assert repr(dsn) == "Dsn('https://k@h/pre/1')"


# -- transport prefixes and querystring --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "backend"),
    [
        ("threaded+https://k@h/1", "threaded"),
        ("threaded+requests+https://k@h/1", "threaded+requests"),
        ("gevent+https://k@h/1", "gevent"),
        ("sync+http://k@h/1", "sync"),
        ("requests+https://k@h/1", "requests"),
        ("eventlet+https://k@h/1", "eventlet"),
        ("tornado+https://k@h/1", "tornado"),
        ("twisted+https://k@h/1", "twisted"),
        ("Threaded+HTTPS://k@h/1", "threaded"),
    ],
)
def test_transport_prefix_becomes_backend_and_never_reaches_url(text: str, backend: str) -> None:
    dsn = Dsn.parse(text)
    assert dsn.backend == backend
    assert dsn.scheme in ("http", "https")
    assert "+" not in dsn.envelope_url
    assert backend not in dsn.envelope_url
    assert dsn.envelope_url == f"{dsn.scheme}://h/api/1/envelope/"
    assert str(dsn).startswith(f"{backend}+{dsn.scheme}://")
    assert dsn.to_string() == f"{dsn.scheme}://k@h/1"


def test_querystring_never_reaches_url_or_string() -> None:
    dsn = Dsn.parse("threaded+https://k@h:1234/pre/5?timeout=5&verify_ssl=0&ca_certs=/x.pem")
    assert dsn.envelope_url == "https://h:1234/pre/api/5/envelope/"
    assert "?" not in dsn.envelope_url
    assert "timeout" not in str(dsn)
    assert dsn.to_string() == "https://k@h:1234/pre/5"


def test_querystring_timeout_is_a_float() -> None:
    dsn = Dsn.parse(DSN + "?timeout=5")
    assert dsn.options.timeout == 5.0
    assert isinstance(dsn.options.timeout, float)
    assert Dsn.parse(DSN + "?timeout=0.25").options.timeout == 0.25


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", False),
        ("1", True),
        ("true", True),
        ("false", False),
        ("TRUE", True),
        ("False", False),
        ("yes", True),
        ("no", False),
        ("on", True),
        ("off", False),
    ],
)
def test_querystring_verify_ssl(raw: str, expected: bool) -> None:
    assert Dsn.parse(f"{DSN}?verify_ssl={raw}").options.verify_ssl is expected


def test_querystring_ca_certs() -> None:
    assert Dsn.parse(DSN + "?ca_certs=/path/to/ca.pem").options.ca_certs == "/path/to/ca.pem"
    assert Dsn.parse(DSN + "?ca_certs=%2Fpath%20x%2Fca.pem").options.ca_certs == "/path x/ca.pem"


# Every option: a querystring value and the parsed value it must give.
QUERY_VALUES: dict[str, tuple[str, object]] = {
    "timeout": ("2.5", 2.5),
    "verify_ssl": ("0", False),
    "ca_certs": ("/ca.pem", "/ca.pem"),
    "cert_file": ("/cert.pem", "/cert.pem"),
    "key_file": ("/key.pem", "/key.pem"),
    "http_proxy": ("http://proxy:3128", "http://proxy:3128"),
    "https_proxy": ("https://proxy:3129", "https://proxy:3129"),
    "trust_env": ("false", False),
    "compression": ("DEFLATE", "deflate"),
    "compression_level": ("7", 7),
    "compression_threshold": ("0", 0),
    "queue_size": ("5", 5),
    "queue_bytes": ("1000", 1000),
    "max_connections": ("2", 2),
    "pipeline_depth": ("1", 1),
    "shutdown_timeout": ("0", 0.0),
    "retry_attempts": ("0", 0),
    "retry_deadline": ("12.5", 12.5),
    "retry_backoff": ("0.1", 0.1),
    "send_client_reports": ("off", False),
    "client_report_interval": ("7", 7.0),
    "spool_dir": ("/var/spool/sentry", "/var/spool/sentry"),
    "spool_bytes": ("1048576", 1048576),
    "spool_fsync": ("1", True),
}


def test_query_value_table_covers_every_option() -> None:
    fields = {f.name for f in dataclasses.fields(TransportOptions)}
    assert set(TransportOptions.names()) == fields
    assert set(QUERY_VALUES) == fields
    assert set(TransportOptions.describe()) == fields
    assert all(TransportOptions.describe().values())


@pytest.mark.parametrize("name", sorted(QUERY_VALUES))
def test_every_option_from_querystring(name: str) -> None:
    raw, expected = QUERY_VALUES[name]
    dsn = Dsn.parse(f"{DSN}?{name}={raw}")
    value = getattr(dsn.options, name)
    assert value == expected
    assert type(value) is type(expected)
    assert value != getattr(TransportOptions(), name)  # the table really changes something
    # ... and the same through a keyword argument
    assert getattr(Dsn.parse(DSN, **{name: raw}).options, name) == expected


def test_defaults() -> None:
    options = Dsn.parse(DSN).options
    assert options.timeout == 5.0
    assert options.verify_ssl is True
    assert options.ca_certs is None
    assert options.compression == "gzip"
    assert options.compression_level is None
    assert options.send_client_reports is True
    assert options.trust_env is True
    assert options.http_proxy is None and options.https_proxy is None


def test_keyword_overrides_querystring_overrides_default() -> None:
    assert Dsn.parse(DSN).options.timeout == 5.0
    assert Dsn.parse(DSN + "?timeout=3").options.timeout == 3.0
    dsn = Dsn.parse(DSN + "?timeout=3&verify_ssl=0", timeout=2)
    assert dsn.options.timeout == 2.0
    assert dsn.options.verify_ssl is False  # not overridden: the querystring's stays
    assert Dsn.parse(DSN + "?verify_ssl=0", verify_ssl=True).options.verify_ssl is True


def test_keyword_values_are_validated_like_querystring() -> None:
    with pytest.raises(DsnError, match="timeout"):
        Dsn.parse(DSN, timeout="soon")
    with pytest.raises(DsnError, match="queue_size"):
        Dsn.parse(DSN, queue_size=0)
    with pytest.raises(DsnError, match="verify_ssl"):
        Dsn.parse(DSN, verify_ssl=2)


def test_parse_of_a_dsn_applies_options() -> None:
    dsn = Dsn.parse(DSN + "?timeout=3")
    again = Dsn.parse(dsn, timeout=1)
    assert again.options.timeout == 1.0
    assert again.envelope_url == dsn.envelope_url
    assert Dsn.parse(dsn) is dsn
    assert dsn.with_options() is dsn
    assert dsn.options.timeout == 3.0  # the original is unchanged


def test_empty_proxy_option_means_no_proxy() -> None:
    assert Dsn.parse(DSN + "?https_proxy=").options.https_proxy == ""
    assert Dsn.parse(DSN, http_proxy="").options.http_proxy == ""


def test_empty_text_option_is_none() -> None:
    assert Dsn.parse(DSN + "?ca_certs=").options.ca_certs is None


def test_options_are_frozen() -> None:
    dsn = Dsn.parse(DSN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dsn.options.timeout = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        dsn.host = "evil"  # type: ignore[misc]


def test_options_replace_returns_new_object() -> None:
    options = TransportOptions()
    changed = options.replace({"timeout": "1"})
    assert changed.timeout == 1.0
    assert options.timeout == 5.0
    assert options.replace({}) is options
    assert TransportOptions.parse({"timeout": 1}, {"timeout": 2}).timeout == 2.0


# -- errors ------------------------------------------------------------------------------------


def test_dsn_error_is_a_value_error_and_configuration_error() -> None:
    assert issubclass(DsnError, ValueError)
    assert issubclass(DsnError, ConfigurationError)
    with pytest.raises(ValueError):
        Dsn.parse("")


def test_unknown_option_lists_valid_names() -> None:
    with pytest.raises(DsnError) as info:
        Dsn.parse(DSN + "?timeuot=5")
    message = str(info.value)
    assert "timeuot" in message
    for name in TransportOptions.names():
        assert name in message


def test_unknown_keyword_option_is_rejected() -> None:
    with pytest.raises(DsnError, match="nope"):
        Dsn.parse(DSN, nope=1)


@pytest.mark.parametrize(
    ("query", "option"),
    [
        ("timeout=abc", "timeout"),
        ("timeout=0", "timeout"),
        ("timeout=-1", "timeout"),
        ("timeout=nan", "timeout"),
        ("timeout=inf", "timeout"),
        ("verify_ssl=2", "verify_ssl"),
        ("verify_ssl=maybe", "verify_ssl"),
        ("trust_env=", "trust_env"),
        ("compression=lzma", "compression"),
        ("compression_level=-1", "compression_level"),
        ("compression_level=x", "compression_level"),
        ("queue_size=0", "queue_size"),
        ("queue_size=1.5", "queue_size"),
        ("queue_bytes=-5", "queue_bytes"),
        ("max_connections=0", "max_connections"),
        ("retry_attempts=-1", "retry_attempts"),
        ("https_proxy=socks5://p:1080", "https_proxy"),
        ("http_proxy=proxy:3128", "http_proxy"),
        ("client_report_interval=0", "client_report_interval"),
    ],
)
def test_bad_value_names_the_option(query: str, option: str) -> None:
    with pytest.raises(DsnError) as info:
        Dsn.parse(f"{DSN}?{query}")
    assert repr(option) in str(info.value)


def test_bad_proxy_value_is_not_echoed() -> None:
    with pytest.raises(DsnError) as info:
        Dsn.parse(DSN, https_proxy="ftp://user:hunter2@p")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("name", ["queue_size", "retry_attempts", "compression_threshold"])
def test_integer_options_refuse_fractions(name: str) -> None:
    with pytest.raises(DsnError, match=name):
        Dsn.parse(DSN, **{name: 2.5})
    assert getattr(Dsn.parse(DSN, **{name: 2.0}).options, name) == 2


def test_proxy_credentials_are_not_in_reprs() -> None:
    dsn = Dsn.parse(DSN, https_proxy="http://user:hunter2@proxy:3128")
    assert dsn.options.https_proxy == "http://user:hunter2@proxy:3128"
    for shown in (repr(dsn), str(dsn), repr(dsn.options), str(dsn.options)):
        assert "hunter2" not in shown


def test_duplicate_option_is_rejected() -> None:
    with pytest.raises(DsnError, match="timeout"):
        Dsn.parse(DSN + "?timeout=1&timeout=2")


def test_malformed_querystring_is_rejected() -> None:
    with pytest.raises(DsnError):
        Dsn.parse(DSN + "?timeout")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("https://sentry.example.com/42", id="missing-key"),
        pytest.param("https://@sentry.example.com/42", id="empty-userinfo"),
        pytest.param("https://:secret@sentry.example.com/42", id="empty-key"),
        pytest.param("https://k@sentry.example.com", id="missing-project"),
        pytest.param("https://k@sentry.example.com/", id="missing-project-slash"),
        pytest.param("https://k@/42", id="missing-host"),
        pytest.param("https://k@:9000/42", id="missing-host-with-port"),
        pytest.param("https://k@[]/42", id="empty-ipv6"),
        pytest.param("ftp://k@h/42", id="ftp-scheme"),
        pytest.param("ws://k@h/42", id="ws-scheme"),
        pytest.param("threaded+ftp://k@h/42", id="prefixed-ftp"),
        pytest.param("k@h/42", id="no-scheme"),
        pytest.param("https://k@h:abc/42", id="port-not-number"),
        pytest.param("https://k@h:99999/42", id="port-out-of-range"),
        pytest.param("https://k@h:-1/42", id="port-negative"),
        pytest.param("https://k@h:0/42", id="port-zero"),
        pytest.param("https://k@[::1/42", id="unclosed-ipv6"),
        pytest.param("https://k@[::1]x:9/42", id="junk-after-ipv6"),
        pytest.param("1threaded+https://k@h/42", id="prefix-starts-with-digit"),
        pytest.param("threaded++https://k@h/42", id="prefix-double-plus"),
        pytest.param("+https://k@h/42", id="prefix-empty"),
        pytest.param("thr-eaded+https://k@h/42", id="prefix-dash"),
        pytest.param("https://k@h/42#frag", id="fragment"),
        pytest.param("", id="empty"),
    ],
)
def test_invalid_dsn(text: str) -> None:
    with pytest.raises(DsnError):
        Dsn.parse(text)


@pytest.mark.parametrize("position", [0, 5, 9, 12, 20])
@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\t", " "])
def test_control_characters_anywhere_are_rejected(position: int, char: str) -> None:
    text = "https://k@h.example/42?timeout=5"
    with pytest.raises(DsnError) as info:
        Dsn.parse(text[:position] + char + text[position:])
    assert str(position) in str(info.value)


def test_cr_and_lf_are_named() -> None:
    with pytest.raises(DsnError, match="CR"):
        Dsn.parse("https://k@h/42\r")
    with pytest.raises(DsnError, match="LF"):
        Dsn.parse("https://k@h/42\nX-Injected: 1")


@pytest.mark.parametrize("value", [None, 42, b"https://k@h/1", ["https://k@h/1"]])
def test_non_string_is_rejected(value: object) -> None:
    with pytest.raises(DsnError, match="string"):
        Dsn.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("project", ["<project>", "abc", "1a", "+1", "1_000", "\u0661"])
def test_project_id_must_be_a_number(project: str) -> None:
    with pytest.raises(DsnError, match="project id must be a number"):
        Dsn.parse(f"https://key@h.example/{project}")
