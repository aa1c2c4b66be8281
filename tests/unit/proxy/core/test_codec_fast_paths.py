"""The HTTP/1 codec's and Headers' cheaper paths give what the plain code gives: status lines from a
table, request lines from the codec's pseudo-header order, limits checked in one test per header,
lookups that lower-case a name only when it is not found as given."""

from __future__ import annotations

import pytest

from proxy.core.headers import Headers
from proxy.core.http1 import (
    Data,
    EndOfMessage,
    ProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    encode_request_head,
    encode_response_head,
    reason_phrase,
)


def plain_response_head(headers: Headers, http_version: str = "1.1") -> bytes:
    status = headers.get(":status") or "200"
    lines = [f"HTTP/{http_version} {status} {reason_phrase(int(status))}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if not k.startswith(":")]
    block = "\r\n".join(ln.replace("\r", " ").replace("\n", " ") for ln in lines)
    return (block + "\r\n\r\n").encode("latin-1", "replace")


@pytest.mark.parametrize("status", ["200", "404", "503", "101", "299", "599", "0200", ""])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_response_head_matches_the_plain_encoding(status, version):
    h = Headers([(":status", status), ("server", "envoy"), ("content-length", "0")])
    assert encode_response_head(h, version) == plain_response_head(h, version)


def test_response_head_finds_status_anywhere_and_defaults_to_200():
    h = Headers([("x-a", "1")])
    h.add(":status", "204")  # pseudo-headers go first
    assert encode_response_head(h).startswith(b"HTTP/1.1 204 No Content\r\n")
    odd = Headers.from_lowercase([("x-a", "1"), (":status", "404")])  # not first: looked up
    assert encode_response_head(odd) == plain_response_head(odd)
    assert encode_response_head(Headers([("x-a", "1")])) == b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\n"


def test_response_head_never_injects_lines():
    h = Headers([(":status", "200"), ("x-a", "1\r\nx-evil: 2")])
    assert encode_response_head(h) == plain_response_head(h)
    assert b"\r\nx-evil" not in encode_response_head(h)


def parse_one(data: bytes) -> RequestHead:
    [head, *_] = RequestParser().feed(data)
    assert isinstance(head, RequestHead)
    return head


def test_request_line_from_the_raw_block_follows_method_and_path_changes():
    head = parse_one(b"POST /a?b=1 HTTP/1.1\r\nHost: svc\r\nX-A: 1\r\n\r\n")
    h = head.headers
    h.add("x-request-id", "r")
    assert h.raw_block is not None
    out = encode_request_head(h)
    assert out == b"POST /a?b=1 HTTP/1.1\r\nHost: svc\r\nX-A: 1\r\nx-request-id: r\r\n\r\n"
    h.set(":path", "/rewritten")  # drops the raw block: serialised
    assert (
        encode_request_head(h)
        == b"POST /rewritten HTTP/1.1\r\nhost: svc\r\nx-a: 1\r\nx-request-id: r\r\n\r\n"
    )


def test_request_line_when_the_pseudo_headers_are_not_in_the_codecs_order():
    raw = b"Host: svc\r\n"
    h = Headers.from_lowercase([(":path", "/p"), (":method", "PUT"), (":authority", "svc")], raw)
    assert encode_request_head(h) == b"PUT /p HTTP/1.1\r\nHost: svc\r\n\r\n"


def test_url_in_pieces_and_whole_give_the_same_head():
    p = RequestParser()
    events = p.feed(b"GET /very/long")
    events += p.feed(b"/path?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    [head] = [e for e in events if isinstance(e, RequestHead)]
    assert head.headers.get(":path") == "/very/long/path?q=1"
    assert parse_one(b"GET /very/long/path?q=1 HTTP/1.1\r\nHost: h\r\n\r\n").headers.get(":path") == (
        "/very/long/path?q=1"
    )


@pytest.mark.parametrize(
    ("connection", "version", "keep_alive"),
    [(None, "1.1", True), (None, "1.0", False), ("close", "1.1", False), ("Keep-Alive", "1.0", True)],
)
def test_keep_alive_with_and_without_connection_header(connection, version, keep_alive):
    line = f"Connection: {connection}\r\n" if connection else ""
    head = parse_one(f"GET / HTTP/{version}\r\nHost: h\r\n{line}\r\n".encode())
    assert head.keep_alive is keep_alive
    rp = ResponseParser()
    rp.expect("GET")
    [rh, *_] = rp.feed(f"HTTP/{version} 200 OK\r\nContent-Length: 0\r\n{line}\r\n".encode())
    assert isinstance(rh, ResponseHead)
    assert rh.keep_alive is keep_alive
    assert rh.headers.items()[0] == (":status", "200")


def test_unknown_response_status_is_kept_as_text():
    rp = ResponseParser()
    rp.expect("GET")
    [rh, *_] = rp.feed(b"HTTP/1.1 299 Whatever\r\nContent-Length: 0\r\n\r\n")
    assert rh.status == 299
    assert encode_response_head(rh.headers) == b"HTTP/1.1 299 Unknown\r\ncontent-length: 0\r\n\r\n"


def test_header_limits_still_name_the_limit_that_was_hit():
    size = RequestParser(max_header_bytes=100, max_headers_count=50)
    [err] = size.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: " + b"a" * 200 + b"\r\n\r\n")
    assert err == ProtocolError(431, "http1.headers_too_large")
    count = RequestParser(max_header_bytes=10_000, max_headers_count=3)
    [err] = count.feed(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    assert err == ProtocolError(431, "http1.too_many_headers")
    both = RequestParser(max_header_bytes=20, max_headers_count=1)  # both at once: size is reported
    [err] = both.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"a" * 40 + b"\r\n\r\n")
    assert err == ProtocolError(431, "http1.headers_too_large")


def test_lookups_by_any_case_hit_and_miss_like_lower_case_ones():
    h = Headers([(":method", "GET"), ("Content-Type", "a"), ("x-b", "1"), ("x-b", "2")])
    for name, value in [("content-type", "a"), ("Content-Type", "a"), ("CONTENT-TYPE", "a"), ("X-B", "1")]:
        assert h.get(name) == value
        assert name in h
    for name in ["x-missing", "X-Missing", ":METHOD2", ""]:
        assert h.get(name) is None
        assert h.get(name, "d") == "d"
        assert name not in h
    assert h.get(":METHOD") == "GET"
    assert 3 not in h


def test_set_of_a_new_name_appends_after_pseudo_headers_and_keeps_the_raw_block():
    head = parse_one(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
    h = head.headers
    h.set("X-New", "1")
    assert h.items()[-1] == ("x-new", "1")
    assert h.raw_block is not None and h.raw_block[1] == [("x-new", "1")]
    h.set(":Scheme2", "x")  # a new pseudo-header goes in front and drops the raw block
    assert h.items()[4] == (":scheme2", "x")
    assert h.raw_block is None


def test_response_errors_keep_the_events_before_them_in_the_same_read():
    rp = ResponseParser(max_header_bytes=200)
    rp.expect("GET")
    rp.expect("GET")
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    events = rp.feed(first + b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 300 + b"\r\n\r\n")
    assert isinstance(events[0], ResponseHead)
    assert events[-1] == ProtocolError(502, "http1.headers_too_large")
    assert rp.feed(b"more") == []  # dead
    bad = ResponseParser()
    bad.expect("GET")
    events = bad.feed(first + b"NOT HTTP\r\n\r\n")
    assert isinstance(events[0], ResponseHead)
    assert events[-1] == ProtocolError(502, "upstream_protocol_error")


def test_a_partial_response_head_past_the_limit_is_an_error_only_while_in_the_head():
    rp = ResponseParser(max_header_bytes=100, max_headers_count=2)
    rp.expect("GET")
    assert rp.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n")[0].status == 200
    assert rp.feed(b"b" * 300)[-1] == EndOfMessage()  # a long body is not a long head
    rp.expect("GET")
    assert rp.feed(b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 2000)[-1] == ProtocolError(
        502, "http1.headers_too_large"
    )


def test_events_are_whole_instances_of_the_event_classes():
    p = RequestParser()
    head, body, end = p.feed(
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert head == RequestHead(head.headers, True, False, True, "1.1")
    assert repr(head).startswith("RequestHead(headers=")
    assert body == Data(b"hi") and end == EndOfMessage()
    rp = ResponseParser()
    rp.expect("GET")
    rhead, rbody, rend = rp.feed(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert rhead == ResponseHead(rhead.headers, False, False, "1.0")
    assert rbody == Data(b"x") and rend == EndOfMessage()
