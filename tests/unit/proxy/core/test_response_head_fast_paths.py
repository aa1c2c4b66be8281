"""The response parser's fast paths against the plain readings as oracles: the status number it
carries (``ResponseHead.code``) is what ``:status`` says, and ``Connection: keep-alive`` decides
keep-alive exactly as the token parse (``_keep_alive``) does, for HTTP/1.0 and 1.1."""

from __future__ import annotations

import pytest

from proxy.core.http1 import ResponseHead, ResponseParser, _keep_alive


def _head(raw: bytes) -> ResponseHead:
    p = ResponseParser()
    p.expect("GET")
    [head, *_] = p.feed(raw)
    assert isinstance(head, ResponseHead)
    return head


@pytest.mark.parametrize("status", [101, 200, 204, 299, 304, 404, 503, 599])
def test_the_status_number_is_the_status_header(status):
    head = _head(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n\r\n" % status)
    assert head.code == status == head.headers.status == head.status


@pytest.mark.parametrize("version", ["1.0", "1.1"])
@pytest.mark.parametrize(
    "connection",
    [
        None,
        "keep-alive",
        "Keep-Alive",
        "close",
        "Close",
        "keep-alive, close",
        "upgrade",
        "te, keep-alive",
        "",
    ],
)
def test_keep_alive_matches_the_token_parse(version, connection):
    line = b"" if connection is None else b"connection: %s\r\n" % connection.encode()
    head = _head(b"HTTP/%s 200 OK\r\n%scontent-length: 2\r\n\r\nok" % (version.encode(), line))
    want = version == "1.1" if connection is None else _keep_alive(version, connection)
    assert head.keep_alive is want


def test_a_head_made_by_hand_still_compares_by_its_four_fields():
    head = _head(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    assert head == ResponseHead(head.headers, True, False, "1.1")
