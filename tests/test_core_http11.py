"""The quick read of an answer against the full parser, on answers that are nearly right.

``quick_response`` reads the common answer in one go and leaves the rest to
``ResponseParser``; wherever it gives an answer it must be the parser's, byte for byte, with
the same bytes left over for the next answer on a pipelined connection. Random garbage
seldom gets past a status line, so these answers are built from the parts a server (or a
hostile one) sends, then perhaps damaged by one byte.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sentry_transport.core import http11
from sentry_transport.core.errors import HttpProtocolError

# Each list starts with what servers usually send; the rest are unusual or wrong, drawn one
# time in five (``_mostly``). Each of eight one-line slips tried in quick_response (a second
# Content-Length, 204's empty body, the reason's spaces, Transfer-Encoding, a second
# Connection, the body's end, a four-digit status, a header name's spaces) fails here. Line
# ends are CRLF, or now and then a bare LF (which the parser reads as a line end too).
_VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2", "http/1.1", "HTTP/1.1 "]
_STATUSES = ["200", "202", "204", "429", "304", "100", "101", "199", "500", "0200", "2000", "2x0"]
_REASONS = [" OK", "", " Too Many Requests", "  spaced", " \xe9t\xe9"]
_LINES = ["Content-Length: 0", "Content-Length: 2", "content-length:5", "Connection: close"]
_LINES += ["Connection: keep-alive", "connection: Keep-Alive", "Retry-After: 60", "Date: x"]
_LINES += ["X-Sentry-Rate-Limits: 60:error:org", "Content-Length:  1 ", "Content-Length: 05"]
_USUAL_LINES = len(_LINES)
_LINES += ["Content-Length : 2", " Content-Length: 2", "Content-Length: +2", "Content-Length: -1"]
_LINES += ["Content-Length: \xb2", "Content-Length: 99999999999", "Transfer-Encoding: chunked"]
_LINES += ["Transfer-Encoding: gzip, chunked", "no colon", ": no name", "Connection: "]


def _mostly(choices: list[str], usual: int) -> st.SearchStrategy[str]:
    """One of the first ``usual`` choices four times in five, else one of the others."""
    return st.sampled_from(choices[:usual] * 4 * (len(choices) - usual) + choices[usual:] * usual)


_line = _mostly(_LINES, _USUAL_LINES)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    status = draw(_mostly(_VERSIONS, 2)) + " " + draw(_mostly(_STATUSES, 4))
    status += draw(_mostly(_REASONS, 3))
    lines = [status, *draw(st.lists(_line, max_size=4))]
    # CRLF line ends, as servers send them, or (one time in five) bare LFs in some places
    ends = [draw(_mostly(["\r\n", "\n"], 1)) for _ in range(len(lines) + 1)]
    data = "".join(line + end for line, end in zip(lines, ends, strict=False))
    data = (data + ends[-1]).encode("latin-1")
    data += draw(st.binary(max_size=8))  # a body, its end, the next answer's start...
    if draw(st.booleans()):
        data += b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    if draw(st.integers(0, 4)) == 0:  # damaged by one byte
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    return data


def _parsed(data: bytes, step: int) -> tuple[object, bytes]:
    """What the parser makes of ``data`` fed ``step`` bytes at a time: a Response or the
    HttpProtocolError's type, and the bytes past the answer; the connection then ends."""
    parser = http11.ResponseParser()
    try:
        for i in range(0, len(data), step):
            found = parser.feed(data[i : i + step])
            if found is not None:  # what was not fed yet is the next answer's too
                return found, parser.rest() + data[i + step :]
        return parser.eof(), b""
    except HttpProtocolError:
        return HttpProtocolError, b""


@settings(max_examples=1000, deadline=None)
@given(data=answers(), step=st.integers(1, 9))
def test_property_the_quick_read_is_the_parser_s_wherever_it_reads(data: bytes, step: int) -> None:
    whole = _parsed(data, len(data))
    assert _parsed(data, step) == whole  # fed in pieces or at once: the same answer
    quick = http11.quick_response(data)
    if quick is not None:
        response, rest = quick
        assert isinstance(response, http11.Response)
        # The parser stops at the answer's end too when more bytes follow it; so does the
        # quick read: the same answer and the same bytes left for the next one.
        assert (response, rest) == whole, (data, quick, whole)
    memo = http11.HeadMemo()
    http11.quick_response(data, memo)
    assert http11.quick_response(data, memo) == quick  # read again from the remembered head
