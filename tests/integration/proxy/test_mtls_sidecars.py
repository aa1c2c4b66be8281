"""Mutual TLS between two real sidecars, with identities from a real citadel through real agents.

client app ─HTTP─▶ client sidecar ─mTLS (SDS certs, SNI, SAN check)─▶ server sidecar ─HTTP─▶ app

What a user notices: requests flow; the app sees ``x-forwarded-client-cert`` naming the caller's SPIFFE
ID; plaintext and certificate-less clients cannot reach a STRICT port; a PERMISSIVE port takes both;
a sidecar refuses a server whose SPIFFE ID is not the expected one (503 UF); TLS stats count it all.
"""

from __future__ import annotations

import re
import socket
import subprocess

import pytest

from tests.integration.citadel.harness import start_citadel
from tests.integration.proxy.harness import start_upstream
from tests.integration.proxy.mtls_support import (
    CLIENT_SA,
    SERVER_SA,
    dynamic_secrets,
    echoed_headers,
    http_get,
    spiffe,
    start_mesh,
    stats,
)

XFCC = "x-forwarded-client-cert"


@pytest.fixture
def mesh(procs, tmp_path):
    citadel = start_citadel(procs, tmp_path / "ca")
    app_port = start_upstream(procs, "reviews")
    return start_mesh(procs, tmp_path, citadel, app_port)


def test_requests_flow_over_mtls_and_the_app_sees_the_callers_spiffe_id(mesh):
    # A forged XFCC from the calling app is dropped by its own sidecar (SANITIZE on outbound).
    status, _, body = http_get(mesh.outbound_port, "/reviews/1", {XFCC: "By=x;URI=spiffe://evil/sa/admin"})
    assert status == 200, body
    xfcc = echoed_headers(body)[XFCC]
    assert "evil" not in xfcc
    assert "," not in xfcc  # exactly one element: the server sidecar's
    assert f"By={spiffe(SERVER_SA)}" in xfcc
    assert f"URI={spiffe(CLIENT_SA)}" in xfcc
    assert re.search(r"Hash=[0-9a-f]{64}", xfcc), xfcc
    assert 'Subject=""' in xfcc  # Istio's set_current_client_cert_details: subject, dns, uri

    for _ in range(5):  # keep-alive pool reuses the mTLS connection
        assert http_get(mesh.outbound_port, "/reviews/2")[0] == 200

    server_stats, client_stats = stats(mesh.server), stats(mesh.client)
    assert server_stats[f"listener.127.0.0.1_{mesh.strict_port}.ssl.handshake"] >= 1
    cluster = "cluster.outbound|9080||reviews.default.svc.cluster.local."
    assert client_stats[cluster + "ssl.handshake"] >= 1
    assert client_stats[cluster + "upstream_rq_total"] >= 6
    # Envoy's version counters: TLS 1.2 or newer only
    assert any(k.startswith(cluster + "ssl.versions.TLSv1.") for k in client_stats), client_stats

    secrets = dynamic_secrets(mesh.server)
    assert set(secrets) == {"default", "ROOTCA"}
    key = secrets["default"]["secret"]["tls_certificate"]["private_key"]
    assert key == {"inline_string": "[redacted]"}  # never dumped
    assert secrets["default"]["version_info"]


def test_wrong_server_identity_is_refused_by_the_client_sidecar(mesh):
    status, headers, _ = http_get(mesh.outbound_port, "/wrong-san")
    assert status == 503
    assert stats(mesh.client)["cluster.wrong-san.ssl.fail_verify_san"] >= 1
    assert http_get(mesh.outbound_port, "/reviews/ok")[0] == 200  # the right identity still works


def test_plaintext_client_cannot_reach_a_strict_port(mesh):
    # Through a sidecar cluster without TLS: the server sidecar has no plaintext chain.
    status, _, _ = http_get(mesh.outbound_port, "/plaintext-to-strict")
    assert status == 503
    # And directly: the connection is closed without an HTTP answer.
    with socket.create_connection(("127.0.0.1", mesh.strict_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    assert not data.startswith(b"HTTP/")
    listener = f"listener.127.0.0.1_{mesh.strict_port}."
    assert stats(mesh.server)[listener + "no_filter_chain_match"] >= 2


def test_openssl_without_a_client_certificate_is_refused(mesh):
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{mesh.strict_port}", "-CAfile", str(mesh.root_cert),
         "-quiet", "-verify_return_error", "-alpn", "http/1.1"],
        input="GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n",
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert "HTTP/1.1" not in out.stdout
    assert "alert" in out.stderr.lower() or out.returncode != 0, out.stderr
    s = stats(mesh.server)
    listener = f"listener.127.0.0.1_{mesh.strict_port}."
    assert s.get(listener + "ssl.fail_verify_no_cert", 0) + s.get(listener + "ssl.connection_error", 0) >= 1


def test_permissive_port_accepts_plaintext_and_mtls(mesh):
    # mTLS through the client sidecar: XFCC carries the caller.
    status, _, body = http_get(mesh.outbound_port, "/permissive")
    assert status == 200, body
    assert f"URI={spiffe(CLIENT_SA)}" in echoed_headers(body)[XFCC]
    # Plaintext straight to the port: accepted, and no identity is claimed for it.
    status, _, body = http_get(mesh.permissive_port, "/plain", {XFCC: "URI=spiffe://forged"})
    assert status == 200, body
    assert XFCC not in echoed_headers(body)
    s = stats(mesh.server)
    assert s[f"listener.127.0.0.1_{mesh.permissive_port}.ssl.handshake"] >= 1
