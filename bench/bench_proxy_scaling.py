"""Proxy scaling: Isthmus with --concurrency 2 against 1 worker (wrk, keep-alive, 1 KB, 32 connections).
One nginx worker is the upstream. Runs are interleaved (1, 2, 1, 2, ...) and repeated; the table shows
median throughput, the ratio to one worker, the CPU spent per 1000 requests by the whole proxy (main
and workers, /proc/<pid>/stat) and how many CPUs the machine has: the load generator, the upstream and
the workers share them, so on 2 cores a second worker mostly competes with wrk and nginx.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from bench.common import (
    REPO,
    _cluster,
    _hcm,
    _listener,
    _socket_address,
    cpu_seconds,
    nginx_upstream,
    process,
    rss_mb,
    wrk,
)
from tests.support.net import free_port, wait_for_http, wait_for_port

CONNECTIONS = 32
READY_TIMEOUT_S = 90.0


@contextlib.contextmanager
def isthmus(upstream_port: int, concurrency: int):
    """An Isthmus proxy with --concurrency `concurrency` (stats and a file access log on)."""
    listen, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-scaling-") as tmp:
        hcm = _hcm("bench", "upstream", str(Path(tmp) / "access.log"))
        bootstrap = {
            "admin": {"address": _socket_address(admin)},
            "static_resources": {
                "listeners": [_listener("bench", listen, hcm)],
                "clusters": [_cluster("upstream", upstream_port)],
            },
        }
        path = Path(tmp) / "bootstrap.yaml"
        path.write_text(yaml.safe_dump(bootstrap))
        args = [sys.executable, "-m", "proxy", "-c", str(path), "-l", "warning"]
        args += ["--concurrency", str(concurrency), "--drain-time-s", "1"]
        with process(args, cwd=REPO) as proc:
            wait_for_http(f"http://127.0.0.1:{admin}/ready", timeout=READY_TIMEOUT_S, proc=proc)
            wait_for_port("127.0.0.1", listen, proc=proc)
            yield listen, proc


def run(quick: bool) -> list[dict]:
    seconds, repeats = (3, 1) if quick else (10, 3)
    counts = (1, 2)
    results: dict[int, list[dict]] = {n: [] for n in counts}
    rss: dict[int, float] = {}
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(nginx_upstream())
        targets = {n: stack.enter_context(isthmus(upstream, n)) for n in counts}
        for port, _ in targets.values():  # warm every path (connections, caches)
            wrk(f"http://127.0.0.1:{port}/", 1, CONNECTIONS)
        for _ in range(repeats):
            for n in counts:
                port, proc = targets[n]
                cpu0 = cpu_seconds(proc.pid)
                r = wrk(f"http://127.0.0.1:{port}/", seconds, CONNECTIONS)
                r["cpu_s_per_1k"] = (cpu_seconds(proc.pid) - cpu0) / max(1.0, r["rps"] * seconds) * 1000
                results[n].append(r)
        for n, (_, proc) in targets.items():
            rss[n] = rss_mb(proc.pid)
    one = statistics.median(r["rps"] for r in results[1])
    rows = []
    for n, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        rows.append(
            {
                "path": f"isthmus --concurrency {n}",
                "rps": rps,
                "vs_1_worker": rps / one if one else None,
                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                "cpu_s_per_1k_rq": statistics.median(r["cpu_s_per_1k"] for r in runs),
                "rss_mb": rss[n],
                "cpus": os.cpu_count(),
                "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
                "runs": len(runs),
            }
        )
    return rows
