"""StreamAccessLogs over real gRPC into a real mixer: istio_requests_total per edge equals the number of
entries sent, /metrics parses, the graph API shows the edge, and the JSON access log has every line."""

from __future__ import annotations

import json

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2

from mixer.telemetry.attributes import encode_peer_header
from tests.integration.mixer.harness import start_mixer

PRODUCTPAGE = {
    "WORKLOAD_NAME": "productpage-v1",
    "NAMESPACE": "default",
    "LABELS": {"app": "productpage", "version": "v1"},
}
REVIEWS_V2 = {
    "WORKLOAD_NAME": "reviews-v2",
    "NAMESPACE": "default",
    "LABELS": {"app": "reviews", "version": "v2"},
}


def node(node_id: str, meta: dict) -> base_pb2.Node:
    n = base_pb2.Node(id=node_id)
    n.metadata.update(meta)
    return n


def inbound_entry(code: int, duration_ms: int) -> accesslog_pb2.HTTPAccessLogEntry:
    """What our proxy logs at reviews-v2's inbound listener, with the isthmus label Struct."""
    e = accesslog_pb2.HTTPAccessLogEntry(protocol_version=accesslog_pb2.HTTPAccessLogEntry.HTTP11)
    c = e.common_properties
    c.upstream_cluster = "inbound|9080||"
    c.duration.FromMilliseconds(duration_ms)
    meta = struct_pb2.Struct()
    meta.update(
        {
            "reporter": "destination",
            "source": {
                "workload": "productpage-v1",
                "namespace": "default",
                "app": "productpage",
                "version": "v1",
                "principal": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
            },
            "destination": {
                "workload": "reviews-v2",
                "namespace": "default",
                "app": "reviews",
                "version": "v2",
                "principal": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
            },
            "destination_service": "reviews:9080",
            "connection_security_policy": "mutual_tls",
        }
    )
    c.metadata.filter_metadata["isthmus"].CopyFrom(meta)
    e.request.authority = "reviews:9080"
    e.request.path = "/reviews/0"
    e.request.request_method = base_pb2.GET
    e.request.request_headers_bytes = 200
    e.response.response_code.value = code
    e.response.response_body_bytes = 500
    return e


def outbound_entry() -> accesslog_pb2.HTTPAccessLogEntry:
    """A standard Envoy entry (no isthmus Struct): the peer comes from x-envoy-peer-metadata."""
    e = accesslog_pb2.HTTPAccessLogEntry()
    c = e.common_properties
    c.upstream_cluster = "outbound|9080|v2|reviews.default.svc.cluster.local"
    c.duration.FromMilliseconds(12)
    c.response_flags.upstream_retry_limit_exceeded = False
    e.request.authority = "reviews:9080"
    e.response.response_code.value = 200
    e.response.response_headers["x-envoy-peer-metadata"] = encode_peer_header(REVIEWS_V2)
    return e


def stream(messages):
    yield from messages


