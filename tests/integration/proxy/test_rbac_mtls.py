"""RBAC principals over real mutual TLS: SVIDs from a real citadel, a real proxy with a TLS listener
(require_client_certificate), allow by principal (HTTP RBAC) and deny by principal (network RBAC)."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.request
from pathlib import Path

import pytest

from tests.integration.citadel.harness import create, csr_for, start_citadel
from tests.integration.proxy.harness import http_listener, start_proxy, start_upstream, static_cluster
from tests.support.net import free_port, wait_for_port

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
NET_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
ALICE = "spiffe://cluster.local/ns/default/sa/alice"


def svid(citadel, sa: str, tmp: Path) -> tuple[Path, Path]:
    channel, stub = citadel.stub()
    try:
        csr, key = csr_for(f"spiffe://cluster.local/ns/default/sa/{sa}")
        chain = create(stub, csr, citadel.token("default", sa))
    finally:
        channel.close()
    cert, key_path = tmp / f"{sa}.pem", tmp / f"{sa}.key"
    cert.write_text("".join(chain[:-1] if len(chain) > 1 else chain))
    key_path.write_bytes(key)
    return cert, key_path


@pytest.fixture
def pki(procs, tmp_path):
    citadel = start_citadel(procs, tmp_path / "ca")
    certs = {sa: svid(citadel, sa, tmp_path) for sa in ("server", "alice", "bob")}
    return citadel.root_dir / "root-cert.pem", certs


def downstream_tls(root: Path, cert: Path, key: Path) -> dict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": TLS,
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [
                    {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}
                ],
                "validation_context": {"trusted_ca": {"filename": str(root)}},
            },
        },
    }


def client(root: Path, cert: Path, key: Path, port: int) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(root))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))


def read_all(s) -> bytes:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


def test_http_rbac_allows_by_spiffe_principal_over_mtls(procs, pki):
    root, certs = pki
    up = start_upstream(procs, "app")
    port = free_port()
    rules = {
        "action": "ALLOW",
        "policies": {
            "allow-alice": {
                "permissions": [{"any": True}],
                "principals": [{"authenticated": {"principal_name": {"exact": ALICE}}}],
            }
        },
    }
    routes = {
        "virtual_hosts": [
            {
                "name": "vh",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
            }
        ]
    }
    listener = http_listener(
        port,
        routes,
        http_filters=[{"name": "envoy.filters.http.rbac", "typed_config": {"@type": RBAC, "rules": rules}}],
    )
    listener["filter_chains"][0]["transport_socket"] = downstream_tls(root, *certs["server"])
    start_proxy(
        procs,
        {"static_resources": {"listeners": [listener], "clusters": [static_cluster("app", [up])]}},
        wait_ports=(port,),
    )

    def get(sa: str) -> bytes:
        with client(root, *certs[sa], port) as s:
            s.sendall(b"GET /productpage HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
            return read_all(s)

    assert get("alice").startswith(b"HTTP/1.1 200")
    denied = get("bob")
    assert denied.startswith(b"HTTP/1.1 403") and denied.endswith(b"RBAC: access denied")


def test_network_rbac_denies_by_spiffe_principal_after_the_handshake(procs, pki):
    root, certs = pki
    echo_port = free_port()
    proc = procs.python(
        "-m", "tests.integration.proxy.echo_server", "--host", "127.0.0.1", "--port", str(echo_port)
    )
    wait_for_port("127.0.0.1", echo_port, proc=proc)
    port = free_port()
    rules = {
        "action": "DENY",
        "policies": {
            "deny-bob": {
                "permissions": [{"any": True}],
                "principals": [{"authenticated": {"principal_name": {"suffix": "/sa/bob"}}}],
            }
        },
    }
    chain = {
        "filters": [
            {
                "name": "envoy.filters.network.rbac",
                "typed_config": {"@type": NET_RBAC, "stat_prefix": "tcp.", "rules": rules},
            },
            {
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {"@type": TCP, "stat_prefix": "echo", "cluster": "echo"},
            },
        ],
        "transport_socket": downstream_tls(root, *certs["server"]),
    }
    listener = {
        "name": "tcp",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [chain],
    }
    proxy = start_proxy(
        procs,
        {"static_resources": {"listeners": [listener], "clusters": [static_cluster("echo", [echo_port])]}},
        wait_ports=(port,),
    )
    with client(root, *certs["alice"], port) as s:
        s.sendall(b"ping\n")
        assert b"ping" in s.recv(1024)
    with client(root, *certs["bob"], port) as s:
        s.sendall(b"ping\n")
        assert b"ping" not in read_all(s)  # closed on the first bytes, nothing echoed
    with urllib.request.urlopen(f"{proxy.admin}/stats?format=json", timeout=5) as r:
        stats = {x["name"]: x.get("value") for x in json.load(r)["stats"] if "name" in x}
    assert stats["tcp.rbac.denied"] == 1 and stats["tcp.rbac.allowed"] >= 1
