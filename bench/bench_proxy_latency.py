"""Proxy latency at a fixed 1000 req/s (open-loop paced client): p50/p90/p99 each path adds over direct.

The same upstream (nginx, 1 KB) and proxies as bench_proxy, plus the mTLS sidecar pair: client app ->
client sidecar -> mutual TLS -> server sidecar -> app, two Isthmus processes with SVIDs from
citadel's CA code (bench.common.mtls_pair). Each path gets the same schedule (bench.paced: requests
leave on time whatever the answers do; latency from write to last byte), compared with the same
plaintext direct path. The paths are interleaved and repeated; medians are reported. The cost
columns: CPU seconds the proxy (for the pair: both sidecars) spent per 1000 requests at this rate
(from /proc/<pid>/stat), which is also its vCPU per 1000 req/s, and its RSS after the run; for the
pair also each sidecar's CPU (client, server) and the TLS connections the client sidecar opened to
the server sidecar over the whole benchmark (how many resumed a session): a handshake costs a few
requests' worth of CPU, and the open-loop client makes the pool open more whenever answers lag.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import urllib.request

from bench.common import (
    cpu_seconds,
    haproxy_proxy,
    isthmus_proxy,
    mtls_pair,
    nginx_proxy,
    nginx_upstream,
    rss_mb,
)
from bench.paced import paced_latency

RATE = 1000
QUANTILES = ("p50", "p90", "p99")
NAMES = [
    "direct",
    "nginx (1 worker)",
    "haproxy (1 thread)",
    "isthmus (1 worker)",
    "isthmus mTLS sidecar pair",
]


def run(quick: bool) -> list[dict]:
    seconds, repeats, warmup = (2, 1, 0.5) if quick else (10, 3, 2.0)
    results: dict[str, list[dict]] = {n: [] for n in NAMES}
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(nginx_upstream())
        targets = {
            "direct": (upstream, []),
            "nginx (1 worker)": _one(stack.enter_context(nginx_proxy(upstream))),
            "haproxy (1 thread)": _one(stack.enter_context(haproxy_proxy(upstream))),
            "isthmus (1 worker)": _one(stack.enter_context(isthmus_proxy(upstream))),
            "isthmus mTLS sidecar pair": stack.enter_context(mtls_pair(upstream)),
        }
        for _ in range(repeats):
            for name in NAMES:
                port, procs = targets[name]
                cpu0 = [cpu_seconds(p.pid) for p in procs]
                r = paced_latency("127.0.0.1", port, RATE, seconds, warmup)
                if procs:
                    # CPU over warmup + measured part, per request sent in that time.
                    sent = RATE * (seconds + warmup)
                    each = [
                        (cpu_seconds(p.pid) - c0) / sent * 1000 for p, c0 in zip(procs, cpu0, strict=True)
                    ]
                    r["cpu_s_per_1k"] = sum(each)
                    if len(each) > 1:
                        r["cpu_s_per_1k_each"] = each
                    r["rss_mb"] = sum(rss_mb(p.pid) for p in procs)
                results[name].append(r)
        pair_client = targets["isthmus mTLS sidecar pair"][1][0]
        results["isthmus mTLS sidecar pair"][-1]["tls_handshakes"] = upstream_tls_handshakes(pair_client)
    return rows_from(results)


def upstream_tls_handshakes(proc) -> tuple[int, int]:
    """(TLS handshakes, of them resumed) of a proxy's clusters, from its admin /stats."""
    url = f"http://127.0.0.1:{proc.isthmus_admin_port}/stats?format=json&filter=ssl"
    with urllib.request.urlopen(url, timeout=10) as answer:
        stats = json.load(answer)["stats"]
    return handshakes_of({s["name"]: s.get("value", 0) for s in stats if "name" in s})


def handshakes_of(counters: dict[str, int]) -> tuple[int, int]:
    """Sum of ``cluster.*.ssl.handshake`` and ``cluster.*.ssl.session_reused`` (pure)."""
    total = reused = 0
    for name, value in counters.items():
        if name.startswith("cluster."):
            if name.endswith(".ssl.handshake"):
                total += value
            elif name.endswith(".ssl.session_reused"):
                reused += value
    return total, reused


def _one(target: tuple) -> tuple:
    port, proc = target
    return port, [proc]


def rows_from(results: dict[str, list[dict]]) -> list[dict]:
    """Medians per path and what each adds over the direct path (pure, for the table and the JSON)."""
    base = {q: statistics.median(r[f"{q}_ms"] for r in results["direct"]) for q in QUANTILES}
    rows = []
    for name, runs in results.items():
        med = {q: statistics.median(r[f"{q}_ms"] for r in runs) for q in QUANTILES}
        cpu = [r["cpu_s_per_1k"] for r in runs if "cpu_s_per_1k" in r]
        row = {"path": name, "rate": RATE}
        for q in QUANTILES:
            row[f"{q}_ms"] = med[q]
        for q in QUANTILES:
            row[f"{q}_added_ms"] = None if name == "direct" else med[q] - base[q]
        row["cpu_s_per_1k_rq"] = statistics.median(cpu) if cpu else None
        each = [r["cpu_s_per_1k_each"] for r in runs if "cpu_s_per_1k_each" in r]
        # Per process (the pair: client sidecar, server sidecar), medians over the runs.
        row["cpu_s_per_1k_rq_each"] = (
            "/".join(f"{statistics.median(col):.3f}" for col in zip(*each, strict=True)) if each else None
        )
        row["rss_mb"] = runs[-1].get("rss_mb")
        handshakes = runs[-1].get("tls_handshakes") if runs else None
        row["tls_handshakes"] = f"{handshakes[0]} ({handshakes[1]} resumed)" if handshakes else None
        row["errors"] = sum(r["errors"] for r in runs)
        rows.append(row)
    return rows
