"""proxy.upstream.connect: TLS to an upstream over a real loopback socket, Unix-socket (pipe) hosts."""

from __future__ import annotations

import asyncio

import pytest

from proxy.stats.store import Store
from proxy.tls.context import compile_upstream
from proxy.tls.transport import TlsTransport
from proxy.tls.transport_socket import TlsSocketFactory
from proxy.upstream.connect import UpstreamTlsError, open_connection
from tests.unit.proxy.tls.certs import make_ca
from tests.unit.proxy.tls.test_context import ALICE, _b64, upstream
from tests.unit.proxy.tls.test_transport import BOB, server_ctx


class Echo(asyncio.Protocol):
    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.greeting:
            transport.write(self.greeting)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport = None
        self.data = bytearray()
        self.got = asyncio.Event()
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got.set()

    def connection_lost(self, exc) -> None:
        self.lost = True


def client_factory(ca, *, san: str = BOB, sni: str = "outbound_.9080_._.bob.default.svc.cluster.local"):
    chain, key = ca.issue(ALICE)
    msg = upstream(
        {
            "sni": sni,
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"inline_bytes": _b64(chain)},
                        "private_key": {"inline_bytes": _b64(key)},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"inline_bytes": _b64(ca.pem)},
                    "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": san}}],
                },
                "alpn_protocols": ["istio", "http/1.1"],
            },
        }
    )
    return TlsSocketFactory(
        compile_upstream(msg, "cluster.transport_socket"), None, "cluster.transport_socket"
    )


async def tls_server(ca, greeting: bytes = b""):
    built = server_ctx(ca, alpn=("istio", "http/1.1"))
    seen = []

    def factory():
        t = TlsTransport(built, Echo(greeting), on_handshake=lambda tls: seen.append(tls.info))
        return t

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def test_mutual_tls_connection_with_sni_alpn_and_san_check():
    ca = make_ca()
    server, port, seen = await tls_server(ca)
    store = Store()
    made = []
    try:
        tls, proto = await open_connection(
            asyncio.get_running_loop(),
            lambda: made.append(Collect()) or made[-1],
            ("127.0.0.1", port),
            client_factory(ca),
            store.scope("cluster.bob."),
        )
        assert proto is made[0] and proto.transport is tls
        assert tls.info.peer_uri_sans == (BOB,)
        assert tls.info.alpn == "istio"
        proto.transport.write(b"ping")
        await asyncio.wait_for(proto.got.wait(), 5)
        assert bytes(proto.data) == b"ping"
        assert tls.info.sni == "outbound_.9080_._.bob.default.svc.cluster.local"
        assert seen[0].peer_uri_sans == (ALICE,)
        assert store.counter("cluster.bob.ssl.handshake").value == 1
        tls.close()
    finally:
        server.close()


async def test_san_mismatch_is_a_connect_failure_and_the_callers_protocol_is_never_made():
    ca = make_ca()
    server, port, _ = await tls_server(ca)
    store = Store()
    made = []
    try:
        with pytest.raises(UpstreamTlsError) as info:
            await open_connection(
                asyncio.get_running_loop(),
                lambda: made.append(Collect()) or made[-1],
                ("127.0.0.1", port),
                client_factory(ca, san="spiffe://cluster.local/ns/default/sa/mallory"),
                store.scope("cluster.bob."),
            )
        assert info.value.reason == "fail_verify_san"
        assert isinstance(info.value, OSError)  # the pools map OSError to UF
        assert made == []
        assert store.counter("cluster.bob.ssl.fail_verify_san").value == 1
    finally:
        server.close()


async def test_untrusted_server_certificate_fails_verification():
    ca, other = make_ca(), make_ca("other root")
    server, port, _ = await tls_server(other)
    try:
        with pytest.raises(UpstreamTlsError) as info:
            await open_connection(
                asyncio.get_running_loop(),
                Collect,
                ("127.0.0.1", port),
                client_factory(ca),
                Store().scope("c."),
            )
        assert info.value.reason == "fail_verify_error"
    finally:
        server.close()


async def test_bytes_the_upstream_sends_right_after_the_handshake_reach_the_protocol():
    ca = make_ca()
    server, port, _ = await tls_server(ca, greeting=b"220 hello\r\n")
    try:
        tls, proto = await open_connection(
            asyncio.get_running_loop(), Collect, ("127.0.0.1", port), client_factory(ca), Store().scope("c.")
        )
        await asyncio.wait_for(proto.got.wait(), 5)
        assert bytes(proto.data) == b"220 hello\r\n"
        tls.close()
    finally:
        server.close()


async def test_no_secrets_yet_is_a_connect_failure():
    ca = make_ca()
    factory = client_factory(ca)
    factory.current = None  # as before SDS delivered anything
    with pytest.raises(UpstreamTlsError, match="have not arrived"):
        await open_connection(
            asyncio.get_running_loop(), Collect, ("127.0.0.1", 1), factory, Store().scope("c.")
        )


async def test_pipe_address_connects_to_a_unix_socket(tmp_path):
    path = str(tmp_path / "sock")
    server = await asyncio.get_running_loop().create_unix_server(Echo, path)
    try:
        transport, proto = await open_connection(asyncio.get_running_loop(), Collect, (path, 0))
        transport.write(b"over a pipe")
        await asyncio.wait_for(proto.got.wait(), 5)
        assert bytes(proto.data) == b"over a pipe"
        transport.close()
    finally:
        server.close()
