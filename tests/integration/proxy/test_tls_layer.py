"""The proxy's TLS layer over real sockets, with SVIDs from a real citadel process, checked by openssl
and Python's ssl: client certificates required, SPIFFE SAN matching, TLS 1.1 refused, and certificate
rotation through a real agent's SDS (new connections get the new certificate, old ones stay up)."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from proxy.filters.listener.tls_inspector import FOUND, NEED_MORE, parse_client_hello
from proxy.stats.store import Store
from proxy.tls.context import compile_downstream, compile_upstream
from proxy.tls.secrets import SecretManager
from proxy.tls.transport_socket import TlsSocketFactory
from tests.integration.citadel.harness import create, csr_for, start_citadel
from tests.integration.proxy.test_agent_sds import start_agent
from tests.support.net import free_port

ALICE = "spiffe://cluster.local/ns/default/sa/alice"
BOB = "spiffe://cluster.local/ns/default/sa/bob"
SERVER = "spiffe://cluster.local/ns/default/sa/bookinfo"
LISTENER_SCOPE = "listener.127.0.0.1_15006."


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class EchoApp:
    """What a terminal filter would be: answers each line with the peer's SPIFFE ID and the ALPN."""

    def __init__(self) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        info = self.transport.info
        peer = info.peer_uri_sans[0] if info.peer_uri_sans else "-"
        text = data.strip().decode()
        self.transport.write(f"peer={peer} alpn={info.alpn or '-'} got={text}\n".encode())
        if text == "hello":  # openssl s_client waits for the server to finish (close_notify, FIN)
            self.transport.close()

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class Accepted(asyncio.Protocol):
    """A listener in miniature: peek the ClientHello the way tls_inspector does, then hand the bytes
    already read to the TLS layer (the listener.py hook)."""

    def __init__(self, server: TlsServer) -> None:
        self.server = server
        self.peeked = b""
        self.raw = None
        self.remote_address = ("127.0.0.1", 0)

    def connection_made(self, transport) -> None:
        self.raw = transport

    def data_received(self, data: bytes) -> None:
        self.peeked += data
        status, _hello = parse_client_hello(self.peeked)
        if status == NEED_MORE:
            return
        assert status == FOUND, status
        self.server.sni_seen.append(_hello.server_name)
        app = EchoApp()
        tls = self.server.factory.wrap_downstream(
            self.raw, app, self.peeked, self.server.stats.scope(LISTENER_SCOPE)
        )
        if tls is None:
            self.raw.close()
            return
        app.transport = tls
        self.server.connections.append(tls)


class TlsServer:
    """An asyncio server on its own loop thread, so the test can use blocking clients and openssl."""

    def __init__(self, make_factory) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stats = Store()
        self.connections: list = []
        self.sni_seen: list[str] = []
        self.port = free_port()
        self.manager: SecretManager | None = None

        async def setup():
            self.factory, self.manager = make_factory()
            if self.manager is not None:
                self.manager.start()
            self.server = await self.loop.create_server(lambda: Accepted(self), "127.0.0.1", self.port)

        self.run(setup())

    def run(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def counter(self, name: str) -> int:
        c = self.stats.counters.get(LISTENER_SCOPE + name)
        return c.value if c else 0

    def close(self) -> None:
        async def teardown():
            self.server.close()
            for tls in self.connections:
                tls.abort()
            if self.manager is not None:
                await self.manager.stop()

        try:
            self.run(teardown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


def svid(citadel, sa: str, tmp: Path) -> tuple[Path, Path]:
    """A real SVID from citadel for default/<sa>: (chain file without root, key file)."""
    channel, stub = citadel.stub()
    try:
        csr, key = csr_for(f"spiffe://cluster.local/ns/default/sa/{sa}")
        chain = create(stub, csr, citadel.token("default", sa))
    finally:
        channel.close()
    cert_path, key_path = tmp / f"{sa}.pem", tmp / f"{sa}.key"
    cert_path.write_text("".join(chain[:-1] if len(chain) > 1 else chain))
    key_path.write_bytes(key)
    return cert_path, key_path


def static_factory(citadel, tmp: Path, *, require=True, san_exact=ALICE):
    cert, key = svid(citadel, "bookinfo", tmp)
    common = {
        "tls_certificates": [{"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}],
        "validation_context": {"trusted_ca": {"filename": str(citadel.root_dir / "root-cert.pem")},
                               "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": san_exact}}]},
        "alpn_protocols": ["h2", "http/1.1"],
    }  # fmt: skip
    msg = json_format.ParseDict(
        {"common_tls_context": common, "require_client_certificate": require}, tls_pb2.DownstreamTlsContext()
    )
    return lambda: (TlsSocketFactory(compile_downstream(msg, "tls"), None, "tls"), None)


def s_client(port: int, root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(root), "-quiet",
         "-verify_return_error", *extra],
        input="hello\n", capture_output=True, text=True, timeout=20,
    )  # fmt: skip


