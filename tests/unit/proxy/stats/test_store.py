import math

import pytest

from proxy.stats.store import Histogram, Store, _bin_floor


@pytest.mark.parametrize(
    "value,floor",
    [(1, 1.0), (3, 3.0), (29.99, 29.0), (30, 30.0), (0.57, 0.57), (1000, 1000.0), (1234, 1200.0)],
)
def test_values_land_in_two_significant_digit_bins(value, floor):
    assert _bin_floor(value) == pytest.approx(floor)


def test_quantiles_are_accurate_within_a_bin():
    h = Histogram("t")
    for v in range(1, 1001):  # 1..1000 ms, uniform
        h.record(v)
    for q, expected in [(0.5, 500), (0.9, 900), (0.99, 990)]:
        assert h.quantile(q) == pytest.approx(expected, rel=0.05)
    assert h.count == 1000 and h.sum == sum(range(1, 1001))


def test_a_single_value_reports_itself_not_its_export_bucket():
    h = Histogram("t")
    h.record(1)
    # Envoy's export buckets are 1 and 5 ms wide here; the quantile must still say ~1 ms.
    assert 1 <= h.quantile(0.5) <= 1.1
    assert math.isnan(Histogram("empty").quantile(0.5))


def test_cumulative_buckets_use_envoys_bounds():
    h = Histogram("t")
    for v in (0.2, 3, 3, 70, 10**7):
        h.record(v)
    buckets = dict(h.cumulative_buckets())
    assert buckets[0.5] == 1 and buckets[5] == 3 and buckets[100] == 4 and buckets[math.inf] == 5


def test_scopes_share_one_store():
    store = Store()
    store.scope("cluster.a.").counter("upstream_rq_total").inc(2)
    store.scope("cluster.").scope("a.").counter("upstream_rq_total").inc()
    assert store.counters["cluster.a.upstream_rq_total"].value == 3
