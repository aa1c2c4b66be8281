"""The latency benchmark's pair row: each sidecar's CPU and the TLS connections the client sidecar
opened (pure parts)."""

from __future__ import annotations

from bench.bench_proxy_latency import NAMES, handshakes_of, rows_from


def run(p50, **extra):
    return {"p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "errors": 0, **extra}


def test_pair_row_shows_each_sidecars_cpu_median_and_the_handshakes():
    results = {name: [run(0.2)] * 3 for name in NAMES}
    results["isthmus (1 worker)"] = [run(1.0, cpu_s_per_1k=0.3, rss_mb=50.0)] * 3
    results["isthmus mTLS sidecar pair"] = [
        run(2.0, cpu_s_per_1k=0.9, cpu_s_per_1k_each=[0.5, 0.4], rss_mb=100.0),
        run(2.0, cpu_s_per_1k=0.7, cpu_s_per_1k_each=[0.3, 0.4], rss_mb=100.0),
        run(2.0, cpu_s_per_1k=0.8, cpu_s_per_1k_each=[0.4, 0.6], rss_mb=100.0, tls_handshakes=(12, 11)),
    ]
    rows = {row["path"]: row for row in rows_from(results)}
    pair = rows["isthmus mTLS sidecar pair"]
    assert pair["cpu_s_per_1k_rq"] == 0.8
    assert pair["cpu_s_per_1k_rq_each"] == "0.400/0.400"  # client, server: medians of each column
    assert pair["tls_handshakes"] == "12 (11 resumed)"
    one = rows["isthmus (1 worker)"]
    assert one["cpu_s_per_1k_rq_each"] is None and one["tls_handshakes"] is None


def test_handshakes_are_summed_over_clusters_only():
    counters = {
        "cluster.outbound|9080||reviews.ssl.handshake": 10,
        "cluster.outbound|9080||reviews.ssl.session_reused": 9,
        "cluster.other.ssl.handshake": 2,
        "listener.127.0.0.1_15006.ssl.handshake": 50,  # the server side's, not opened by this proxy
        "cluster.outbound|9080||reviews.ssl.connection_error": 1,
    }
    assert handshakes_of(counters) == (12, 9)
