"""Unchanged request headers go upstream as received (the codec's raw header lines), with what the
connection manager and the router append after them; anything else re-serialises."""

from __future__ import annotations

import httptools

from proxy.core.headers import Headers
from proxy.core.http1 import RequestHead, RequestParser, encode_request_head

HEAD = b"GET /a?b=1 HTTP/1.1\r\nHost: svc.local:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"


def _head(data: bytes) -> Headers:
    events = RequestParser().feed(data)
    heads = [e for e in events if isinstance(e, RequestHead)]
    return heads[0].headers


def _parse_upstream(wire: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """What an upstream sees: (url, [(name, value)]) from a real HTTP/1.1 parser."""
    seen: dict = {"headers": []}

    class P:
        def on_url(self, url):
            seen["url"] = url

        def on_header(self, name, value):
            seen["headers"].append((name.lower(), value))

    httptools.HttpRequestParser(P()).feed_data(wire)
    return seen["url"], seen["headers"]


def test_unchanged_head_goes_out_byte_for_byte_plus_appended_lines():
    h = _head(HEAD)
    assert h.raw_block is not None
    h.add("x-request-id", "abc")
    h.set("x-forwarded-proto", "http")  # absent: an append
    wire = encode_request_head(h)
    assert wire.startswith(b"GET /a?b=1 HTTP/1.1\r\nHost: svc.local:8080\r\nUser-Agent: curl/8\r\n")
    assert wire.endswith(b"x-request-id: abc\r\nx-forwarded-proto: http\r\n\r\n")
    url, headers = _parse_upstream(wire)
    assert url == b"/a?b=1"
    assert headers == [
        (b"host", b"svc.local:8080"),
        (b"user-agent", b"curl/8"),
        (b"accept", b"*/*"),
        (b"x-request-id", b"abc"),
        (b"x-forwarded-proto", b"http"),
    ]


def test_changing_a_received_header_re_serialises_with_the_new_value():
    h = _head(HEAD)
    h.set("user-agent", "other")
    assert h.raw_block is None
    _, headers = _parse_upstream(encode_request_head(h))
    assert (b"user-agent", b"other") in headers and (b"user-agent", b"curl/8") not in headers


def test_rewriting_authority_or_path_never_sends_the_old_ones():
    h = _head(HEAD)
    h.set(":authority", "new.host")
    url, headers = _parse_upstream(encode_request_head(h))
    assert (b"host", b"new.host") in headers and (b"host", b"svc.local:8080") not in headers
    h = _head(HEAD)
    h.set(":path", "/rewritten")
    assert _parse_upstream(encode_request_head(h))[0] == b"/rewritten"


def test_removed_headers_are_cut_out_of_the_received_lines_in_any_case():
    h = _head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nX-Keep: 1\r\nKeep-Alive: 5\r\n\r\n")
    h.remove_names(frozenset(("connection", "keep-alive")))
    assert h.raw_block is not None
    _, headers = _parse_upstream(encode_request_head(h))
    assert headers == [(b"host", b"a"), (b"x-keep", b"1")]


def test_removing_an_appended_header_or_one_by_name_re_serialises():
    h = _head(HEAD)
    h.add("x-a", "1")
    h.remove_names(frozenset(("x-a",)))
    assert h.raw_block is None
    _, headers = _parse_upstream(encode_request_head(h))
    assert [k for k, _ in headers] == [b"host", b"user-agent", b"accept"]
    h = _head(HEAD)
    h.remove("accept")
    assert [k for k, _ in _parse_upstream(encode_request_head(h))[1]] == [b"host", b"user-agent"]


def test_a_copy_keeps_the_raw_lines_and_mutating_it_leaves_the_original_alone():
    h = _head(HEAD)
    c = h.copy()
    c.set("accept", "text/plain")
    assert c.raw_block is None and h.raw_block is not None
    assert (b"accept", b"*/*") in _parse_upstream(encode_request_head(h))[1]


def test_heads_without_a_usable_raw_block():
    # Absolute-form target: the Host line is not what :authority says.
    assert _head(b"GET http://x.example/p HTTP/1.1\r\nHost: other\r\n\r\n").raw_block is None
    # Two Host lines: only the first is the authority.
    assert _head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").raw_block is None
    # HTTP/1.0 without Host: a pseudo-header gets added later.
    h = _head(b"GET / HTTP/1.0\r\nX: 1\r\n\r\n")
    h.add(":authority", "default")
    assert h.raw_block is None
    assert (b"host", b"default") in _parse_upstream(encode_request_head(h))[1]


def test_a_head_split_across_reads_and_pipelined_heads_are_serialised():
    p = RequestParser()
    assert p.feed(b"GET / HTTP/1.1\r\nHost: a\r\n") == []
    (head, _eom) = p.feed(b"X: 1\r\n\r\n")
    assert head.headers.raw_block is None
    assert [k for k, _ in _parse_upstream(encode_request_head(head.headers))[1]] == [b"host", b"x"]
    events = RequestParser().feed(HEAD + b"GET /2 HTTP/1.1\r\nHost: b\r\n\r\n")
    first, second = [e for e in events if isinstance(e, RequestHead)]
    assert first.headers.raw_block is not None and second.headers.raw_block is None
    assert _parse_upstream(encode_request_head(second.headers)) == (b"/2", [(b"host", b"b")])


def test_injected_line_breaks_in_appended_values_never_reach_the_wire():
    h = _head(HEAD)
    h.add("x-evil", "a\r\nx-injected: 1")
    _, headers = _parse_upstream(encode_request_head(h))
    assert all(k != b"x-injected" for k, _ in headers)
