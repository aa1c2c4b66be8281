"""The sans-IO HTTP/1.1 codec: requests, responses, limits, smuggling, and never raising."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.headers import Headers
from proxy.core.http1 import (
    LAST_CHUNK,
    Data,
    EndOfMessage,
    ProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    encode_chunk,
    encode_request_head,
    encode_response_head,
)


def feed_all(parser, *chunks):
    out = []
    for c in chunks:
        out.extend(parser.feed(c))
    return out


def merged(events):
    """Merge consecutive Data events, so that differently split inputs compare equal."""
    out = []
    for ev in events:
        if isinstance(ev, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


# ------------------------------------------------------------------------------------------ requests


def test_simple_get_maps_host_to_authority_and_keeps_alive():
    evs = RequestParser().feed(b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Y: z\r\n\r\n")
    assert len(evs) == 2
    head, end = evs
    assert isinstance(head, RequestHead) and isinstance(end, EndOfMessage)
    assert head.headers.items() == [
        (":method", "GET"),
        (":path", "/a?b=1"),
        (":authority", "example.com"),
        (":scheme", "http"),
        ("x-y", "z"),
    ]
    assert head.keep_alive and not head.upgrade and not head.expect_continue and head.http_version == "1.1"


def test_keep_alive_rules_for_http10_and_connection_close():
    p = RequestParser()
    assert not p.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")[0].keep_alive
    assert not RequestParser().feed(b"GET / HTTP/1.0\r\n\r\n")[0].keep_alive
    h = RequestParser().feed(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")[0]
    assert h.keep_alive and h.http_version == "1.0"


def test_pipelined_requests_in_one_feed_come_out_in_order():
    evs = RequestParser().feed(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\n"
        b"Content-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    kinds = [type(e).__name__ for e in evs]
    assert kinds == [
        "RequestHead",
        "EndOfMessage",
        "RequestHead",
        "Data",
        "EndOfMessage",
        "RequestHead",
        "EndOfMessage",
    ]
    assert [e.headers.path for e in evs if isinstance(e, RequestHead)] == ["/1", "/2", "/3"]
    assert evs[3].data == b"abc"


def test_chunked_request_body_streams_and_trailers_are_dropped():
    p = RequestParser()
    evs = feed_all(
        p,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"3\r\nabc\r\n",
        b"2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    assert isinstance(evs[0], RequestHead)
    assert b"".join(e.data for e in evs if isinstance(e, Data)) == b"abcde"
    assert isinstance(evs[-1], EndOfMessage)
    assert all(k != "x-trailer" for k, _ in evs[0].headers)


def test_expect_continue_and_absolute_url():
    head = RequestParser().feed(
        b"PUT http://svc.local:8080/x?q=1 HTTP/1.1\r\nHost: ignored\r\n"
        b"Expect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    )[0]
    assert head.expect_continue
    assert head.headers.authority == "svc.local:8080" and head.headers.path == "/x?q=1"


def test_upgrade_request_then_raw_tunnel_bytes():
    p = RequestParser()
    evs = p.feed(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi"
    )
    assert isinstance(evs[0], RequestHead) and evs[0].upgrade
    assert isinstance(evs[1], EndOfMessage)
    assert evs[2] == Data(b"\x81\x02hi")
    assert p.feed(b"GET / HTTP/1.1\r\n\r\n") == [Data(b"GET / HTTP/1.1\r\n\r\n")]  # raw, not parsed


def test_content_length_with_transfer_encoding_is_smuggling_400():
    for raw in (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
    ):
        p = RequestParser()
        evs = p.feed(raw)
        assert evs[-1] == ProtocolError(400, "http1.content_length_and_chunked_not_allowed")
        assert p.dead and p.feed(b"GET / HTTP/1.1\r\n\r\n") == []


def test_invalid_characters_and_malformed_request_line_are_400():
    for raw in (
        b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nX\x7f: v\r\n\r\n",
    ):
        ev = RequestParser().feed(raw)[-1]
        assert ev == ProtocolError(400, "http1.invalid_characters"), raw
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00",
    ):
        ev = RequestParser().feed(raw)[-1]
        assert isinstance(ev, ProtocolError) and ev.status == 400, raw


def test_header_size_limits_431_complete_and_partial():
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n"
    assert RequestParser().feed(big)[-1] == ProtocolError(431, "http1.headers_too_large")
    # The same head arriving in small pieces, never completed: bounded, not buffered forever.
    p = RequestParser()
    evs = []
    for i in range(0, len(big) - 4, 1000):
        evs.extend(p.feed(big[i : i + 1000]))
    assert evs and evs[-1].status == 431
    # A head just under the limit is fine.
    ok = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 1000 + b"\r\n\r\n"
    assert isinstance(RequestParser(max_header_bytes=2000).feed(ok)[0], RequestHead)
    assert RequestParser(max_header_bytes=1000).feed(ok)[-1].status == 431


def test_too_many_headers_431():
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(120)) + b"\r\n"
    assert RequestParser().feed(raw)[-1] == ProtocolError(431, "http1.too_many_headers")


def test_feed_eof_mid_request_reports_disconnect():
    p = RequestParser()
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    assert isinstance(p.feed_eof()[0], ProtocolError)
    assert RequestParser().feed_eof() == []


# ----------------------------------------------------------------------------------------- responses


def test_response_with_content_length_and_keep_alive():
    r = ResponseParser()
    r.expect("GET")
    evs = r.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi")
    assert isinstance(evs[0], ResponseHead) and evs[0].status == 201 and evs[0].keep_alive
    assert evs[0].headers.items() == [(":status", "201"), ("content-length", "2"), ("x-a", "b")]
    assert evs[1:] == [Data(b"hi"), EndOfMessage()]


def test_response_to_head_has_no_body_even_with_content_length():
    r = ResponseParser()
    r.expect("HEAD")
    r.expect("GET")
    evs = feed_all(
        r,
        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\nHTTP/1.1 200 OK\r\nContent-Len",
        b"gth: 3\r\n\r\nabc",
    )
    assert [type(e).__name__ for e in evs] == [
        "ResponseHead",
        "EndOfMessage",
        "ResponseHead",
        "Data",
        "EndOfMessage",
    ]
    assert evs[0].headers.get("content-length") == "500" and evs[3].data == b"abc"


def test_informational_responses_are_swallowed_and_204_304_have_no_body():
    r = ResponseParser()
    evs = r.feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
    )
    assert [(type(e).__name__, getattr(e, "status", None)) for e in evs] == [
        ("ResponseHead", 204),
        ("EndOfMessage", None),
        ("ResponseHead", 304),
        ("EndOfMessage", None),
    ]
    evs = ResponseParser(emit_informational=True).feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert evs[0].status == 100


def test_read_until_close_body_ends_at_eof():
    r = ResponseParser()
    evs = r.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome ")
    assert not evs[0].keep_alive
    evs += r.feed(b"body")
    assert b"".join(e.data for e in evs if isinstance(e, Data)) == b"some body"
    assert r.feed_eof() == [EndOfMessage()]


def test_truncated_framed_response_is_an_error_at_eof():
    r = ResponseParser()
    r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert isinstance(r.feed_eof()[0], ProtocolError)
    r = ResponseParser()
    r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Enc")
    assert isinstance(r.feed_eof()[0], ProtocolError)


def test_chunked_response_and_101_upgrade():
    r = ResponseParser()
    evs = r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert merged(evs)[1:] == [Data(b"hello"), EndOfMessage()]
    r = ResponseParser()
    evs = r.feed(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nraw")
    assert evs[0].upgrade and evs[0].status == 101 and evs[-1] == Data(b"raw")
    assert r.feed(b"more") == [Data(b"more")]


def test_bad_response_is_502_protocol_error():
    evs = ResponseParser().feed(b"HTTP/1.1 abc OK\r\n\r\n")
    assert isinstance(evs[-1], ProtocolError) and evs[-1].status == 502


# --------------------------------------------------------------------------------------- serializers


def test_serializers_round_trip_through_the_parsers():
    h = Headers(
        [
            (":method", "POST"),
            (":path", "/p"),
            (":authority", "svc:80"),
            (":scheme", "http"),
            ("content-length", "3"),
        ]
    )
    raw = encode_request_head(h) + b"abc"
    evs = RequestParser().feed(raw)
    assert evs[0].headers == h and evs[1] == Data(b"abc")
    rh = Headers([(":status", "404"), ("transfer-encoding", "chunked")])
    raw = encode_response_head(rh) + encode_chunk(b"nope") + encode_chunk(b"") + LAST_CHUNK
    assert raw.startswith(b"HTTP/1.1 404 Not Found\r\n")
    evs = ResponseParser().feed(raw)
    assert evs[0].headers == rh and merged(evs)[1:] == [Data(b"nope"), EndOfMessage()]


def test_serializer_never_lets_a_value_inject_headers():
    raw = encode_response_head(Headers([(":status", "200"), ("x-a", "v\r\nset-cookie: evil")]))
    assert b"\r\nset-cookie" not in raw
    evs = ResponseParser().feed(raw + b"\r\n")
    assert "set-cookie" not in evs[0].headers


# ---------------------------------------------------------------------------------- property tests

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /c HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n",
    b"GET /x?y=%20 HTTP/1.0\r\nConnection: keep-alive\r\nX-Long: " + b"v" * 300 + b"\r\n\r\n",
    b"DELETE http://h:1/z HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048), cuts=st.lists(st.integers(0, 2048), max_size=8))
def test_arbitrary_bytes_never_raise_out_of_feed(data, cuts):
    for parser in (RequestParser(max_header_bytes=512), ResponseParser(max_header_bytes=512)):
        if isinstance(parser, ResponseParser):
            parser.expect("HEAD" if len(data) % 2 else "GET")
        prev = 0
        for c in sorted(set(cuts)) + [len(data)]:
            c = min(c, len(data))
            evs = parser.feed(data[prev:c])
            assert isinstance(evs, list)
            prev = c
        parser.feed_eof()


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.sampled_from(range(len(REQUESTS))), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 4000), max_size=10),
    prefix=st.binary(max_size=64),
)
def test_valid_requests_split_anywhere_parse_like_unsplit(picks, cuts, prefix):
    stream = b"".join(REQUESTS[i] for i in picks)
    whole = merged(RequestParser().feed(stream))
    p = RequestParser()
    got = []
    prev = 0
    for c in sorted({min(c, len(stream)) for c in cuts}) + [len(stream)]:
        got.extend(p.feed(stream[prev:c]))
        prev = c
    assert merged(got) == whole
    assert sum(isinstance(e, EndOfMessage) for e in whole) == len(picks)
    assert not any(isinstance(e, ProtocolError) for e in whole)
    # Garbage after valid requests may fail, but only with a ProtocolError event.
    tail = RequestParser().feed(stream + prefix)
    assert all(not isinstance(e, ProtocolError) or e.status in (400, 431) for e in tail)
