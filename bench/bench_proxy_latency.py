"""Proxy latency at a fixed 1000 req/s (open-loop paced client): p50/p90/p99 each path adds over direct.

The same upstream (nginx, 1 KB) and proxies as bench_proxy, plus the mTLS sidecar pair: client app ->
client sidecar -> mutual TLS -> server sidecar -> app, two Isthmus processes with SVIDs from
citadel's CA code (bench.common.mtls_pair). Each path gets the same schedule (bench.paced: requests
leave on time whatever the answers do; latency from write to last byte), compared with the same
plaintext direct path. The paths are interleaved and repeated; medians are reported. The cost
columns: CPU seconds the proxy (for the pair: both sidecars) spent per 1000 requests at this rate
(from /proc/<pid>/stat), which is also its vCPU per 1000 req/s, and its RSS after the run.
"""

from __future__ import annotations

import contextlib
import statistics

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
                cpu0 = sum(cpu_seconds(p.pid) for p in procs)
                r = paced_latency("127.0.0.1", port, RATE, seconds, warmup)
                if procs:
                    # CPU over warmup + measured part, per request sent in that time.
                    cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
                    r["cpu_s_per_1k"] = cpu / (RATE * (seconds + warmup)) * 1000
                    r["rss_mb"] = sum(rss_mb(p.pid) for p in procs)
                results[name].append(r)
    return rows_from(results)


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
        row["rss_mb"] = runs[-1].get("rss_mb")
        row["errors"] = sum(r["errors"] for r in runs)
        rows.append(row)
    return rows
