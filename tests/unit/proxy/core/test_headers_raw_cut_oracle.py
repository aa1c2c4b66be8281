"""Cutting removed headers' lines out of the received head (the fast, case-as-given path and the
case-insensitive one) gives the same head as re-serialising the remaining items: an oracle over many
random header sets with mixed case, duplicates, and the removed lines first, last or adjacent."""

from __future__ import annotations

import random

import httptools
import pytest

from proxy.core.headers import Headers, _drop_raw_lines
from proxy.core.http1 import RequestHead, RequestParser, encode_request_head

A, B = "x-envoy-peer-metadata", "x-envoy-peer-metadata-id"
OTHERS = ["accept", "user-agent", "x-b3-traceid", "x-envoy-peer", "x-envoy-peer-metadata-idx", "cookie"]


def _case(name: str, rnd: random.Random) -> str:
    pick = rnd.random()
    if pick < 0.6:
        return name
    if pick < 0.8:
        return name.title()
    return "".join(c.upper() if rnd.random() < 0.5 else c for c in name)


def _random_head(rnd: random.Random) -> bytes:
    lines = []
    for _ in range(rnd.randint(0, 6)):
        lines.append((_case(rnd.choice(OTHERS), rnd), f"v{rnd.randint(0, 9)}x-envoy-peer-metadata:"))
    for name in (A, B):
        for _ in range(rnd.choice((0, 1, 1, 1, 2))):
            lines.insert(rnd.randint(0, len(lines)), (_case(name, rnd), f"val-{rnd.randint(0, 99)}"))
    lines.insert(rnd.randint(0, len(lines)), ("Host", "svc.local"))
    block = "".join(f"{k}: {v}\r\n" for k, v in lines)
    return f"GET /p HTTP/1.1\r\n{block}\r\n".encode()


def _head(data: bytes) -> Headers:
    return next(e for e in RequestParser().feed(data) if isinstance(e, RequestHead)).headers


def _upstream_view(wire: bytes) -> list[tuple[bytes, bytes]]:
    seen: list = []

    class P:
        def on_header(self, name, value):
            seen.append((name.lower(), value))

    httptools.HttpRequestParser(P()).feed_data(wire)
    # The serialiser writes Host first; the received lines keep it where the client put it.
    return [kv for kv in seen if kv[0] == b"host"] + [kv for kv in seen if kv[0] != b"host"]


def _reserialised(h: Headers) -> bytes:
    plain = Headers.from_lowercase(list(h.items()))  # no raw block: the serialiser's own lines
    return encode_request_head(plain)


@pytest.mark.parametrize("seed", range(40))
def test_take_cuts_the_same_head_as_re_serialising(seed):
    rnd = random.Random(seed)
    for _ in range(50):
        data = _head_data = _random_head(rnd)
        h = _head(_head_data)
        assert h.raw_block is not None
        expect_a = next((v for k, v in h.items() if k == A), None)
        expect_b = next((v for k, v in h.items() if k == B), None)
        h.add("x-forwarded-proto", "http")
        assert h.take(A, B) == (expect_a, expect_b)
        assert all(k not in (A, B) for k, _ in h.items())
        wire = encode_request_head(h)
        assert _upstream_view(wire) == _upstream_view(_reserialised(h)), data
        if h.raw_block is not None:  # the cut kept every other received line byte for byte
            kept = [
                ln
                for ln in data.split(b"\r\n")[1:-2]
                if ln.split(b":")[0].lower() not in (A.encode(), B.encode())
            ]
            assert h.raw_block[0] == b"".join(ln + b"\r\n" for ln in kept)


@pytest.mark.parametrize("seed", range(20))
def test_the_fast_cut_agrees_with_the_case_insensitive_cut(seed):
    rnd = random.Random(1000 + seed)
    for _ in range(100):
        data = _random_head(rnd)
        raw = data[data.index(b"\r\n") + 2 : data.index(b"\r\n\r\n") + 2]
        lines = raw.split(b"\r\n")[:-1]
        n = sum(1 for ln in lines if ln.split(b":")[0].lower() in (A.encode(), B.encode()))
        got = _drop_raw_lines(raw, (A, B), n)  # the caller's count is the true one (its items')
        if n:
            want = b"".join(
                ln + b"\r\n" for ln in lines if ln.split(b":")[0].lower() not in (A.encode(), B.encode())
            )
            assert got == want
        else:
            assert got == raw


def test_take_first_and_last_lines_and_nothing_to_take():
    h = _head(b"GET / HTTP/1.1\r\nx-envoy-peer-metadata: m\r\nHost: a\r\nx-envoy-peer-metadata-id: i\r\n\r\n")
    assert h.take(A, B) == ("m", "i")
    assert h.raw_block[0] == b"Host: a\r\n"
    h = _head(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n")
    items = list(h.items())
    assert h.take(A, B) == (None, None) and h.items() == items and h.raw_block[0] == b"Host: a\r\nX: 1\r\n"


def test_taking_an_appended_header_re_serialises():
    h = _head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    h.add(A, "late")
    assert h.take(A, B) == ("late", None)
    assert h.raw_block is None
    assert _upstream_view(encode_request_head(h)) == [(b"host", b"a")]
