from mixer.telemetry.attributes import REQUEST_LABELS, Report
from mixer.telemetry.store import HISTORY_S, TrafficStore, percentile


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def report(reporter="destination", src="productpage-v1", dst="reviews-v2", code="200", ms=8.0, mtls=True):
    labels = dict.fromkeys(REQUEST_LABELS, "unknown")
    labels.update(
        reporter=reporter,
        source_workload=src,
        source_workload_namespace="default",
        source_app=src.split("-")[0],
        destination_workload=dst,
        destination_workload_namespace="default",
        destination_app=dst.split("-")[0],
        destination_version=dst.split("-")[1],
        destination_service=f"{dst.split('-')[0]}.default.svc.cluster.local",
        request_protocol="http",
        response_code=code,
    )
    return Report("http", labels, mtls=mtls, duration_ms=ms)


def test_graph_prefers_destination_reports_and_computes_rates():
    clock = Clock(1000.0)
    store = TrafficStore(clock)
    for _ in range(9):
        store.add(report())
        store.add(report(reporter="source"))
    store.add(report(code="503"))
    store.add(report(reporter="source", src="reviews-v2", dst="ratings-v1", mtls=False))
    g = store.graph(window_s=10)
    assert [n["id"] for n in g["nodes"]] == [
        "default/productpage-v1",
        "default/ratings-v1",
        "default/reviews-v2",
    ]
    by_target = {e["target"]: e for e in g["edges"]}
    reviews = by_target["default/reviews-v2"]
    assert reviews["requests"] == 10 and reviews["rps"] == 1.0 and reviews["error_rate"] == 0.1
    assert reviews["reporter"] == "destination" and reviews["mtls"] is True
    ratings = by_target["default/ratings-v1"]
    assert ratings["reporter"] == "source" and ratings["mtls"] is False


def test_services_percentiles_and_window():
    clock = Clock(1000.0)
    store = TrafficStore(clock)
    for ms in [3.0] * 50 + [40.0] * 48 + [2000.0] * 2:
        store.add(report(ms=ms))
    [s] = store.services(60)
    assert s["requests"] == 100 and s["success_rate"] == 1.0
    assert 1 <= s["p50_ms"] <= 5 and 25 <= s["p90_ms"] <= 50 and 1000 <= s["p99_ms"] <= 2500
    clock.t += 120  # out of a 60 s window, still in the history
    assert store.services(60) == []
    assert store.timeseries()["points"][0]["rps"] == 20.0  # 100 requests in a 5 s bucket
    clock.t += HISTORY_S
    assert store.timeseries()["points"] == []


def test_edge_bound_drops_new_edges():
    store = TrafficStore(Clock(0.0), max_edges=1)
    store.add(report())
    store.add(report(dst="ratings-v1"))
    assert store.dropped == 1 and len(store.graph(60)["edges"]) == 1


def test_percentile_interpolates():
    counts = [0] * 20
    counts[3] = 10  # (5, 10] ms
    assert percentile(counts, 0.5) == 7.5
    assert percentile([0] * 20, 0.5) is None