@pytest.fixture
def citadel(procs, tmp_path):
    return start_citadel(procs, tmp_path / "ca")


@pytest.fixture
def server_factory():
    servers = []

    def make(factory):
        server = TlsServer(factory)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def test_openssl_without_client_certificate_is_refused(citadel, tmp_path, server_factory):
    server = server_factory(static_factory(citadel, tmp_path))
    out = s_client(server.port, citadel.root_dir / "root-cert.pem")
    assert "peer=" not in out.stdout
    assert "alert" in out.stderr.lower() or out.returncode != 0, out.stderr
    assert server.counter("ssl.handshake") == 0
    assert server.counter("ssl.fail_verify_no_cert") + server.counter("ssl.connection_error") == 1


def test_valid_svid_is_accepted_and_the_server_sees_its_spiffe_id(citadel, tmp_path, server_factory):
    server = server_factory(static_factory(citadel, tmp_path))
    cert, key = svid(citadel, "alice", tmp_path)
    out = s_client(server.port, citadel.root_dir / "root-cert.pem", "-cert", str(cert), "-key", str(key),
                   "-alpn", "http/1.1")  # fmt: skip
    assert f"peer={ALICE} alpn=http/1.1 got=hello" in out.stdout, out.stderr
    assert server.counter("ssl.handshake") == 1
    assert server.counter("ssl.fail_verify_san") == 0


def test_svid_whose_san_does_not_match_is_refused(citadel, tmp_path, server_factory):
    server = server_factory(static_factory(citadel, tmp_path))
    cert, key = svid(citadel, "bob", tmp_path)
    out = s_client(server.port, citadel.root_dir / "root-cert.pem", "-cert", str(cert), "-key", str(key))
    assert "peer=" not in out.stdout
    assert server.counter("ssl.fail_verify_san") == 1
    assert server.counter("ssl.handshake") == 0


def test_tls_1_1_is_refused(citadel, tmp_path, server_factory):
    server = server_factory(static_factory(citadel, tmp_path))
    cert, key = svid(citadel, "alice", tmp_path)
    out = s_client(server.port, citadel.root_dir / "root-cert.pem", "-cert", str(cert), "-key", str(key),
                   "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")  # fmt: skip
    assert "peer=" not in out.stdout
    assert out.returncode != 0
    assert "protocol version" in out.stderr.lower() or "unsupported protocol" in out.stderr.lower(), (
        out.stderr
    )
    assert server.counter("ssl.connection_error") == 1


def _client(citadel, cert: Path, key: Path, port: int) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(citadel.root_dir / "root-cert.pem"))
    ctx.load_cert_chain(str(cert), str(key))
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(sock)


