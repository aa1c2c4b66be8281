"""The SotW and Delta state machines, driven with messages only (no sockets)."""

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from proxy.xds import api
from proxy.xds.nack import error_detail
from proxy.xds.protocol import DeltaProtocol, SotwProtocol

NODE = base_pb2.Node(id="sidecar~127.0.0.1~a.default~default.svc.cluster.local", cluster="a")


def packed(msg):
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def sotw_response(type_url, version, nonce, *msgs):
    return discovery_pb2.DiscoveryResponse(
        type_url=type_url, version_info=version, nonce=nonce, resources=[packed(m) for m in msgs]
    )


def sotw(*types):
    p = SotwProtocol(NODE)
    for t, wildcard in types:
        p.add_type(t, wildcard)
    return p


def test_sotw_first_requests_follow_envoy_order_and_only_types_with_interest():
    p = sotw((api.LISTENER, True), (api.ROUTE, False), (api.CLUSTER, True), (api.ENDPOINT, False))
    p.set_interest(api.ENDPOINT, {"b", "a"})
    reqs = p.start_stream()
    assert [r.type_url for r in reqs] == [api.CLUSTER, api.ENDPOINT, api.LISTENER]
    assert list(reqs[0].resource_names) == []  # wildcard
    assert list(reqs[1].resource_names) == ["a", "b"]
    assert all(r.node.id == NODE.id and r.version_info == "" and r.response_nonce == "" for r in reqs)


def test_sotw_ack_carries_response_version_and_nonce():
    p = sotw((api.CLUSTER, True))
    p.start_stream()
    rx = p.on_response(sotw_response(api.CLUSTER, "v1", "n1", cluster_pb2.Cluster(name="a")))
    assert rx.decode_error is None
    assert set(rx.update.resources) == {"a"} and rx.update.delta is False
    ack = p.ack(rx)
    assert (ack.version_info, ack.response_nonce, ack.HasField("error_detail")) == ("v1", "n1", False)


def test_sotw_nack_keeps_previous_version_with_new_nonce_and_detail():
    p = sotw((api.CLUSTER, True))
    p.start_stream()
    p.ack(p.on_response(sotw_response(api.CLUSTER, "v1", "n1", cluster_pb2.Cluster(name="a"))))
    rx = p.on_response(sotw_response(api.CLUSTER, "v2", "n2", cluster_pb2.Cluster(name="bad")))
    nack = p.nack(rx, error_detail(api.CLUSTER, api.UpdateRejected({"bad": "invalid lb_policy"})))
    assert nack.version_info == "v1"
    assert nack.response_nonce == "n2"
    assert nack.error_detail.code == 3
    assert "bad: invalid lb_policy" in nack.error_detail.message
    assert p.accepted_version(api.CLUSTER) == "v1"


def test_sotw_response_that_cannot_be_decoded_is_rejected_naming_the_resource():
    p = sotw((api.CLUSTER, True))
    p.start_stream()
    wrong = sotw_response(api.CLUSTER, "v1", "n1", listener_pb2.Listener(name="l"))
    rx = p.on_response(wrong)
    assert rx.update is None and "resources[0]" in str(rx.decode_error)
    dup = sotw_response(api.CLUSTER, "v1", "n2", cluster_pb2.Cluster(name="a"), cluster_pb2.Cluster(name="a"))
    assert "duplicate" in str(p.on_response(dup).decode_error)


def test_sotw_interest_change_sends_full_name_list_with_last_version_and_nonce():
    p = sotw((api.CLUSTER, True), (api.ENDPOINT, False))
    p.start_stream()
    assert p.set_interest(api.ENDPOINT, {"a"}).resource_names == ["a"]
    rx = p.on_response(
        sotw_response(api.ENDPOINT, "e1", "n5", endpoint_pb2.ClusterLoadAssignment(cluster_name="a"))
    )
    p.ack(rx)
    req = p.set_interest(api.ENDPOINT, {"a", "b"})
    assert (list(req.resource_names), req.version_info, req.response_nonce) == (["a", "b"], "e1", "n5")
    assert p.set_interest(api.ENDPOINT, {"a", "b"}) is None  # no change, no request
    # Dropping every name after subscribing is an explicit empty list (not wildcard: already subscribed).
    assert list(p.set_interest(api.ENDPOINT, set()).resource_names) == []


def test_sotw_never_sends_an_empty_first_request_for_a_non_wildcard_type():
    p = sotw((api.ROUTE, False))
    assert p.start_stream() == []
    p.set_interest(api.ROUTE, {"r"})
    p.set_interest(api.ROUTE, set())
    p.stream_lost()
    assert p.start_stream() == []


def test_sotw_reconnect_resubscribes_with_last_good_version_and_no_nonce():
    p = sotw((api.CLUSTER, True), (api.ENDPOINT, False))
    p.start_stream()
    p.set_interest(api.ENDPOINT, {"a"})
    p.ack(p.on_response(sotw_response(api.CLUSTER, "v7", "n1", cluster_pb2.Cluster(name="a"))))
    p.stream_lost()
    reqs = p.start_stream()
    assert [(r.type_url, r.version_info, r.response_nonce) for r in reqs] == [
        (api.CLUSTER, "v7", ""),
        (api.ENDPOINT, "", ""),
    ]


