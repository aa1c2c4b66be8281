"""Proxy throughput: wrk (HTTP/1.1 keep-alive, 1 KB body, 32 connections) direct to nginx vs through Isthmus.

Runs are interleaved and repeated; the table shows medians. The performance issue extends this with
nginx and HAProxy as proxies, paced latency, mTLS and cost.
"""

from __future__ import annotations

import statistics

from bench.common import isthmus_proxy, nginx_upstream, wrk


def run(quick: bool) -> list[dict]:
    seconds, repeats = (3, 1) if quick else (10, 3)
    results: dict[str, list[dict]] = {"direct": [], "isthmus (1 worker)": []}
    with nginx_upstream() as upstream, isthmus_proxy(upstream) as (proxy_port, _):
        for _ in range(repeats):
            results["direct"].append(wrk(f"http://127.0.0.1:{upstream}/", seconds))
            results["isthmus (1 worker)"].append(wrk(f"http://127.0.0.1:{proxy_port}/", seconds))
    direct_rps = statistics.median(r["rps"] for r in results["direct"])
    rows = []
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        rows.append(
            {
                "path": name,
                "rps": rps,
                "vs_direct": rps / direct_rps,
                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
            }
        )
    return rows
