"""The MemoryBIO TLS layer: real handshakes between a server-side and a client-side instance in memory."""

from __future__ import annotations

import asyncio

import pytest

from proxy.stats.store import Store
from proxy.tls.context import build_context, compile_downstream, compile_upstream
from proxy.tls.transport import TlsError, TlsSession, TlsTransport, tls_stats
from tests.unit.proxy.tls.certs import make_ca
from tests.unit.proxy.tls.test_context import ALICE, _b64, downstream, upstream

BOB = "spiffe://cluster.local/ns/default/sa/bob"


def server_ctx(ca, *, require=True, alpn=(), uri=BOB, matchers=None, min_version=None):
    chain, key = ca.issue(uri)
    common = {
        "tls_certificates": [{"certificate_chain": {"inline_bytes": _b64(chain)},
                              "private_key": {"inline_bytes": _b64(key)}}],
        "validation_context": {"trusted_ca": {"inline_bytes": _b64(ca.pem)}},
        "alpn_protocols": list(alpn),
    }  # fmt: skip
    if matchers:
        common["validation_context"]["match_typed_subject_alt_names"] = matchers
    if min_version:
        common["tls_params"] = {"tls_minimum_protocol_version": min_version}
    return build_context(
        compile_downstream(
            downstream({"common_tls_context": common, "require_client_certificate": require}), "t"
        )
    )


def client_ctx(ca, *, uri=ALICE, alpn=(), matchers=None, trusted=None, max_version=None):
    common: dict = {"alpn_protocols": list(alpn)}
    if uri is not None:
        chain, key = ca.issue(uri)
        common["tls_certificates"] = [
            {"certificate_chain": {"inline_bytes": _b64(chain)}, "private_key": {"inline_bytes": _b64(key)}}
        ]
    common["validation_context"] = {"trusted_ca": {"inline_bytes": _b64((trusted or ca).pem)}}
    if matchers:
        common["validation_context"]["match_typed_subject_alt_names"] = matchers
    if max_version:
        common["tls_params"] = {"tls_maximum_protocol_version": max_version}
    return build_context(compile_upstream(upstream({"common_tls_context": common}), "t"))


def pump(a: TlsSession, b: TlsSession, rounds: int = 10) -> tuple[bytes, bytes]:
    """Shuttle bytes between two sessions until quiet; returns the plaintext each side received."""
    got_a, got_b = b"", b""
    for _ in range(rounds):
        out_a, out_b = a.output(), b.output()
        if not out_a and not out_b:
            break
        if out_a:
            got_b += b.feed(out_a).plaintext
        if out_b:
            got_a += a.feed(out_b).plaintext
    return got_a, got_b


def test_mutual_handshake_alpn_and_peer_identity():
    ca = make_ca()
    server = TlsSession(server_ctx(ca, alpn=("h2", "http/1.1")))
    client = TlsSession(
        client_ctx(ca, alpn=("http/1.1",)), server_hostname="outbound_.9080_._.bob.default.svc"
    )
    client.start()
    pump(client, server)
    assert server.info is not None and client.info is not None
    assert server.info.alpn == client.info.alpn == "http/1.1"
    assert server.info.peer_uri_sans == (ALICE,)
    assert server.info.local_uri_sans == (BOB,)
    assert client.info.peer_uri_sans == (BOB,)
    assert server.info.version in ("TLSv1.3", "TLSv1.2")
    assert len(server.info.sha256_peer_certificate_digest) == 64
    client.send(b"ping")
    server.send(b"pong")
    got_client, got_server = pump(client, server)
    assert (got_client, got_server) == (b"pong", b"ping")


def test_client_without_certificate_is_refused_when_required():
    ca = make_ca()
    server = TlsSession(server_ctx(ca, require=True))
    client = TlsSession(client_ctx(ca, uri=None))
    client.start()
    with pytest.raises(TlsError) as e:
        pump(client, server)
    assert server.info is None
    assert e.value.reason in ("fail_verify_no_cert", "connection_error")


def test_client_without_certificate_is_accepted_when_optional():
    ca = make_ca()
    server = TlsSession(server_ctx(ca, require=False))
    client = TlsSession(client_ctx(ca, uri=None))
    client.start()
    pump(client, server)
    assert server.info is not None and not server.info.peer_certificate_presented


def test_certificate_from_another_ca_is_refused():
    ca, other = make_ca(), make_ca("other")
    server = TlsSession(server_ctx(ca))
    client = TlsSession(client_ctx(other, trusted=ca))
    client.start()
    with pytest.raises(TlsError):
        pump(client, server)
    assert server.info is None


def test_tls_1_1_is_refused():
    import ssl
    import warnings

    ca = make_ca()
    server = TlsSession(server_ctx(ca))
    built = client_ctx(ca)
    built.ssl_context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL offer TLS 1.1 at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        built.ssl_context.minimum_version = ssl.TLSVersion.TLSv1_1
        built.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_1
    client = TlsSession(built)
    client.start()
    hello = client.output()
    assert hello[:3] == b"\x16\x03\x01" and hello[9:11] == b"\x03\x02"  # a TLS 1.1 ClientHello
    with pytest.raises(TlsError, match="UNSUPPORTED_PROTOCOL"):
        server.feed(hello)
    assert server.info is None
    assert server.output()[:1] == b"\x15"  # the refusal goes back as an alert