def test_sotw_interest_while_disconnected_is_sent_on_the_next_stream():
    p = sotw((api.ENDPOINT, False))
    assert p.set_interest(api.ENDPOINT, {"x"}) is None
    assert [list(r.resource_names) for r in p.start_stream()] == [["x"]]


def test_node_on_first_message_only():
    p = SotwProtocol(NODE, node_on_first_message_only=True)
    p.add_type(api.CLUSTER, True)
    p.add_type(api.LISTENER, True)
    reqs = p.start_stream()
    assert [r.HasField("node") for r in reqs] == [True, False]
    p.stream_lost()
    assert p.start_stream()[0].HasField("node")


# -- Delta -----------------------------------------------------------------------------------------
def delta(*types):
    p = DeltaProtocol(NODE)
    for t, wildcard in types:
        p.add_type(t, wildcard)
    return p


def delta_response(type_url, nonce, resources=(), removed=()):
    return discovery_pb2.DeltaDiscoveryResponse(
        type_url=type_url,
        nonce=nonce,
        resources=[discovery_pb2.Resource(name=n, version=v, resource=packed(m)) for n, v, m in resources],
        removed_resources=list(removed),
    )


def test_delta_wildcard_subscribes_star_and_specific_names_otherwise():
    p = delta((api.CLUSTER, True), (api.ENDPOINT, False))
    p.set_interest(api.ENDPOINT, {"a"})
    reqs = p.start_stream()
    assert [(r.type_url, list(r.resource_names_subscribe)) for r in reqs] == [
        (api.CLUSTER, ["*"]),
        (api.ENDPOINT, ["a"]),
    ]


def test_delta_interest_changes_become_subscribe_and_unsubscribe_lists():
    p = delta((api.ENDPOINT, False))
    p.set_interest(api.ENDPOINT, {"a", "b"})
    p.start_stream()
    req = p.set_interest(api.ENDPOINT, {"b", "c"})
    assert list(req.resource_names_subscribe) == ["c"]
    assert list(req.resource_names_unsubscribe) == ["a"]
    assert p.set_interest(api.ENDPOINT, {"b", "c"}) is None


def test_delta_update_carries_per_resource_versions_and_removals_and_ack_has_nonce():
    p = delta((api.CLUSTER, True))
    p.start_stream()
    rx = p.on_response(
        delta_response(api.CLUSTER, "n1", [("a", "va", cluster_pb2.Cluster(name="a"))], removed=["gone"])
    )
    assert rx.update.delta and set(rx.update.resources) == {"a"}
    assert rx.update.versions == {"a": "va"} and rx.update.removed == {"gone"}
    ack = p.ack(rx)
    assert ack.response_nonce == "n1" and not ack.HasField("error_detail")


def test_delta_reconnect_sends_initial_versions_of_what_was_applied_only():
    p = delta((api.CLUSTER, True))
    p.start_stream()
    p.ack(
        p.on_response(
            delta_response(
                api.CLUSTER,
                "n1",
                [("a", "va", cluster_pb2.Cluster(name="a")), ("b", "vb", cluster_pb2.Cluster(name="b"))],
            )
        )
    )
    p.ack(p.on_response(delta_response(api.CLUSTER, "n2", removed=["b"])))
    rejected = p.on_response(delta_response(api.CLUSTER, "n3", [("c", "vc", cluster_pb2.Cluster(name="c"))]))
    nack = p.nack(rejected, error_detail(api.CLUSTER, api.UpdateRejected({"c": "no"})))
    assert nack.response_nonce == "n3" and "c: no" in nack.error_detail.message
    p.stream_lost()
    (req,) = p.start_stream()
    assert dict(req.initial_resource_versions) == {"a": "va"}
    assert list(req.resource_names_subscribe) == ["*"]


def test_delta_unsubscribed_names_are_forgotten_so_resubscribing_fetches_again():
    p = delta((api.ENDPOINT, False))
    p.set_interest(api.ENDPOINT, {"a"})
    p.start_stream()
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="a")
    p.ack(p.on_response(delta_response(api.ENDPOINT, "n1", [("a", "v1", cla)])))
    p.set_interest(api.ENDPOINT, set())
    p.set_interest(api.ENDPOINT, {"a"})
    p.stream_lost()
    (req,) = p.start_stream()
    assert dict(req.initial_resource_versions) == {}


def test_delta_resource_without_body_is_rejected_by_name():
    p = delta((api.CLUSTER, True))
    p.start_stream()
    resp = discovery_pb2.DeltaDiscoveryResponse(
        type_url=api.CLUSTER, nonce="n1", resources=[discovery_pb2.Resource(name="x", version="1")]
    )
    rx = p.on_response(resp)
    assert rx.update is None and rx.decode_error.name == "x"
