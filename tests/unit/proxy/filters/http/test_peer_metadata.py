"""istio.metadata_exchange: discovery from request/response headers into filter_state, headers never
reach the app, propagation of our own node metadata, Istio's rules on when to answer, rejected
config by path, and wire compatibility of the config proto."""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace

import pytest
from google.protobuf import json_format, struct_pb2

from api.io.istio.http.peer_metadata import config_pb2
from proxy.config.errors import ConfigError
from proxy.config.registry import HTTP_FILTERS, load_builtin_extensions
from proxy.core.headers import Headers
from proxy.filters.http.base import CONTINUE
from proxy.filters.http.peer_metadata import FILTER_NAME, PeerMetadataConfig, PeerMetadataFilter
from proxy.filters.http.peer_metadata.exchange import (
    DOWNSTREAM_PEER,
    DOWNSTREAM_PEER_ID,
    PEER_METADATA_HEADER,
    PEER_METADATA_ID_HEADER,
    UPSTREAM_PEER,
    UPSTREAM_PEER_ID,
    PeerCache,
    decode,
    encode,
    shared_metadata,
)
from tests.unit.proxy.filters.http.fakes import FakeStream

OUR_NODE_ID = "sidecar~127.0.0.12~reviews-v2.default~default.svc.cluster.local"
OUR_METADATA = {
    "WORKLOAD_NAME": "reviews-v2",
    "NAMESPACE": "default",
    "SERVICE_ACCOUNT": "bookinfo-reviews",
    "CLUSTER_ID": "Kubernetes",
    "LABELS": {"app": "reviews", "version": "v2", "pod-template-hash": "abc", "role": "backend"},
    "INTERCEPTION_MODE": "REDIRECT",
    "PROXY_CONFIG": {"concurrency": 2},
}
CALLER = {
    "WORKLOAD_NAME": "productpage-v1",
    "NAMESPACE": "default",
    "LABELS": {"app": "productpage", "version": "v1"},
}
CALLER_ID = "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local"

INBOUND = {"downstream_discovery": [{"istio_headers": {}}], "downstream_propagation": [{"istio_headers": {}}]}
OUTBOUND = {"upstream_discovery": [{"istio_headers": {}}], "upstream_propagation": [{"istio_headers": {}}]}


def config(d: dict, cm=None, metadata=OUR_METADATA) -> PeerMetadataConfig:
    msg = json_format.ParseDict(d, config_pb2.Config())
    return PeerMetadataConfig(msg, OUR_NODE_ID, metadata, "filters[0]", cm)


def route_to(cluster: str):
    return SimpleNamespace(name="r", action=SimpleNamespace(cluster=cluster))


def run(coro):
    return asyncio.run(coro)


def exchange(cfg, request: Headers, response: Headers, route=None):
    """One request through the filter; returns (stream, response headers after the filter)."""
    stream = FakeStream(request, route or route_to("app"))
    f = PeerMetadataFilter(cfg)
    assert run(f.on_request_headers(stream, True)) is CONTINUE
    assert run(f.on_response_headers(stream, response, True)) is CONTINUE
    stream.apply_response_headers_to_set(response)
    return stream, response


def req(*extra) -> Headers:
    return Headers([(":method", "GET"), (":path", "/"), (":authority", "reviews:9080"), *extra])


def resp(*extra) -> Headers:
    return Headers([(":status", "200"), *extra])


# --- inbound: learn the caller ------------------------------------------------------------------------


def test_inbound_learns_the_caller_strips_the_headers_and_answers_with_our_metadata():
    cfg = config(INBOUND)
    request = req((PEER_METADATA_HEADER, encode(CALLER)), (PEER_METADATA_ID_HEADER, CALLER_ID))
    stream, response = exchange(cfg, request, resp())
    state = stream.stream_info.filter_state
    assert state[DOWNSTREAM_PEER] == CALLER
    assert state[DOWNSTREAM_PEER_ID] == CALLER_ID
    # the app never sees the exchange headers
    assert PEER_METADATA_HEADER not in request and PEER_METADATA_ID_HEADER not in request
    # the caller learns who we are: only identity keys and app/version labels leave the node
    assert response.get(PEER_METADATA_ID_HEADER) == OUR_NODE_ID
    sent = decode(response.get(PEER_METADATA_HEADER))
    assert sent == {
        "WORKLOAD_NAME": "reviews-v2",
        "NAMESPACE": "default",
        "SERVICE_ACCOUNT": "bookinfo-reviews",
        "CLUSTER_ID": "Kubernetes",
        "LABELS": {"app": "reviews", "version": "v2"},
    }
    assert UPSTREAM_PEER not in state  # the inbound config does no upstream discovery


def test_a_caller_outside_the_mesh_learns_nothing_about_us():
    cfg = config(INBOUND)
    stream, response = exchange(cfg, req(), resp())
    assert DOWNSTREAM_PEER not in stream.stream_info.filter_state
    assert PEER_METADATA_HEADER not in response and PEER_METADATA_ID_HEADER not in response


