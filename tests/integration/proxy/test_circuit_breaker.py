"""Circuit breakers through a real proxy process: overflow gives 503 UO with x-envoy-overloaded."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from tests.integration.proxy.routing_support import start_mesh

ROUTES = [{"name": "to-a", "match": {"prefix": "/"}, "route": {"cluster": "a", "timeout": "10s"}}]


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def breaker(**thresholds) -> dict:
    return {"a": {"circuit_breakers": {"thresholds": [thresholds]}}}


def concurrent(url: str, n: int, delay_ms: int) -> list[tuple[int, dict[str, str], bytes]]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: fetch(f"{url}/slow{i}", {"x-test-delay-ms": str(delay_ms)}), range(n)))


def test_pending_overflow_gives_503_uo(procs, tmp_path):
    mesh = start_mesh(
        procs, tmp_path, ROUTES, cluster_extra=breaker(max_connections=1, max_pending_requests=1)
    )
    # Warm the single allowed connection, so that exactly one request is active and one pending.
    assert fetch(f"{mesh.base}/warm")[0] == 200
    results = concurrent(mesh.base, 4, delay_ms=800)
    ok = [r for r in results if r[0] == 200]
    overflow = [r for r in results if r[0] == 503]
    assert len(ok) == 2 and len(overflow) == 2, [r[0] for r in results]
    for _, headers, body in overflow:
        assert headers.get("x-envoy-overloaded") == "true"
        assert b"overflow" in body
    # Both served requests went over the one connection.
    assert {json.loads(body)["upstream"] for _, _, body in ok} == {"a"}
    assert mesh.stat("cluster.a.upstream_rq_pending_overflow") == 2
    assert mesh.stat("cluster.a.upstream_cx_total") == 1
    flags = sorted(e["flags"] for e in mesh.log_entries(5) if e["path"].startswith("/slow"))
    assert flags == ["-", "-", "UO", "UO"]


def test_max_requests_overflow_gives_503_uo(procs, tmp_path):
    mesh = start_mesh(procs, tmp_path, ROUTES, cluster_extra=breaker(max_requests=2))
    results = concurrent(mesh.base, 5, delay_ms=800)
    codes = sorted(r[0] for r in results)
    assert codes == [200, 200, 503, 503, 503], codes
    assert all(h.get("x-envoy-overloaded") == "true" for c, h, _ in results if c == 503)
    assert mesh.stat("cluster.a.upstream_rq_pending_overflow") == 3
    # once the load is gone the cluster serves again, and the breaker gauge is closed
    assert fetch(f"{mesh.base}/after")[0] == 200
    assert mesh.stat("cluster.a.circuit_breakers.default.rq_open") == 0


def test_under_the_limits_nothing_overflows(procs, tmp_path):
    mesh = start_mesh(
        procs, tmp_path, ROUTES, cluster_extra=breaker(max_connections=2, max_pending_requests=10)
    )
    results = concurrent(mesh.base, 6, delay_ms=300)
    assert [r[0] for r in results] == [200] * 6
    assert mesh.stat("cluster.a.upstream_rq_pending_overflow") == 0
    assert mesh.stat("cluster.a.upstream_cx_total") <= 2
