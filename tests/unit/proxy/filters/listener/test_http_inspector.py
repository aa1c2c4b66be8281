"""http_inspector: HTTP/1.x detection from the request line, original_dst sockaddr parsing."""

from __future__ import annotations

import socket
import struct

from proxy.config.context import FactoryContext
from proxy.filters.listener.http_inspector import HttpInspectorFactory, inspect
from proxy.filters.listener.original_dst import parse_sockaddr_in, parse_sockaddr_in6
from proxy.stats.store import Store


class Conn:
    transport_protocol = "raw_buffer"
    application_protocols: list = []


def test_http11_and_http10_request_lines():
    assert inspect(b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n", False) == ("http/1.1", True)
    assert inspect(b"POST /x HTTP/1.0\r\n", False) == ("http/1.0", True)
    assert inspect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False) == ("h2c", True)


def test_partial_request_line_waits_then_decides():
    assert inspect(b"GE", False) == (None, False)
    assert inspect(b"GET /very/long/pa", False) == (None, False)
    assert inspect(b"GET /x", True) == (None, True)  # peer stopped sending: not HTTP


def test_non_http_is_detected_quickly():
    assert inspect(b"\x16\x03\x01\x02\x00", False) == (None, True)
    assert inspect(b"SSH-2.0-OpenSSH_9.0\r\n", False) == (None, True)
    assert inspect(b"GET / HTTP/3.0\r\n", False) == (None, True)


def test_filter_sets_application_protocols_and_stats():
    store = Store()
    factory = HttpInspectorFactory(FactoryContext(stats=store))
    f = factory.create()
    conn = Conn()
    assert f.on_accept(conn) is False  # needs bytes
    assert f.on_data(conn, b"GET / HT", False) is False
    assert f.on_data(conn, b"GET / HTTP/1.1\r\n", False) is True
    assert conn.application_protocols == ["http/1.1"]
    assert store.counters["http_inspector.http11_found"].value == 1
    conn2 = Conn()
    assert factory.create().on_data(conn2, b"hello world\n", False) is True
    assert conn2.application_protocols == []
    assert store.counters["http_inspector.http_not_found"].value == 1


def test_sockaddr_in_parsing():
    raw = (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", 9080)
        + socket.inet_aton("198.18.0.2")
        + b"\0" * 8
    )
    assert parse_sockaddr_in(raw) == ("198.18.0.2", 9080)
    raw6 = (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!H", 443)
        + b"\0" * 4
        + socket.inet_pton(socket.AF_INET6, "fd00::1")
        + b"\0" * 4
    )
    assert parse_sockaddr_in6(raw6) == ("fd00::1", 443)
    assert parse_sockaddr_in(b"\0\0") is None
