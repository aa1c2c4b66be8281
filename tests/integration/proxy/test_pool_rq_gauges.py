"""The pool's written-out requests-resource accounting against a real upstream: the circuit breaker's
rq_open / remaining_rq gauges and count while requests are in flight and after they finish."""

from __future__ import annotations

import asyncio

import pytest

from proxy.stats.store import Store
from proxy.upstream.cluster_stats import ClusterStats
from proxy.upstream.errors import PoolOverflow
from proxy.upstream.host import Host
from proxy.upstream.pool import HttpConnectionPool, PoolSettings
from proxy.upstream.resources import ResourceManager
from tests.integration.proxy.harness import start_upstream
from tests.integration.proxy.test_upstream_pool import get


@pytest.fixture
def upstream(procs) -> int:
    return start_upstream(procs, "app")


async def test_requests_breaker_gauges_follow_in_flight_requests(upstream):
    store = Store()
    scope = store.scope("cluster.backend.")
    resources = ResourceManager(scope, max_requests=2, track_remaining=True)
    pool = HttpConnectionPool(Host(("127.0.0.1", upstream)), PoolSettings(), ClusterStats(scope), resources)
    cb = "cluster.backend.circuit_breakers.default."
    rq = pool.resources.requests
    assert store.gauges[cb + "rq_open"].value == 0
    assert store.gauges[cb + "remaining_rq"].value == 2

    slow = [asyncio.ensure_future(pool.request(get("/slow", x_test_delay_ms="400"))) for _ in range(2)]
    for _ in range(400):  # until both are attached (charged) — readiness, not a fixed sleep
        if rq.count == 2:
            break
        await asyncio.sleep(0.005)
    assert rq.count == 2
    assert store.gauges[cb + "rq_open"].value == 1
    assert store.gauges[cb + "remaining_rq"].value == 0
    with pytest.raises(PoolOverflow):
        await pool.request(get("/third"))
    assert store.counters["cluster.backend.upstream_rq_pending_overflow"].value == 1

    for f in slow:
        resp = await f
        assert resp.headers.status == 200
        await resp.read()
    assert rq.count == 0
    assert store.gauges[cb + "rq_open"].value == 0
    assert store.gauges[cb + "remaining_rq"].value == 2
    resp = await pool.request(get("/after"))
    await resp.read()
    assert store.gauges[cb + "remaining_rq"].value == 2
    assert store.counters["cluster.backend.upstream_rq_total"].value == 3
    await pool.close()


async def test_exchange_and_response_made_without_init_have_every_slot(upstream):
    from proxy.upstream.pool import UpstreamResponse, _Exchange

    store = Store()
    scope = store.scope("cluster.backend.")
    pool = HttpConnectionPool(
        Host(("127.0.0.1", upstream)), PoolSettings(), ClusterStats(scope), ResourceManager(scope)
    )
    head = get("/x")
    head.set(":method", "HEAD")
    for h in (get("/a"), head):
        resp = await pool.request(h)
        assert {s: getattr(resp, s) is not None for s in UpstreamResponse.__slots__} == dict.fromkeys(
            UpstreamResponse.__slots__, True
        )
        assert resp.status == 200
        ex = resp._ex
        ref = _Exchange(asyncio.get_running_loop(), h.get(":method") == "HEAD", False)
        for s in _Exchange.__slots__:
            getattr(ex, s)  # set (an unset slot raises AttributeError)
        assert (ex.is_head_request, ex.upgrade) == (ref.is_head_request, ref.upgrade)
        assert type(ex.chunks) is type(ref.chunks) and type(ex.head) is type(ref.head)
        await resp.read()
    await pool.close()
