"""The access-log entries the gRPC logger writes as wire bytes parse into exactly the messages the
protobuf reference builders (``http_entry``/``tcp_entry`` + ``istio_metadata``) produce, for plain,
TLS, flagged, unanswered, outbound, TCP and odd-valued requests; a batch is a valid
StreamAccessLogsMessage; repeated parts are reused without mixing up requests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.accesslog.v3 import als_pb2

from proxy.accesslog.grpc import HTTP, TCP, AlsStats, GrpcAccessLogger, GrpcLogSink
from proxy.accesslog.grpc_entries import (
    METADATA_NAMESPACE,
    destination_service,
    encode_peer_metadata,
    http_entry,
    istio_metadata,
    tcp_entry,
)
from proxy.accesslog.grpc_wire import EntryEncoder, batch_message, varint
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo
from proxy.stats.store import Store

LOCAL = {
    "workload": "reviews-v2",
    "namespace": "default",
    "app": "reviews",
    "version": "v2",
    "service_account": "bookinfo-reviews",
    "principal": "",
}
PEER = {"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default", "LABELS": {"app": "productpage"}}


def logger(kind=HTTP, inbound=True, req=(), resp=()) -> GrpcAccessLogger:
    sink = GrpcLogSink(kind, "als", None, None, AlsStats(Store()))
    lg = GrpcAccessLogger("x", kind, sink, None, req, resp)
    lg._local, lg._inbound = dict(LOCAL), inbound
    return lg


def reference(lg: GrpcAccessLogger, si):
    if lg.kind == HTTP:
        e = http_entry(si, lg.req_headers, lg.resp_headers)
        headers = si.request_headers if lg._inbound else si.response_headers
        peer = lg._peers.decode(headers.get("x-envoy-peer-metadata") if headers is not None else None)
    else:
        e = tcp_entry(si)
        peer = lg._peers.decode(None)
    md = istio_metadata(si, lg._local, lg._inbound, peer, destination_service(si))
    e.common_properties.metadata.filter_metadata[METADATA_NAMESPACE].CopyFrom(md)
    return e


def stream(**kw) -> StreamInfo:
    h = Headers(
        [
            (":method", "POST"),
            (":path", "/reviews/0?x=1"),
            (":authority", "reviews:9080"),
            (":scheme", "http"),
            ("user-agent", "curl/8"),
            ("x-request-id", "5f2c-aa"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-envoy-peer-metadata", encode_peer_metadata(PEER)),
        ]
    )
    si = StreamInfo(
        downstream_remote_address=("10.0.0.1", 40123),
        downstream_local_address=("10.0.0.2", 9080),
        request_headers=h,
    )
    si.response_code = 200
    si.response_headers = Headers([(":status", "200"), ("server", "app"), ("x-trace", "t1")])
    si.upstream_host = "127.0.0.1:9081"
    si.upstream_cluster = "inbound|9080||"
    si.route_name = "default"
    si.upstream_request_attempts = 1
    si.bytes_received = 12
    si.bytes_sent = 1024
    si.finish()
    for k, v in kw.items():
        setattr(si, k, v)
    return si


TLS = SimpleNamespace(
    version="TLSv1.3",
    sni="reviews.default.svc",
    peer_uri_sans=["spiffe://cluster.local/ns/default/sa/productpage"],
    local_uri_sans=["spiffe://cluster.local/ns/default/sa/reviews"],
    peer_subject="O=cluster.local",
)


CASES = {
    "plain": {},
    "mtls": {"downstream_ssl": TLS},
    "flags": {"response_flags": {"UAEX", "RL", "DC", "UF"}, "response_code": 403},
    "no response": {"response_code": 0, "response_headers": None, "upstream_host": None},
    "details": {"response_code_details": "ext_authz_denied", "bytes_sent": 0, "bytes_received": 0},
    "big numbers": {"bytes_sent": 10**12, "bytes_received": 300, "upstream_request_attempts": 300},
    "long path": {
        "request_headers": Headers(
            [(":method", "GET"), (":path", "/p/" + "é" * 400), (":authority", "[::1]:8080")]
        )
    },
    "no headers": {"request_headers": None, "upstream_host": "[::1]:9080"},
    "odd upstream": {"upstream_host": "not-an-address", "route_name": None, "upstream_cluster": None},
    "slow": {"end_monotonic": None},
    "repeated header": {
        "request_headers": Headers(
            [(":method", "GET"), (":path", "/a"), ("user-agent", "one"), ("user-agent", "two")]
        )
    },
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("inbound", [True, False])
def test_http_entry_bytes_match_the_protobuf_builder(name, inbound):
    lg = logger(inbound=inbound, req=("x-forwarded-for", "absent"), resp=("server", "x-trace"))
    si = stream(**CASES[name])
    if name == "slow":
        si.end_monotonic = si.start_monotonic + 2.5
    assert lg.entry(si) == reference(lg, si)


def test_discovered_peer_wins_and_each_request_keeps_its_own_labels():
    lg = logger()
    a = stream()
    a.filter_state["downstream_peer"] = {"WORKLOAD_NAME": "ratings-v1", "LABELS": {"version": "v1"}}
    b = stream(request_headers=Headers([(":method", "GET"), (":authority", "details:9080")]))
    c = stream(downstream_ssl=TLS)
    for _ in range(2):  # the second time from the caches
        for si in (a, b, c):
            assert lg.entry(si) == reference(lg, si)
    labels = lg.entry(a).common_properties.metadata.filter_metadata["isthmus"]
    assert labels["source"]["workload"] == "ratings-v1"
    assert (
        lg.entry(b).common_properties.metadata.filter_metadata["isthmus"]["destination_service"] == "details"
    )
    tls = lg.entry(c).common_properties
    assert tls.metadata.filter_metadata["isthmus"]["connection_security_policy"] == "mutual_tls"
    assert tls.tls_properties.tls_sni_hostname == "reviews.default.svc"


def test_tcp_entry_bytes_match_the_protobuf_builder():
    lg = logger(TCP)
    si = stream(request_headers=None, response_headers=None, protocol="", bytes_received=99)
    assert lg.entry(si) == reference(lg, si)
    assert lg.entry(si).connection_properties.received_bytes == 99


def test_batch_is_a_stream_access_logs_message():
    lg = logger()
    entries = [lg.encode(stream(bytes_sent=i)) for i in range(3)]
    ident = als_pb2.StreamAccessLogsMessage.Identifier(log_name="als", node=base_pb2.Node(id="n"))
    msg = als_pb2.StreamAccessLogsMessage.FromString(batch_message(True, entries, ident.SerializeToString()))
    assert msg.identifier.log_name == "als" and msg.identifier.node.id == "n"
    assert [e.response.response_body_bytes for e in msg.http_logs.log_entry] == [0, 1, 2]
    tcp = als_pb2.StreamAccessLogsMessage.FromString(batch_message(False, entries[:1]))
    assert not tcp.HasField("identifier") and len(tcp.tcp_logs.log_entry) == 1


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32, 2**63 - 1])
def test_varint_matches_protobuf(n):
    from envoy.data.accesslog.v3 import accesslog_pb2

    raw = accesslog_pb2.ConnectionProperties(received_bytes=n).SerializeToString()
    assert raw == (b"\x08" + varint(n) if n else b"")


def test_encoder_caches_stay_bounded():
    enc = EntryEncoder()
    for port in range(5000):
        enc._address(b"\x12", ("10.0.0.1", port))
    assert len(enc._addresses) <= 4096


def test_an_outbound_cluster_names_the_destination_service_not_the_host_header():
    # A gateway request: the browser's Host is the gateway's address; Istio labels the service routed to.
    si = stream(request_headers=Headers([(":method", "GET"), (":authority", "127.0.0.1:8080")]))
    si.upstream_cluster = "outbound|9080||productpage.default.svc.cluster.local"
    assert destination_service(si) == "productpage.default.svc.cluster.local"
    md = logger(inbound=False).entry(si).common_properties.metadata.filter_metadata["isthmus"]
    assert md["destination_service"] == "productpage.default.svc.cluster.local"
    # Inbound (and clusters without a host) keep the authority.
    si.upstream_cluster = "inbound|9080||"
    assert destination_service(si) == "127.0.0.1"
    si.upstream_cluster = "outbound|9080||"
    assert destination_service(si) == "127.0.0.1"
