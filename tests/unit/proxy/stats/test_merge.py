"""Stats over workers: counters and gauges add, histograms add bin by bin, config stats are the main's."""

from __future__ import annotations

import json
import math

import pytest

from proxy.stats.merge import main_owned, merge, snapshot
from proxy.stats.store import Store


def _worker(rq: int, active: int, times: list[float]) -> dict:
    s = Store()
    s.counter("http.ingress.downstream_rq_total").inc(rq)
    s.gauge("http.ingress.downstream_rq_active").set(active)
    s.gauge("cluster_manager.active_clusters").set(3)
    s.counter("cluster.app.update_success").inc(2)
    s.gauge("cluster.app.membership_total").set(2)
    for t in times:
        s.histogram("http.ingress.downstream_rq_time").record(t)
    return json.loads(json.dumps(snapshot(s)))  # what crosses the socket


def test_counters_and_gauges_are_summed_over_workers():
    main = Store()
    main.counter("http.ingress.downstream_rq_total")  # the main serves nothing: 0
    out = merge(main, [_worker(7, 1, []), _worker(5, 2, [])])
    assert out.counter("http.ingress.downstream_rq_total").value == 12
    assert out.gauge("http.ingress.downstream_rq_active").value == 3


def test_config_stats_are_the_mains_not_n_times_it():
    main = Store()
    main.gauge("cluster_manager.active_clusters").set(3)
    main.counter("cluster.app.update_success").inc(2)
    main.gauge("cluster.app.membership_total").set(2)
    main.gauge("server.concurrency").set(2)
    out = merge(main, [_worker(1, 0, []), _worker(1, 0, [])])
    assert out.gauge("cluster_manager.active_clusters").value == 3
    assert out.counter("cluster.app.update_success").value == 2
    assert out.gauge("cluster.app.membership_total").value == 2
    assert out.gauge("server.concurrency").value == 2


def test_a_config_stat_only_workers_have_is_taken_once():
    out = merge(Store(), [_worker(1, 0, []), _worker(1, 0, [])])
    assert out.gauge("cluster_manager.active_clusters").value == 3


def test_histograms_merge_exactly():
    a = [1.0, 2.0, 3.0, 40.0]
    b = [5.0, 600.0]
    out = merge(Store(), [_worker(0, 0, a), _worker(0, 0, b)])
    h = out.histogram("http.ingress.downstream_rq_time")
    ref = Store().histogram("x")
    for v in a + b:
        ref.record(v)
    assert h.count == 6 and h.sum == pytest.approx(sum(a + b))
    assert h.counts == ref.counts
    assert h.bins == ref.bins
    for q in (0.5, 0.9, 0.99):
        assert h.quantile(q) == pytest.approx(ref.quantile(q))


def test_merge_leaves_the_main_store_alone():
    main = Store()
    main.counter("http.ingress.downstream_rq_total").inc(1)
    main.histogram("http.ingress.downstream_rq_time").record(1.0)
    merge(main, [_worker(5, 0, [2.0])])
    assert main.counter("http.ingress.downstream_rq_total").value == 1
    assert main.histogram("http.ingress.downstream_rq_time").count == 1


def test_differing_bucket_bounds_are_an_error():
    w = _worker(0, 0, [1.0])
    w["histograms"]["http.ingress.downstream_rq_time"]["bounds"] = [1, 2]
    main = Store()
    main.histogram("http.ingress.downstream_rq_time")
    with pytest.raises(ValueError, match="bounds differ"):
        merge(main, [w])


@pytest.mark.parametrize(
    "name,owned",
    [
        ("server.live", True),
        ("control_plane.connected_state", True),
        ("listener_manager.lds.update_success", True),
        ("cluster.outbound|9080||reviews.default.svc.cluster.local.update_attempt", True),
        ("cluster.app.health_check.success", True),
        ("http.ingress.rds.main.update_success", True),
        ("cluster.app.upstream_rq_total", False),
        ("listener.127.0.0.1_8080.downstream_cx_total", False),
        ("http.ingress.downstream_rq_total", False),
    ],
)
def test_main_owned(name, owned):
    assert main_owned(name) is owned


def test_empty_histogram_quantile_still_nan():
    out = merge(Store(), [snapshot(Store())])
    assert out.histograms == {}
    assert math.isnan(Store().histogram("x").quantile(0.5))