def test_metadata_without_id_answers_metadata_only():
    cfg = config(INBOUND)
    stream, response = exchange(cfg, req((PEER_METADATA_HEADER, encode(CALLER))), resp())
    assert stream.stream_info.filter_state[DOWNSTREAM_PEER]["WORKLOAD_NAME"] == "productpage-v1"
    assert DOWNSTREAM_PEER_ID not in stream.stream_info.filter_state
    assert PEER_METADATA_HEADER in response and PEER_METADATA_ID_HEADER not in response


def test_a_corrupt_header_is_stripped_and_gives_no_peer():
    cfg = config(INBOUND)
    request = req((PEER_METADATA_HEADER, "%%%not base64%%%"), (PEER_METADATA_ID_HEADER, "x"))
    stream, _ = exchange(cfg, request, resp())
    assert DOWNSTREAM_PEER not in stream.stream_info.filter_state
    assert PEER_METADATA_HEADER not in request and PEER_METADATA_ID_HEADER not in request


def test_first_discovery_wins():
    cfg = config(INBOUND)
    stream = FakeStream(req((PEER_METADATA_HEADER, encode(CALLER))), route_to("app"))
    stream.stream_info.filter_state[DOWNSTREAM_PEER] = {"WORKLOAD_NAME": "earlier"}
    run(PeerMetadataFilter(cfg).on_request_headers(stream, True))
    assert stream.stream_info.filter_state[DOWNSTREAM_PEER] == {"WORKLOAD_NAME": "earlier"}


# --- outbound: tell the callee, learn the callee ------------------------------------------------------


def test_outbound_sends_our_metadata_learns_the_callee_and_strips_its_answer():
    cfg = config(OUTBOUND)
    callee = {
        "WORKLOAD_NAME": "reviews-v3",
        "NAMESPACE": "default",
        "LABELS": {"app": "reviews", "version": "v3"},
    }
    # an app trying to impersonate someone is overridden
    request = req((PEER_METADATA_HEADER, encode({"WORKLOAD_NAME": "spoofed"})))
    response = resp((PEER_METADATA_HEADER, encode(callee)), (PEER_METADATA_ID_HEADER, "sidecar~x~reviews-v3"))
    stream, response = exchange(cfg, request, response)
    assert decode(request.get(PEER_METADATA_HEADER))["WORKLOAD_NAME"] == "reviews-v2"
    assert request.get(PEER_METADATA_ID_HEADER) == OUR_NODE_ID
    state = stream.stream_info.filter_state
    assert state[UPSTREAM_PEER] == callee and state[UPSTREAM_PEER_ID] == "sidecar~x~reviews-v3"
    assert DOWNSTREAM_PEER not in state  # the outbound config does no downstream discovery
    # the app gets the response without the exchange headers
    assert PEER_METADATA_HEADER not in response and PEER_METADATA_ID_HEADER not in response


def fake_cm(**clusters):
    from envoy.config.cluster.v3 import cluster_pb2

    out = {}
    for name, istio_md in clusters.items():
        proto = cluster_pb2.Cluster(name=name)
        proto.metadata.filter_metadata["istio"].update(istio_md)
        out[name] = SimpleNamespace(proto=proto)
    return SimpleNamespace(get=out.get)


@pytest.mark.parametrize(
    ("cluster", "skip_external", "sent"),
    [
        ("PassthroughCluster", True, False),
        ("PassthroughCluster", False, True),
        ("external-api", True, False),
        ("external-api", False, True),
        ("no-mx", False, False),
        ("reviews", True, True),
    ],
)
def test_propagation_skips_clusters_outside_the_mesh(cluster, skip_external, sent):
    cm = fake_cm(**{"external-api": {"external": True}, "no-mx": {"disable_mx": True}, "reviews": {}})
    cfg = config({"upstream_propagation": [{"istio_headers": {"skip_external_clusters": skip_external}}]}, cm)
    request = req()
    exchange(cfg, request, resp(), route=route_to(cluster))
    assert (PEER_METADATA_HEADER in request) is sent
    assert (PEER_METADATA_ID_HEADER in request) is sent


def test_additional_labels_are_shared():
    cfg = config({**OUTBOUND, "additional_labels": ["role"]})
    request = req()
    exchange(cfg, request, resp())
    assert decode(request.get(PEER_METADATA_HEADER))["LABELS"] == {
        "app": "reviews",
        "version": "v2",
        "role": "backend",
    }


def test_a_node_without_metadata_still_exchanges_an_empty_struct():
    cfg = config(OUTBOUND, metadata={})
    request = req()
    exchange(cfg, request, resp())
    assert decode(request.get(PEER_METADATA_HEADER)) == {}


# --- codec ------------------------------------------------------------------------------------------


