from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import any_pb2, struct_pb2

from mixer.telemetry.attributes import (
    REQUEST_LABELS,
    decode_peer_header,
    encode_peer_header,
    http_report,
    node_workload,
    response_flags,
    tcp_report,
)

REVIEWS = {
    "WORKLOAD_NAME": "reviews-v1",
    "NAMESPACE": "default",
    "LABELS": {"app": "reviews", "version": "v1"},
}
PRODUCTPAGE = {
    "WORKLOAD_NAME": "productpage-v1",
    "NAMESPACE": "default",
    "LABELS": {"app": "productpage", "version": "v1"},
}


def node(meta: dict, node_id: str = "sidecar~127.0.0.12~reviews-v1-abc.default~default.svc.cluster.local"):
    n = base_pb2.Node(id=node_id)
    n.metadata.update(meta)
    return node_workload(n)


def test_node_workload_falls_back_to_node_id():
    w = node({"LABELS": {"app": "reviews"}})
    assert (w.workload, w.namespace, w.app, w.version) == ("reviews-v1-abc", "default", "reviews", "unknown")


def test_inbound_entry_with_peer_header_and_mtls():
    e = accesslog_pb2.HTTPAccessLogEntry()
    c = e.common_properties
    c.upstream_cluster = "inbound|9080||"
    c.tls_properties.local_certificate_properties.subject_alt_name.add(
        uri="spiffe://cluster.local/ns/default/sa/reviews"
    )
    c.tls_properties.peer_certificate_properties.subject_alt_name.add(
        uri="spiffe://cluster.local/ns/default/sa/pp"
    )
    c.time_to_last_downstream_tx_byte.FromMilliseconds(17)
    c.response_flags.unauthorized_details.SetInParent()
    e.request.authority = "reviews:9080"
    e.request.request_headers["x-envoy-peer-metadata"] = encode_peer_header(PRODUCTPAGE)
    e.request.request_headers["content-type"] = "application/grpc+proto"
    e.response.response_code.value = 403
    r = http_report(node(REVIEWS), e)
    assert tuple(r.labels) == REQUEST_LABELS
    assert r.labels["reporter"] == "destination"
    assert (
        r.labels["source_workload"] == "productpage-v1" and r.labels["destination_workload"] == "reviews-v1"
    )
    assert r.labels["source_principal"] == "spiffe://cluster.local/ns/default/sa/pp"
    assert r.labels["destination_principal"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert r.labels["connection_security_policy"] == "mutual_tls" and r.mtls
    assert r.labels["destination_service"] == "reviews.default.svc.cluster.local"
    assert r.labels["destination_service_name"] == "reviews"
    assert r.labels["request_protocol"] == "grpc"
    assert r.labels["response_code"] == "403" and r.labels["response_flags"] == "UAEX"
    assert r.duration_ms == 17


def test_outbound_entry_with_peer_in_filter_state():
    e = accesslog_pb2.HTTPAccessLogEntry()
    c = e.common_properties
    c.upstream_cluster = "outbound|9080|v1|reviews.default.svc.cluster.local"
    st = struct_pb2.Struct()
    st.update(REVIEWS)
    packed = any_pb2.Any()
    packed.Pack(st)
    c.filter_state_objects["upstream_peer"].CopyFrom(packed)
    c.response_flags.no_healthy_upstream = True
    c.response_flags.upstream_retry_limit_exceeded = True
    r = http_report(
        node(PRODUCTPAGE, "sidecar~127.0.0.10~productpage-v1.default~default.svc.cluster.local"), e
    )
    assert r.labels["reporter"] == "source" and r.labels["connection_security_policy"] == "unknown"
    assert r.labels["destination_app"] == "reviews" and r.labels["destination_version"] == "v1"
    assert r.labels["source_principal"] == "unknown" and r.labels["response_code"] == "0"
    assert r.labels["response_flags"] == "UH,URX"


def test_isthmus_struct_wins_and_empty_values_fall_back():
    e = accesslog_pb2.HTTPAccessLogEntry()
    st = struct_pb2.Struct()
    st.update(
        {
            "reporter": "source",
            "source": {"workload": "", "principal": ""},
            "destination": {
                "workload": "ratings-v1",
                "namespace": "default",
                "app": "ratings",
                "version": "",
            },
            "destination_service": "ratings",
            "connection_security_policy": "none",
        }
    )
    e.common_properties.metadata.filter_metadata["isthmus"].CopyFrom(st)
    e.common_properties.upstream_cluster = "inbound|9080||"  # the Struct's reporter wins
    r = http_report(node(REVIEWS), e)
    assert r.labels["reporter"] == "source"
    assert r.labels["source_workload"] == "reviews-v1"  # the local side from node metadata
    assert r.labels["source_principal"] == "unknown" and r.labels["destination_version"] == "unknown"
    assert r.labels["destination_service"] == "ratings.default.svc.cluster.local"
    assert r.labels["connection_security_policy"] == "none" and not r.mtls


def test_tcp_open_close_and_bytes():
    def entry(kind: str, intermediate=False):
        e = accesslog_pb2.TCPAccessLogEntry()
        e.common_properties.upstream_cluster = "outbound|27017||mongodb.default.svc.cluster.local"
        e.common_properties.access_log_type = accesslog_pb2.AccessLogType.Value(kind)
        e.common_properties.intermediate_log_entry = intermediate
        e.connection_properties.sent_bytes = 10
        e.connection_properties.received_bytes = 20
        return tcp_report(node(REVIEWS), e)

    opened = entry("TcpUpstreamConnected")
    assert opened.opened and not opened.closed and opened.sent_bytes == 0
    assert "response_code" not in opened.labels and opened.labels["request_protocol"] == "tcp"
    closed = entry("TcpConnectionEnd")
    assert closed.closed and not closed.opened and (closed.sent_bytes, closed.received_bytes) == (10, 20)
    periodic = entry("TcpPeriodic", intermediate=True)
    assert not periodic.opened and not periodic.closed and periodic.sent_bytes == 0
    legacy = entry("NotSet")
    assert legacy.opened and legacy.closed


def test_peer_header_round_trip_and_garbage():
    assert decode_peer_header(encode_peer_header(REVIEWS)).workload == "reviews-v1"
    assert decode_peer_header("%%%not base64") is None


def test_no_flags_is_dash():
    assert response_flags(accesslog_pb2.AccessLogCommon()) == "-"


def test_memoised_struct_labels_keep_per_entry_flags():
    st = struct_pb2.Struct()
    st.update({"reporter": "destination", "source": {"workload": "a"}, "destination": {"workload": "b"}})
    reports = []
    for flag in (False, True):
        e = accesslog_pb2.HTTPAccessLogEntry()
        e.common_properties.metadata.filter_metadata["isthmus"].CopyFrom(st)
        e.common_properties.response_flags.rate_limited = flag
        reports.append(http_report(node(REVIEWS), e))
    assert [r.labels["response_flags"] for r in reports] == ["-", "RL"]
    assert reports[1].labels["source_workload"] == "a"


GATEWAY = {
    "WORKLOAD_NAME": "istio-ingressgateway",
    "NAMESPACE": "istio-system",
    "LABELS": {"app": "istio-ingressgateway", "istio": "ingressgateway"},
}


def gateway_entry(
    path_flags_cluster: tuple[str, bool, str], hint: str = "127.0.0.1"
) -> accesslog_pb2.HTTPAccessLogEntry:
    """A gateway's entry as our proxy writes it: the isthmus Struct with the Host header as the hint."""
    code, no_route, cluster = path_flags_cluster
    e = accesslog_pb2.HTTPAccessLogEntry()
    c = e.common_properties
    c.upstream_cluster = cluster
    c.response_flags.no_route_found = no_route
    c.metadata.filter_metadata["isthmus"].update(
        {"reporter": "source", "destination_service": hint, "connection_security_policy": "unknown"}
    )
    e.request.authority = f"{hint}:8080"
    e.response.response_code.value = int(code)
    return e


def test_a_gateway_404_nr_has_destination_service_unknown_as_in_istio():
    # Istio reports the gateway's own 404 NR (no route, no cluster) with every destination label
    # "unknown" (istio/istio#24042): the Host header (here the gateway's own address) is no service
    r = http_report(
        node(GATEWAY, "router~127.0.0.1~istio-ingressgateway.istio-system~x"),
        gateway_entry(("404", True, "")),
    )
    assert r.labels["reporter"] == "source" and r.labels["source_workload"] == "istio-ingressgateway"
    assert r.labels["response_code"] == "404" and r.labels["response_flags"] == "NR"
    for label in ("destination_service", "destination_service_name", "destination_service_namespace",
                  "destination_workload", "destination_app"):  # fmt: skip
        assert r.labels[label] == "unknown", label


def test_only_the_source_proxys_own_no_route_answers_lose_their_service():
    gw = node(GATEWAY, "router~127.0.0.1~istio-ingressgateway.istio-system~x")
    cluster = "outbound|9080||productpage.default.svc.cluster.local"
    upstream_404 = http_report(
        gw, gateway_entry(("404", False, cluster), "productpage.default.svc.cluster.local")
    )
    assert upstream_404.labels["destination_service"] == "productpage.default.svc.cluster.local"
    no_flag = http_report(gw, gateway_entry(("404", False, ""), "productpage.default.svc.cluster.local"))
    assert no_flag.labels["destination_service"] == "productpage.default.svc.cluster.local"
