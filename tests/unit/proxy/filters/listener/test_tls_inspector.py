"""tls_inspector on real ClientHello bytes produced by Python's ssl module (MemoryBIO)."""

from __future__ import annotations

import ssl

import pytest
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2

from proxy.config.context import FactoryContext
from proxy.filters.listener.tls_inspector import (
    FOUND,
    NEED_MORE,
    NOT_TLS,
    TOO_LARGE,
    TlsInspectorFactory,
    parse_client_hello,
)
from proxy.stats.store import Store


def client_hello(sni: str | None, alpn: list[str] | None) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


class Conn:
    transport_protocol = "raw_buffer"
    requested_server_name = ""
    application_protocols: list = []
    reject_reason = None


def make_filter(**cfg):
    store = Store()
    f = TlsInspectorFactory(tls_inspector_pb2.TlsInspector(**cfg), FactoryContext(stats=store), "lf")
    return f.create(), store


def test_sni_and_alpn_from_a_real_client_hello():
    data = client_hello("api.example.com", ["h2", "http/1.1"])
    status, hello = parse_client_hello(data)
    assert status == FOUND
    assert hello.server_name == "api.example.com"
    assert hello.alpn == ["h2", "http/1.1"]


def test_client_hello_without_sni_or_alpn():
    status, hello = parse_client_hello(client_hello(None, None))
    assert status == FOUND and hello.server_name == "" and hello.alpn == []


def test_filter_waits_for_more_bytes_and_does_not_consume():
    data = client_hello("svc.ns.svc.cluster.local", ["istio-peer-exchange", "istio"])
    f, store = make_filter()
    conn = Conn()
    # Byte by byte, as a slow client would send it: not done until the whole hello is there.
    for i in range(1, len(data)):
        assert f.on_data(conn, data[:i], False) is False
    assert f.on_data(conn, data, False) is True
    assert conn.transport_protocol == "tls"
    assert conn.requested_server_name == "svc.ns.svc.cluster.local"
    assert conn.application_protocols == ["istio-peer-exchange", "istio"]
    assert store.counters["tls_inspector.tls_found"].value == 1
    assert store.counters["tls_inspector.sni_found"].value == 1
    assert store.counters["tls_inspector.alpn_found"].value == 1


def test_hello_split_across_two_tls_records():
    data = client_hello("split.example.com", ["h2"])
    body = data[5:]
    cut = 40
    rec1 = data[:3] + cut.to_bytes(2, "big") + body[:cut]
    rec2 = data[:3] + (len(body) - cut).to_bytes(2, "big") + body[cut:]
    assert parse_client_hello(rec1)[0] == NEED_MORE
    status, hello = parse_client_hello(rec1 + rec2)
    assert status == FOUND and hello.server_name == "split.example.com"


def test_plaintext_is_not_tls():
    f, store = make_filter()
    conn = Conn()
    assert f.on_data(conn, b"GET / HTTP/1.1\r\n", False) is True
    assert conn.transport_protocol == "raw_buffer"
    assert store.counters["tls_inspector.tls_not_found"].value == 1
    assert parse_client_hello(b"\x16")[0] == NEED_MORE  # could still be TLS
    assert parse_client_hello(b"\x17\x03\x03\x00\x10")[0] == NOT_TLS


def test_truncated_hello_at_eof_is_given_up_and_too_large_is_rejected():
    data = client_hello("a.example.com", None)
    f, _ = make_filter()
    conn = Conn()
    assert f.on_data(conn, data[:50], True) is True  # peer closed: stop waiting
    assert conn.transport_protocol == "raw_buffer"
    f, store = make_filter(max_client_hello_size={"value": 64})
    conn = Conn()
    assert f.on_data(conn, data, False) is True
    assert conn.reject_reason
    assert store.counters["tls_inspector.client_hello_too_large"].value == 1
    assert parse_client_hello(data, 64)[0] == TOO_LARGE