def test_the_header_is_a_base64_serialized_struct_as_istio_writes_it():
    value = encode(CALLER)
    s = struct_pb2.Struct()
    s.ParseFromString(base64.b64decode(value))
    assert json_format.MessageToDict(s) == CALLER
    # Istio decodes without padding too
    assert decode(value.rstrip("=")) == CALLER
    assert encode(CALLER) == value  # deterministic: a cache key peers can rely on


def test_shared_metadata_keeps_identity_and_app_version_only():
    md = shared_metadata({**OUR_METADATA, "LABELS": {"app.kubernetes.io/name": "r", "x": "y"}})
    assert md["LABELS"] == {"app.kubernetes.io/name": "r"}
    assert "INTERCEPTION_MODE" not in md and "PROXY_CONFIG" not in md


def test_peer_cache_is_bounded():
    cache = PeerCache(max_entries=8)
    values = [encode({"WORKLOAD_NAME": f"w{i}"}) for i in range(20)]
    for v in values:
        assert cache.lookup(v)["WORKLOAD_NAME"]
    assert len(cache) <= 8
    assert cache.lookup(values[0]) is cache.lookup(values[0])  # memoised


# --- config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "path"),
    [
        ({"downstream_discovery": [{"baggage": {}}]}, "filters[0].downstream_discovery[0].baggage"),
        (
            {"upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}]},
            "filters[0].upstream_discovery[1].workload_discovery",
        ),
        ({"downstream_discovery": [{}]}, "filters[0].downstream_discovery[0]"),
        ({"shared_with_upstream": True}, "filters[0].shared_with_upstream"),
        ({"additional_labels": [""]}, "filters[0].additional_labels[0]"),
    ],
)
def test_unsupported_config_is_rejected_by_path(d, path):
    with pytest.raises(ConfigError) as e:
        config(d)
    assert e.value.path == path


def test_registered_under_istio_name_and_type_url():
    load_builtin_extensions()
    ext = HTTP_FILTERS.by_name[FILTER_NAME]
    assert ext.type_url == "type.googleapis.com/io.istio.http.peer_metadata.Config"
    assert HTTP_FILTERS.by_type_url[ext.type_url] is ext


def test_config_proto_is_wire_compatible_with_istio():
    d = config_pb2.Config.DESCRIPTOR
    assert d.full_name == "io.istio.http.peer_metadata.Config"
    assert {f.name: f.number for f in d.fields} == {
        "downstream_discovery": 1,
        "upstream_discovery": 2,
        "downstream_propagation": 3,
        "upstream_propagation": 4,
        "shared_with_upstream": 5,
        "additional_labels": 6,
    }
    method = d.nested_types_by_name["DiscoveryMethod"]
    assert {f.name: f.number for f in method.fields} == {
        "baggage": 1,
        "workload_discovery": 2,
        "istio_headers": 3,
    }
    headers = d.nested_types_by_name["IstioHeaders"]
    assert {f.name: f.number for f in headers.fields} == {"skip_external_clusters": 1}


def test_the_downstream_tls_facts_reach_the_stream_info():
    ssl = SimpleNamespace(info=SimpleNamespace(peer_uri_sans=("spiffe://cluster.local/ns/default/sa/pp",)))
    stream = FakeStream(req(), route_to("app"))
    stream.connection.ssl = ssl
    run(PeerMetadataFilter(config(INBOUND)).on_request_headers(stream, True))
    assert stream.stream_info.downstream_ssl is ssl


def test_an_inbound_filter_needs_no_response_hook():
    """Inbound (no upstream discovery): the filter drops its response hook, so the connection manager
    may keep its whole-response fast path (it looks for an overridden on_response_headers); our
    metadata for a caller in the mesh goes through the stream's response_headers_to_set instead."""
    from proxy.filters.http.base import HttpFilter

    cfg = config(INBOUND)
    plain = PeerMetadataFilter(cfg)
    stream = FakeStream(req(), route_to("app"))
    run(plain.on_request_headers(stream, True))
    assert type(plain).on_response_headers is HttpFilter.on_response_headers
    assert not stream.response_headers_to_set  # a caller outside the mesh learns nothing
    meshed = PeerMetadataFilter(cfg)
    stream = FakeStream(req((PEER_METADATA_ID_HEADER, CALLER_ID)), route_to("app"))
    stream.response_headers_to_set = (("x-other", "kept"),)  # another filter's pairs stay
    run(meshed.on_request_headers(stream, True))
    assert type(meshed).on_response_headers is HttpFilter.on_response_headers
    response = resp()
    stream.apply_response_headers_to_set(response)
    assert response.get(PEER_METADATA_ID_HEADER) == OUR_NODE_ID and PEER_METADATA_HEADER not in response
    assert response.get("x-other") == "kept"
    outbound = PeerMetadataFilter(config(OUTBOUND))  # learns the callee from the response: keeps it
    run(outbound.on_request_headers(FakeStream(req(), route_to("app")), True))
    assert type(outbound).on_response_headers is not HttpFilter.on_response_headers
