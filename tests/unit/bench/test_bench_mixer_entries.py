"""bench-mixer's ingest rows send what the proxy's gRPC access logger writes: the entries parse as
Envoy's HTTPAccessLogEntry with Istio's label Struct, mixer derives the two Bookinfo edges from them,
and only a stream's first message names the node."""

from envoy.service.accesslog.v3 import als_pb2

from bench.bench_mixer import NODE_ID, _batches, _proxy_entries
from mixer.telemetry.attributes import Workload, http_report


def test_entries_are_the_proxys_and_give_the_two_edges():
    entries = _proxy_entries(60)
    messages = [als_pb2.StreamAccessLogsMessage.FromString(m) for m in _batches(entries, 27)]
    assert [len(m.http_logs.log_entry) for m in messages] == [27, 27, 6]
    assert messages[0].identifier.node.id == NODE_ID
    assert not any(m.HasField("identifier") for m in messages[1:])
    parsed = [e for m in messages for e in m.http_logs.log_entry]
    assert all("isthmus" in e.common_properties.metadata.filter_metadata for e in parsed)
    assert len({e.request.request_id for e in parsed}) == 60  # every request differs
    edges = {
        (r.labels["source_workload"], r.labels["destination_workload"], r.labels["destination_service"])
        for r in (http_report(Workload(), e) for e in parsed)
    }
    assert edges == {
        ("productpage-v1", "reviews-v2", "reviews.default.svc.cluster.local"),
        ("istio-ingressgateway", "productpage-v1", "productpage.default.svc.cluster.local"),
    }


def test_the_feature_cpu_rows_run_the_filters_as_the_connection_manager_drives_them():
    """bench-mixer's in-process rows drive the real filters with a stream shaped like the connection
    manager's (a missing attribute, e.g. response_headers_to_set, breaks `make bench`)."""
    from bench.bench_mixer import _feature_cpu

    rows = {r["case"]: r["cpu_us_per_req"] for r in _feature_cpu(True)}
    assert set(rows) == {
        "feature CPU, metadata exchange (request + response hooks)",
        "feature CPU, ext_authz, cache hit",
        "feature CPU, access log to mixer (log + encode + batch)",
        "feature CPU, all three",
    }
    assert all(v >= 0 for v in rows.values())
