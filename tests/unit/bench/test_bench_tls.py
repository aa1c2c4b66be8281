"""bench_tls: the TLS layer's cost measured with the mTLS pair's own configuration."""

from __future__ import annotations

from bench import bench_tls
from bench.common import spiffe_id


def test_the_pair_contexts_handshake_mutually_and_resume():
    server_built, client_built, sni = bench_tls.contexts()
    assert sni.startswith("outbound_.9080_._.reviews")
    *_, server, client = bench_tls.connect(server_built, client_built, sni)
    assert server.info.peer_uri_sans == (spiffe_id("productpage"),)
    assert client.info.peer_uri_sans == (spiffe_id("reviews"),)
    assert client.info.alpn == "istio-peer-exchange"  # the first of the client's that the server offers
    *_, client = bench_tls.connect(server_built, client_built, sni)
    assert client.session_reused


def test_rows_name_each_cost_with_both_sides():
    rows = bench_tls.run(quick=True)
    assert [r["tls cost"] for r in rows] == [
        "connection, session resumed",
        "connection, full mutual handshake",
        "request + 1 KB answer",
    ]
    for row in rows:
        assert row["client_sidecar_cpu_us"] > 0 and row["server_sidecar_cpu_us"] > 0