def _ask(conn: ssl.SSLSocket, text: str) -> str:
    conn.sendall(text.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        assert chunk, "server closed the connection"
        data += chunk
    return data.decode()


def _server_serial(conn: ssl.SSLSocket) -> int:
    return x509.load_der_x509_certificate(conn.getpeercert(binary_form=True)).serial_number


def test_rotation_through_a_real_agent_new_connections_new_cert_old_connection_stays(
    procs, citadel, tmp_path, server_factory
):
    _agent, socket_path = start_agent(procs, tmp_path, citadel, ttl="6s")  # renews at about 3 s
    sds = {
        "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                              "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]},
        "resource_api_version": "V3",
    }  # fmt: skip
    msg = json_format.ParseDict(
        {"common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": sds}],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/ns/default/"}}]},
                "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": sds}}},
         "require_client_certificate": True},
        tls_pb2.DownstreamTlsContext(),
    )  # fmt: skip
    sds_cluster = json_format.ParseDict(
        {"name": "sds-grpc", "type": "STATIC", "load_assignment": {"cluster_name": "sds-grpc", "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(socket_path)}}}}]}]}},
        cluster_pb2.Cluster(),
    )  # fmt: skip

    def make():
        manager = SecretManager([], [sds_cluster])
        return TlsSocketFactory(compile_downstream(msg, "tls"), manager, "tls"), manager

    server = server_factory(make)
    deadline = time.monotonic() + 15
    while not server.factory.ready:
        assert time.monotonic() < deadline, "no secrets from the agent's SDS"
        time.sleep(0.05)
    first_generation = server.factory.generation
    cert, key = svid(citadel, "alice", tmp_path)
    old = _client(citadel, cert, key, server.port)
    try:
        assert _ask(old, "one").startswith(f"peer={ALICE}")
        first_serial = _server_serial(old)
        while server.factory.generation == first_generation:
            assert time.monotonic() < deadline + 10, "the agent's rotation never reached the proxy"
            time.sleep(0.05)
        new = _client(citadel, cert, key, server.port)
        try:
            assert _ask(new, "two").startswith(f"peer={ALICE}")
            assert _server_serial(new) != first_serial  # new connections: the rotated certificate
        finally:
            new.close()
        assert "got=three" in _ask(old, "three")  # the existing connection is unaffected
        assert _server_serial(old) == first_serial
    finally:
        old.close()
    assert server.manager.clients  # streams were open; the fixture stops them
    leaf = x509.load_der_x509_certificate(server.factory.current.local_certificate_der)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    ) == [SERVER]


class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.got_line = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if data.endswith(b"\n"):
            self.got_line.set()


def test_upstream_tls_with_sni_alpn_and_san_check(citadel, tmp_path, server_factory):
    server = server_factory(static_factory(citadel, tmp_path, san_exact=ALICE))
    cert, key = svid(citadel, "alice", tmp_path)
    sni = "outbound_.9080_._.reviews.default.svc.cluster.local"

    def upstream_factory(san: str) -> TlsSocketFactory:
        msg = json_format.ParseDict(
            {"common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": str(cert)},
                                      "private_key": {"filename": str(key)}}],
                "validation_context": {"trusted_ca": {"filename": str(citadel.root_dir / "root-cert.pem")},
                                       "match_subject_alt_names": [{"exact": san}]},
                "alpn_protocols": ["istio", "http/1.1"]},
             "sni": sni},
            tls_pb2.UpstreamTlsContext(),
        )  # fmt: skip
        return TlsSocketFactory(compile_upstream(msg, "cluster.transport_socket"), None, "c")

    stats = Store()
    scope = stats.scope("cluster.reviews.")

    async def call(factory):
        loop = asyncio.get_running_loop()
        app = Collect()
        _, tls = await loop.create_connection(
            factory.protocol_factory(lambda: app, scope), "127.0.0.1", server.port
        )
        tls.write(b"over tls\n")  # written before the handshake completes: sent right after it
        try:
            await tls.wait_handshake()
            await asyncio.wait_for(app.got_line.wait(), 5)
            return tls.info, app.data.decode()
        finally:
            tls.close()

    info, reply = server.run(call(upstream_factory(SERVER)))
    assert reply.startswith(f"peer={ALICE} alpn=http/1.1 got=over tls")
    assert info.alpn == "http/1.1" and info.peer_uri_sans == (SERVER,)
    assert server.sni_seen[-1] == sni
    assert stats.counters["cluster.reviews.ssl.handshake"].value == 1
    # the server's SPIFFE ID is not the one this cluster expects: the connection fails
    with pytest.raises(Exception, match="match none"):
        server.run(call(upstream_factory(BOB)))
    assert stats.counters["cluster.reviews.ssl.fail_verify_san"].value == 1
