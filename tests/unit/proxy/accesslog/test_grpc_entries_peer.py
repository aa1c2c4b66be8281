"""gRPC access-log entries take the peer the metadata-exchange filter discovered (filter_state) and the
downstream TLS facts (StreamInfo.downstream_ssl): principals, connection_security_policy and Envoy's
tls_properties; and mixer turns such an entry into the right Istio labels."""

from __future__ import annotations

from types import SimpleNamespace

from envoy.config.core.v3 import base_pb2

from mixer.telemetry.attributes import http_report, node_workload
from proxy.accesslog.grpc_entries import http_entry, istio_metadata, workload_from_node_metadata
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo
from proxy.filters.http.peer_metadata.exchange import DOWNSTREAM_PEER, UPSTREAM_PEER

REVIEWS = {
    "WORKLOAD_NAME": "reviews-v2",
    "NAMESPACE": "default",
    "LABELS": {"app": "reviews", "version": "v2"},
}
PRODUCTPAGE = {
    "WORKLOAD_NAME": "productpage-v1",
    "NAMESPACE": "default",
    "LABELS": {"app": "productpage", "version": "v1"},
}
PP_SPIFFE = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
REVIEWS_SPIFFE = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"


def stream_info(**kw) -> StreamInfo:
    h = Headers([(":method", "GET"), (":path", "/reviews/0"), (":authority", "reviews:9080")])
    si = StreamInfo(downstream_remote_address=("127.0.0.11", 5555), request_headers=h, **kw)
    si.response_code = 200
    si.finish()
    return si


def tls_info(peer=(PP_SPIFFE,), local=(REVIEWS_SPIFFE,), presented=True):
    return SimpleNamespace(
        version="TLSv1.3",
        sni="outbound_.9080_._.reviews.default.svc.cluster.local",
        peer_uri_sans=tuple(peer),
        local_uri_sans=tuple(local),
        peer_certificate_presented=presented,
        peer_subject="",
    )


def plain(struct) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(struct)


def test_inbound_peer_from_filter_state_wins_over_the_header_guess():
    si = stream_info()
    si.filter_state[DOWNSTREAM_PEER] = PRODUCTPAGE
    guess = workload_from_node_metadata({"WORKLOAD_NAME": "stale"})
    md = plain(istio_metadata(si, workload_from_node_metadata(REVIEWS), True, guess, "reviews"))
    assert md["reporter"] == "destination"
    assert md["source"]["workload"] == "productpage-v1" and md["source"]["app"] == "productpage"
    assert md["destination"]["workload"] == "reviews-v2"
    assert md["connection_security_policy"] == "none"  # plaintext
    assert md["source"]["principal"] == "" and md["destination"]["principal"] == ""


def test_outbound_uses_the_upstream_peer():
    si = stream_info()
    si.filter_state[UPSTREAM_PEER] = REVIEWS
    si.filter_state[DOWNSTREAM_PEER] = {"WORKLOAD_NAME": "ignored"}
    md = plain(istio_metadata(si, workload_from_node_metadata(PRODUCTPAGE), False, {}, "reviews"))
    assert md["reporter"] == "source"
    assert md["source"]["workload"] == "productpage-v1"
    assert md["destination"]["workload"] == "reviews-v2" and md["destination"]["version"] == "v2"


def test_inbound_mtls_fills_principals_policy_and_tls_properties():
    transport = SimpleNamespace(info=tls_info())  # the connection's ssl object (a TlsTransport)
    si = stream_info(downstream_ssl=transport)
    si.filter_state[DOWNSTREAM_PEER] = PRODUCTPAGE
    md = plain(istio_metadata(si, workload_from_node_metadata(REVIEWS), True, {}, "reviews"))
    assert md["source"]["principal"] == PP_SPIFFE
    assert md["destination"]["principal"] == REVIEWS_SPIFFE
    assert md["connection_security_policy"] == "mutual_tls"
    tls = http_entry(si).common_properties.tls_properties
    assert tls.tls_version == 4
    assert [s.uri for s in tls.peer_certificate_properties.subject_alt_name] == [PP_SPIFFE]
    assert [s.uri for s in tls.local_certificate_properties.subject_alt_name] == [REVIEWS_SPIFFE]
    assert tls.tls_sni_hostname.startswith("outbound_.9080")


def test_tls_without_client_certificate_is_not_mutual():
    si = stream_info(downstream_ssl=tls_info(peer=(), presented=False))
    md = plain(istio_metadata(si, workload_from_node_metadata(REVIEWS), True, {}, "reviews"))
    assert md["connection_security_policy"] == "none"
    assert md["destination"]["principal"] == REVIEWS_SPIFFE and md["source"]["principal"] == ""


def test_before_the_handshake_or_on_plaintext_there_are_no_tls_facts():
    si = stream_info(downstream_ssl=SimpleNamespace(info=None))
    assert not http_entry(si).common_properties.HasField("tls_properties")
    assert not http_entry(stream_info()).common_properties.HasField("tls_properties")


def test_mixer_reads_the_entry_as_istio_labels():
    si = stream_info(downstream_ssl=tls_info())
    si.filter_state[DOWNSTREAM_PEER] = PRODUCTPAGE
    entry = http_entry(si)
    md = istio_metadata(si, workload_from_node_metadata(REVIEWS), True, {}, "reviews")
    entry.common_properties.metadata.filter_metadata["isthmus"].CopyFrom(md)
    node = base_pb2.Node(id="sidecar~127.0.0.12~reviews-v2.default~default.svc.cluster.local")
    node.metadata.update(REVIEWS)
    labels = http_report(node_workload(node), entry).labels
    assert labels["reporter"] == "destination"
    assert labels["source_workload"] == "productpage-v1" and labels["source_version"] == "v1"
    assert labels["destination_workload"] == "reviews-v2" and labels["destination_app"] == "reviews"
    assert labels["source_principal"] == PP_SPIFFE and labels["destination_principal"] == REVIEWS_SPIFFE
    assert labels["connection_security_policy"] == "mutual_tls"