class FakeRaw(asyncio.Transport):
    """A raw transport that records what is written and lets the test deliver bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.protocol = None
        self.reading = True

    def write(self, data) -> None:
        self.written += data

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def can_write_eof(self) -> bool:
        return True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name, default=None):
        return default


class App(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.eof = False
        self.lost = False
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self):
        self.eof = True
        return False

    def connection_lost(self, exc) -> None:
        self.lost = True


def transports(server_built, client_built, store):
    s_raw, c_raw = FakeRaw(), FakeRaw()
    s_app, c_app = App(), App()
    server = TlsTransport(server_built, s_app, stats=tls_stats(store.scope("listener.127.0.0.1_15006.")))
    client = TlsTransport(client_built, c_app, stats=tls_stats(store.scope("cluster.bob.")))
    return (server, s_raw, s_app), (client, c_raw, c_app)


def shuttle(server, s_raw, client, c_raw, rounds=10):
    for _ in range(rounds):
        a, b = c_raw.take(), s_raw.take()
        if not a and not b:
            return
        if a and not s_raw.closed:
            server.data_received(a)
        if b and not c_raw.closed:
            client.data_received(b)


def test_transport_accepts_pre_read_client_hello_and_buffers_early_writes():
    ca, store = make_ca(), Store()
    (server, s_raw, s_app), (client, c_raw, c_app) = transports(server_ctx(ca), client_ctx(ca), store)
    client.connection_made(c_raw)
    assert c_app.transport is client
    client.write(b"GET / HTTP/1.1\r\n\r\n")  # before the handshake: held, sent after it
    hello = c_raw.take()
    assert hello[0] == 0x16  # what tls_inspector peeked
    server.attach(s_raw, pre_read=hello)
    assert s_raw.protocol is server
    shuttle(server, s_raw, client, c_raw)
    assert server.handshake_complete and client.handshake_complete
    assert s_app.data == b"GET / HTTP/1.1\r\n\r\n"
    server.write(b"HTTP/1.1 200 OK\r\n\r\n")
    shuttle(server, s_raw, client, c_raw)
    assert c_app.data == b"HTTP/1.1 200 OK\r\n\r\n"
    assert store.counters["listener.127.0.0.1_15006.ssl.handshake"].value == 1
    assert store.counters["cluster.bob.ssl.handshake"].value == 1
    assert server.info.peer_uri_sans == (ALICE,)
    assert server.get_extra_info("tls_info") is server.info
    # close_notify reaches the peer as EOF
    client.close()
    assert c_raw.closed
    shuttle(server, s_raw, client, c_raw)
    assert s_app.eof


def test_transport_san_mismatch_fails_and_counts_fail_verify_san():
    ca, store = make_ca(), Store()
    matchers = [{"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/carol"}}]
    (server, s_raw, s_app), (client, c_raw, _) = transports(
        server_ctx(ca, matchers=matchers), client_ctx(ca), store
    )
    client.connection_made(c_raw)
    client.write(b"secret request")
    server.attach(s_raw, pre_read=c_raw.take())
    shuttle(server, s_raw, client, c_raw)
    assert s_raw.closed
    assert s_app.data == b""  # nothing reached the application
    assert server.failure is not None and server.failure.reason == "fail_verify_san"
    assert store.counters["listener.127.0.0.1_15006.ssl.fail_verify_san"].value == 1
    assert store.counters["listener.127.0.0.1_15006.ssl.handshake"].value == 0


def test_transport_no_client_cert_counts_stats():
    ca, store = make_ca(), Store()
    (server, s_raw, s_app), (client, c_raw, _) = transports(
        server_ctx(ca, require=False), client_ctx(ca, uri=None), store
    )
    client.connection_made(c_raw)
    server.attach(s_raw, pre_read=c_raw.take())
    shuttle(server, s_raw, client, c_raw)
    assert server.handshake_complete
    assert store.counters["listener.127.0.0.1_15006.ssl.no_certificate"].value == 1


async def test_wait_handshake_raises_on_failure():
    ca, other, store = make_ca(), make_ca("other"), Store()
    (server, s_raw, _), (client, c_raw, _) = transports(
        server_ctx(ca), client_ctx(other, trusted=other), store
    )
    client.connection_made(c_raw)
    server.attach(s_raw, pre_read=c_raw.take())
    waiter = asyncio.ensure_future(client.wait_handshake())
    shuttle(server, s_raw, client, c_raw)
    with pytest.raises(TlsError) as e:
        await waiter
    assert e.value.reason == "fail_verify_error"
    assert store.counters["cluster.bob.ssl.fail_verify_error"].value == 1


def test_pause_reading_holds_plaintext_until_resumed():
    ca, store = make_ca(), Store()
    (server, s_raw, s_app), (client, c_raw, _) = transports(server_ctx(ca), client_ctx(ca), store)
    client.connection_made(c_raw)
    server.attach(s_raw, pre_read=c_raw.take())
    shuttle(server, s_raw, client, c_raw)
    server.pause_reading()
    assert not s_raw.reading
    client.write(b"held")
    shuttle(server, s_raw, client, c_raw)
    assert s_app.data == b""
    server.resume_reading()
    assert s_app.data == b"held" and s_raw.reading
