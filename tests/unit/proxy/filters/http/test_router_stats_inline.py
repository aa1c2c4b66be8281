"""The router's per-response charge written out for codes seen before (and its stats, upstream request
and attempt objects made without __init__ frames): the counters must be what charge() gives, request
after request, with dynamic stats on and off, for first-seen and repeated codes alike."""

from __future__ import annotations

import re

import pytest

from proxy.filters.http.router.filter import RouterConfig, RouterFilter, _ClusterRouterStats
from proxy.stats.store import Store
from tests.unit.proxy.filters.http.fakes import (
    FakeCluster,
    FakeResponse,
    FakeStream,
    context,
    request,
    route_for,
)

CFG = {
    "virtual_hosts": [
        {"name": "vh", "domains": ["*"], "routes": [{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}
    ]
}  # fmt: skip
_CHARGED = re.compile(r"cluster\.backend\.(retry\.)?upstream_rq_(\d{3}|\dxx|completed)$")
STATUSES = [200, 200, 404, 503, 200, 404, 201, 503, 200, 302, 302, 200]


@pytest.mark.parametrize("dynamic", [True, False])
async def test_counters_match_charge_for_first_and_repeated_codes(dynamic):
    ctx, store = context()
    script = [FakeResponse(s, [("content-type", "text/plain")], [b"ok"]) for s in STATUSES]
    cluster = FakeCluster("backend", store, script=script)
    ctx.cluster_manager.clusters["backend"] = cluster
    router = RouterFilter(RouterConfig(ctx, dynamic_stats=dynamic))
    oracle_store = Store()
    oracle = _ClusterRouterStats(oracle_store.scope("cluster.backend."))
    for i, status in enumerate(STATUSES):
        headers = request(f"/r{i}")
        stream = FakeStream(headers, route_for(CFG, headers))
        await router.on_request_headers(stream, True)
        assert stream.response_headers.status == status
        assert b"".join(stream.data) == b"ok" and stream.response_end
        oracle.charge(status, dynamic)
        charged = {n: c.value for n, c in store.counters.items() if _CHARGED.match(n) and c.value}
        assert charged == {n: c.value for n, c in oracle_store.counters.items() if c.value}
    assert store.histograms["cluster.backend.upstream_rq_time"].count == len(STATUSES)
    assert len(cluster.requests) == len(STATUSES)
