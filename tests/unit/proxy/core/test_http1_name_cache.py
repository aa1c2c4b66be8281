"""Header names are lower-cased through a bounded cache: same result, and a client sending endless
distinct names cannot grow it."""

from __future__ import annotations

from proxy.core import http1
from proxy.core.http1 import RequestHead, RequestParser


def _names(data: bytes) -> list[str]:
    (head,) = [e for e in RequestParser().feed(data) if isinstance(e, RequestHead)]
    return [k for k, _ in head.headers.items()]


def test_names_are_lower_case_whatever_their_case_on_the_wire_and_cached_or_not():
    first = _names(b"GET / HTTP/1.1\r\nHost: a\r\nX-MiXeD: 1\r\nx-mixed: 2\r\nX-MIXED: 3\r\n\r\n")
    again = _names(b"GET / HTTP/1.1\r\nHost: a\r\nX-MiXeD: 1\r\nx-mixed: 2\r\nX-MIXED: 3\r\n\r\n")
    assert first == again == [":method", ":path", ":authority", ":scheme", "x-mixed", "x-mixed", "x-mixed"]


def test_the_cache_stays_bounded_under_distinct_names():
    for batch in range(12):
        lines = b"".join(b"X-Unique-%d-%d: v\r\n" % (batch, i) for i in range(90))
        names = _names(b"GET / HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n")
        assert names[-1] == f"x-unique-{batch}-89"
    assert len(http1._NAMES) <= http1._NAMES_MAX
