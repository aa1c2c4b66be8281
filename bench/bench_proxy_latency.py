"""Proxy latency at a fixed 1000 req/s (open-loop paced client): p50/p90/p99 each proxy adds over direct.

The same upstream (nginx, 1 KB) and proxies as bench_proxy. Each path gets the same schedule
(bench.paced: requests leave on time whatever the answers do; latency from write to last byte). The
paths are interleaved and repeated; medians are reported. The cost columns: CPU seconds each proxy
spent per 1000 requests at this rate (from /proc/<pid>/stat), which is also its vCPU per 1000 req/s,
and its RSS after the run. The mTLS sidecar-pair rows come with the TLS transport (not measured yet).
"""

from __future__ import annotations

import contextlib
import statistics

from bench.common import cpu_seconds, haproxy_proxy, isthmus_proxy, nginx_proxy, nginx_upstream, rss_mb
from bench.paced import paced_latency

RATE = 1000


def run(quick: bool) -> list[dict]:
    seconds, repeats, warmup = (2, 1, 0.5) if quick else (10, 3, 2.0)
    names = ["direct", "nginx (1 worker)", "haproxy (1 thread)", "isthmus (1 worker)"]
    results: dict[str, list[dict]] = {n: [] for n in names}
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(nginx_upstream())
        targets = {
            "direct": (upstream, None),
            "nginx (1 worker)": stack.enter_context(nginx_proxy(upstream)),
            "haproxy (1 thread)": stack.enter_context(haproxy_proxy(upstream)),
            "isthmus (1 worker)": stack.enter_context(isthmus_proxy(upstream)),
        }
        for _ in range(repeats):
            for name in names:
                port, proc = targets[name]
                cpu0 = cpu_seconds(proc.pid) if proc is not None else 0.0
                r = paced_latency("127.0.0.1", port, RATE, seconds, warmup)
                if proc is not None:
                    # CPU over warmup + measured part, per request sent in that time.
                    r["cpu_s_per_1k"] = (cpu_seconds(proc.pid) - cpu0) / (RATE * (seconds + warmup)) * 1000
                    r["rss_mb"] = rss_mb(proc.pid)
                results[name].append(r)
    base = {q: statistics.median(r[f"{q}_ms"] for r in results["direct"]) for q in ("p50", "p90", "p99")}
    rows = []
    for name, runs in results.items():
        med = {q: statistics.median(r[f"{q}_ms"] for r in runs) for q in ("p50", "p90", "p99")}
        cpu = [r["cpu_s_per_1k"] for r in runs if "cpu_s_per_1k" in r]
        row = {"path": name, "rate": RATE}
        for q in ("p50", "p90", "p99"):
            row[f"{q}_ms"] = med[q]
        for q in ("p50", "p90", "p99"):
            row[f"{q}_added_ms"] = None if name == "direct" else med[q] - base[q]
        row["cpu_s_per_1k_rq"] = statistics.median(cpu) if cpu else None
        row["rss_mb"] = runs[-1].get("rss_mb")
        row["errors"] = sum(r["errors"] for r in runs)
        rows.append(row)
    return rows
