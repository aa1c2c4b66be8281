"""The request parser that cuts heads from the bytes (no ``on_header`` callback) against the parser
that took every header through ``on_header`` (tests/unit/proxy/core/http1_reference.py) as the oracle:
the same events (heads with the same items and raw block, body data, ends, errors with the same status
and details), per read, and the same state between reads, over random and edge-case streams split
into reads at every byte boundary and at random ones, with default and tiny header limits."""

from __future__ import annotations

import random

import pytest

from proxy.core.http1 import RequestHead, RequestParser
from tests.unit.proxy.core import http1_reference

LIMITS = [(60 * 1024, 100), (120, 100), (60, 3), (10_000, 1), (40, 2)]


def snapshot(events: list) -> list:
    out = []
    for ev in events:
        if isinstance(ev, RequestHead):
            h = ev.headers
            out.append(
                (
                    "head",
                    list(h.items()),
                    h.raw_block,
                    ev.keep_alive,
                    ev.upgrade,
                    ev.expect_continue,
                    ev.http_version,
                )
            )
        else:
            out.append(ev)
    return out


def run(parser, reads: list[bytes]) -> list:
    trace = []
    for r in reads:
        trace.append(snapshot(parser.feed(r)))
        trace.append((parser.idle, parser.in_head, parser.dead, parser.upgraded))
    trace.append(parser.feed_eof())
    return trace


def check(stream: bytes, cuts: list[int], limits: tuple[int, int] = LIMITS[0]) -> None:
    reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    got = run(RequestParser(*limits), reads)
    want = run(http1_reference.RequestParser(*limits), reads)
    assert got == want, (stream, cuts, limits)


EDGE_HEADS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET /a?b=1 HTTP/1.1\r\nHost: svc\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nX-A:3\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:a\r\nX-Sp:   v  \r\nX-Tab:\t\tv\t\r\nX-Mix: \t \tv \t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Blank:   \r\nX-B: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Colon: a:b::c\r\nX-High: \xe9t\xe9\xff\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
    b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://Svc:80/p?q HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET HTTPS://svc?q HTTP/1.1\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n1234567",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: x3\r\n\r\nabc",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3 \r\n\r\nabc",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: \xb2\r\n\r\nab",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\nab",
    b"POST /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    b"POST /p HTTP/1.0\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nhi",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n  b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-LF: a\nX-B: b\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-CR: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Sp : a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Ctl: a\x01b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Del: a\x7f\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-\xe9: a\r\n\r\n",
    b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + b"v" * 300 + b"\r\n\r\n",
    b"GET /" + b"u" * 300 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(8)) + b"\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 200 + b"\r\nBad Line\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nBad Line\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
]

TAILS = [
    b"",
    b"GET /2 HTTP/1.1\r\nHost: b\r\n\r\n",
    b"POST /3 HTTP/1.1\r\nHost: c\r\nContent-Length: 4\r\n\r\nbody",
    b"\r\nGET /4 HTTP/1.1\r\nHost: d\r\n\r\n",
    b"GET /5 HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    b"tunnel or garbage",
    b"GET /6 HTTP/1.1\r\nHost: f\r\nX-Part",
]


@pytest.mark.parametrize("head", EDGE_HEADS)
def test_edge_heads_split_at_every_byte_alone_and_pipelined(head):
    for tail in TAILS:
        stream = head + tail
        for limits in LIMITS:
            check(stream, [], limits)
        for cut in range(1, len(stream)):
            check(stream, [cut])
    check(head + TAILS[1] + TAILS[2] + TAILS[1], [len(head) + len(TAILS[1])])


NAMES = [
    "Host",
    "host",
    "HOST",
    "User-Agent",
    "Accept",
    "X-Request-Id",
    "x-b3-traceid",
    "Cookie",
    "X-A",
    "Connection",
    "Expect",
    "Content-Length",
    "Transfer-Encoding",
    "Upgrade",
    "Proxy-Connection",
    "X-Forwarded-For",
    "Via",
    "TE",
    "content-type",
    "X-\u00e9",
]
VALUES = [
    "1",
    "",
    " ",
    "  a  ",
    "\ta\t",
    "keep-alive",
    "close",
    "Keep-Alive",
    "Upgrade",
    "100-continue",
    "chunked",
    "0",
    "5",
    "a:b",
    "\u00e9\u00ff",
    "x y",
    "websocket",
    "http://a/b",
]


def random_message(rng: random.Random) -> bytes:
    method = rng.choice(["GET", "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT"])
    target = rng.choice(
        ["/", "/a/b?c=d", "*", "http://svc:9080/p", "host:443", "/" + "p" * rng.randint(0, 80)]
    )
    version = rng.choice(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/0.9", "HTTP/2.0"])
    lines = [f"{method} {target} {version}"]
    body = b""
    for _ in range(rng.randint(0, 9)):
        name = rng.choice(NAMES)
        value = rng.choice(VALUES)
        if name == "Content-Length":
            body = b"x" * rng.randint(0, 12)
            value = rng.choice([str(len(body))] * 4 + ["abc", str(len(body) + 1), ""])
        sep = rng.choice([": ", ": ", ":", ":  ", ":\t"])
        lines.append(f"{name}{sep}{value}")
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if rng.random() < 0.05:  # a damaged byte
        at = rng.randrange(len(wire))
        wire = wire[:at] + bytes([rng.choice(b" \t\r\n:\x00\x7fa")]) + wire[at + 1 :]
    if b"chunked" in wire.lower():
        body = rng.choice([b"3\r\nabc\r\n0\r\n\r\n", b"0\r\n\r\n", b"1\r\nz\r\n0\r\nT: v\r\n\r\n", b"zz\r\n"])
    return wire + body


@pytest.mark.parametrize("seed", range(8))
def test_random_streams_in_random_reads(seed):
    rng = random.Random(seed)
    for _ in range(400):
        stream = b"".join(random_message(rng) for _ in range(rng.choice([1, 1, 2, 3])))
        if rng.random() < 0.1:
            stream = b"\r\n" + stream
        if rng.random() < 0.1:
            stream += rng.choice(TAILS)
        n = rng.choice([0, 0, 1, 2, 5])
        cuts = sorted(rng.sample(range(1, len(stream)), min(n, len(stream) - 1)))
        check(stream, cuts, rng.choice(LIMITS))


def test_the_usual_request_is_cut_without_the_callback_parser():
    p = RequestParser()
    wire = b"GET /a HTTP/1.1\r\nHost: svc\r\nUser-Agent: wrk\r\nX-A:  1 \r\n\r\n"
    [head, end] = p.feed(wire)
    assert head.headers.items() == [
        (":method", "GET"),
        (":path", "/a"),
        (":authority", "svc"),
        (":scheme", "http"),
        ("user-agent", "wrk"),
        ("x-a", "1 "),
    ]
    assert head.headers.raw_block == (b"Host: svc\r\nUser-Agent: wrk\r\nX-A:  1 \r\n", [])
    assert p._items == [] and p._url == []  # the callback parser saw nothing of it
    body = b"POST /b HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\n\r\nab"
    [head, data] = p.feed(body)
    assert head.headers.get(":path") == "/b" and data.data == b"ab" and not p.idle
    assert [type(e).__name__ for e in p.feed(b"cd" + wire)] == [
        "Data",
        "EndOfMessage",
        "RequestHead",
        "EndOfMessage",
    ]
    assert p._items == []
