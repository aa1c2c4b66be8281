"""envoy.filters.http.ratelimit through a real proxy process and a real gRPC rate limit service
(another process) with a 10 requests/s limit: the excess gets 429 with RL and x-envoy-ratelimited;
with the service down requests pass, or get 500 RLSE with failure_mode_deny."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.integration.proxy.mixer_support import RATELIMIT, start_mesh, start_services
from tests.support.net import free_port

ROUTES = [
    {
        "match": {"prefix": "/productpage"},
        "route": {
            "cluster": "app",
            "rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "productpage"}}]}],
        },
    },
    {"match": {"prefix": "/"}, "route": {"cluster": "app"}},
]


def ratelimit(**cfg) -> list[dict]:
    config = {
        "domain": "bookinfo",
        "timeout": "2s",  # generous on a loaded CI machine; the default (20 ms) is unit-tested
        "rate_limit_service": {
            "grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}},
            "transport_api_version": "V3",
        },
        **cfg,
    }
    return [{"name": "envoy.filters.http.ratelimit", "typed_config": {"@type": RATELIMIT, **config}}]


def test_ten_per_second_limit_gives_429_rl_to_the_excess(procs, tmp_path):
    svc = start_services(procs, tmp_path / "svc", "--rate-limit", "10")
    m = start_mesh(procs, tmp_path, svc.port, http_filters=ratelimit(), routes=ROUTES)
    started = time.time()
    with httpx.Client(base_url=m.base, timeout=5, limits=httpx.Limits(max_connections=10)) as c:
        with ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(lambda _: c.get("/productpage"), range(40)))
    seconds = int(time.time()) - int(started) + 1  # fixed one-second windows the burst touched
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(limited) == 40
    assert 10 <= len(ok) <= 10 * seconds
    assert limited and all(r.headers["x-envoy-ratelimited"] == "true" for r in limited)
    flags = [(e["code"], e["flags"]) for e in m.log_entries(40)]
    assert sorted(flags) == sorted([(200, "-")] * len(ok) + [(429, "RL")] * len(limited))
    assert m.stat("cluster.app.ratelimit.ok") == len(ok)
    assert m.stat("cluster.app.ratelimit.over_limit") == len(limited)
    # Routes without rate_limits never call the service.
    assert httpx.get(m.base + "/other", timeout=5).status_code == 200
    calls = svc.records("ratelimits.jsonl")
    assert len(calls) == 40
    assert calls[0] == {"domain": "bookinfo", "descriptors": [[["generic_key", "productpage"]]]}


def test_service_down_allows_by_default_and_denies_with_failure_mode_deny(procs, tmp_path):
    dead = free_port()
    allow = start_mesh(procs, tmp_path / "allow", dead, http_filters=ratelimit(), routes=ROUTES)
    assert httpx.get(allow.base + "/productpage", timeout=5).status_code == 200
    assert allow.stat("cluster.app.ratelimit.error") == 1
    assert allow.stat("cluster.app.ratelimit.failure_mode_allowed") == 1
    deny = start_mesh(
        procs, tmp_path / "deny", dead, http_filters=ratelimit(failure_mode_deny=True), routes=ROUTES
    )
    r = httpx.get(deny.base + "/productpage", timeout=5)
    assert r.status_code == 500
    assert deny.log_entries(1)[0]["flags"] == "RLSE"
