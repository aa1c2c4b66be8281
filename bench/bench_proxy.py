"""Proxy throughput: wrk (HTTP/1.1 keep-alive, 1 KB body, 32 connections): direct, nginx, HAProxy, Isthmus.

One nginx worker is the upstream. The proxies each run one worker: nginx as a reverse proxy (1 worker,
keep-alive upstream connections), HAProxy (1 thread), Isthmus (1 worker, stats on). Runs are interleaved
(direct, nginx, haproxy, isthmus, direct, ...) and repeated; the table shows medians, the ratio to the
direct path and to nginx, and the CPU each proxy spent per 1000 requests (from /proc/<pid>/stat).
"""

from __future__ import annotations

import contextlib
import statistics

from bench.common import cpu_seconds, haproxy_proxy, isthmus_proxy, nginx_proxy, nginx_upstream, wrk

CONNECTIONS = 32


def run(quick: bool) -> list[dict]:
    seconds, repeats = (3, 1) if quick else (10, 3)
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
        # Warm every path once (connections, caches) before measuring.
        for port, _ in targets.values():
            wrk(f"http://127.0.0.1:{port}/", 1, CONNECTIONS)
        for _ in range(repeats):
            for name in names:
                port, proc = targets[name]
                cpu0 = cpu_seconds(proc.pid) if proc is not None else 0.0
                r = wrk(f"http://127.0.0.1:{port}/", seconds, CONNECTIONS)
                if proc is not None:
                    r["cpu_s_per_1k"] = (cpu_seconds(proc.pid) - cpu0) / (r["rps"] * seconds) * 1000
                results[name].append(r)
    direct_rps = statistics.median(r["rps"] for r in results["direct"])
    nginx_rps = statistics.median(r["rps"] for r in results["nginx (1 worker)"])
    rows = []
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        cpu = [r["cpu_s_per_1k"] for r in runs if "cpu_s_per_1k" in r]
        rows.append(
            {
                "path": name,
                "rps": rps,
                "vs_direct": rps / direct_rps,
                "vs_nginx": rps / nginx_rps,
                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                "cpu_s_per_1k_rq": statistics.median(cpu) if cpu else None,
                "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
                "runs": len(runs),
            }
        )
    return rows