def test_requests_total_per_edge_equals_entries_sent(procs, tmp_path):
    log_path = tmp_path / "access.jsonl"
    config = f"telemetry:\n  accessLog: {{path: {log_path}}}\n"
    mixer = start_mixer(procs, tmp_path, config)
    stub = mixer.accesslog()
    n_ok, n_err, n_out, batch = 173, 27, 50, 20

    inbound = [inbound_entry(200, 8) for _ in range(n_ok)] + [inbound_entry(503, 40) for _ in range(n_err)]
    msgs = []
    for i in range(0, len(inbound), batch):
        m = als_pb2.StreamAccessLogsMessage()
        if i == 0:
            m.identifier.node.CopyFrom(
                node("sidecar~127.0.0.13~reviews-v2.default~default.svc.cluster.local", REVIEWS_V2)
            )
            m.identifier.log_name = "inbound"
        m.http_logs.log_entry.extend(inbound[i : i + batch])
        msgs.append(m)
    stub.StreamAccessLogs(stream(msgs), timeout=10)

    first = als_pb2.StreamAccessLogsMessage()
    first.identifier.node.CopyFrom(
        node("sidecar~127.0.0.10~productpage-v1.default~default.svc.cluster.local", PRODUCTPAGE)
    )
    first.http_logs.log_entry.extend(outbound_entry() for _ in range(n_out))
    stub.StreamAccessLogs(stream([first]), timeout=10)

    edge = dict(
        reporter="destination",
        source_workload="productpage-v1",
        source_app="productpage",
        source_version="v1",
        source_principal="spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        destination_workload="reviews-v2",
        destination_version="v2",
        destination_service="reviews.default.svc.cluster.local",
        destination_service_name="reviews",
        destination_service_namespace="default",
        request_protocol="http",
        connection_security_policy="mutual_tls",
    )
    # the whole of /metrics goes through prometheus_client's strict parser inside metric_sum
    assert mixer.metric_sum("istio_requests_total", **edge) == n_ok + n_err
    assert mixer.metric_sum("istio_requests_total", response_code="200", **edge) == n_ok
    assert mixer.metric_sum("istio_requests_total", response_code="503", response_flags="-", **edge) == n_err
    assert mixer.metric_sum("istio_request_duration_milliseconds_count", **edge) == n_ok + n_err
    # 8 ms lands in the le=10 bucket, 40 ms only from le=50 on
    assert mixer.metric_sum("istio_request_duration_milliseconds_bucket", le="10.0", **edge) == n_ok
    assert mixer.metric_sum("istio_request_duration_milliseconds_bucket", le="50.0", **edge) == n_ok + n_err
    assert mixer.metric_sum("istio_response_bytes_sum", **edge) == 500 * (n_ok + n_err)
    source_edge = dict(
        reporter="source",
        source_workload="productpage-v1",
        destination_workload="reviews-v2",
        destination_app="reviews",
        destination_service="reviews.default.svc.cluster.local",
        connection_security_policy="unknown",
    )
    assert mixer.metric_sum("istio_requests_total", **source_edge) == n_out

    graph = json.loads(mixer.get("/api/graph"))
    assert {n["id"] for n in graph["nodes"]} == {"default/productpage-v1", "default/reviews-v2"}
    [e] = graph["edges"]  # the destination's reports are used when both sides report
    assert e["source"] == "default/productpage-v1" and e["target"] == "default/reviews-v2"
    assert e["requests"] == n_ok + n_err and e["mtls"] is True
    assert abs(e["error_rate"] - n_err / (n_ok + n_err)) < 1e-3
    [svc] = json.loads(mixer.get("/api/services"))["services"]
    assert svc["service"] == "reviews.default.svc.cluster.local" and svc["requests"] == n_ok + n_err
    assert 5 <= svc["p50_ms"] <= 10 and 25 <= svc["p99_ms"] <= 50

    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(lines) == n_ok + n_err + n_out
    assert lines[0]["source_workload"] == "productpage-v1" and lines[0]["duration_ms"] == 8


def test_tcp_entries_count_connections_and_bytes(procs, tmp_path):
    mixer = start_mixer(procs, tmp_path)
    m = als_pb2.StreamAccessLogsMessage()
    m.identifier.node.CopyFrom(
        node(
            "sidecar~127.0.0.15~ratings-v1.default~default.svc.cluster.local",
            {
                "WORKLOAD_NAME": "ratings-v1",
                "NAMESPACE": "default",
                "LABELS": {"app": "ratings", "version": "v1"},
            },
        )
    )
    for kind, sent, received in [("TcpUpstreamConnected", 0, 0), ("TcpConnectionEnd", 300, 100)] * 3:
        e = m.tcp_logs.log_entry.add()
        e.common_properties.upstream_cluster = "outbound|27017||mongodb.default.svc.cluster.local"
        e.common_properties.access_log_type = accesslog_pb2.AccessLogType.Value(kind)
        e.connection_properties.sent_bytes = sent
        e.connection_properties.received_bytes = received
    mixer.accesslog().StreamAccessLogs(stream([m]), timeout=10)
    labels = dict(
        source_workload="ratings-v1",
        destination_service="mongodb.default.svc.cluster.local",
        request_protocol="tcp",
    )
    assert mixer.metric_sum("istio_tcp_connections_opened_total", **labels) == 3
    assert mixer.metric_sum("istio_tcp_connections_closed_total", **labels) == 3
    assert mixer.metric_sum("istio_tcp_sent_bytes_total", **labels) == 900
    assert mixer.metric_sum("istio_tcp_received_bytes_total", **labels) == 300


def test_series_bound_counts_overflow(procs, tmp_path):
    mixer = start_mixer(procs, tmp_path, "telemetry:\n  maxSeriesPerMetric: 3\n")
    m = als_pb2.StreamAccessLogsMessage()
    m.identifier.node.CopyFrom(
        node("sidecar~127.0.0.10~productpage-v1.default~default.svc.cluster.local", PRODUCTPAGE)
    )
    for code in (200, 201, 202, 203, 204, 200):
        e = outbound_entry()
        e.response.response_code.value = code
        m.http_logs.log_entry.append(e)
    mixer.accesslog().StreamAccessLogs(stream([m]), timeout=10)
    assert mixer.metric_sum("istio_requests_total") == 4  # three series; the repeated 200 still counts
    assert mixer.metric_sum("mixer_telemetry_dropped_series_total", metric="istio_requests_total") == 2
