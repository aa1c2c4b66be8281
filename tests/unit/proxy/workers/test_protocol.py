"""Frames between the main process and its workers, and the config snapshot a new worker gets."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from proxy.workers import protocol
from proxy.xds import api


def _cluster(name: str, timeout_s: int = 1) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name)
    c.connect_timeout.seconds = timeout_s
    return c


def test_frames_survive_any_split():
    data = protocol.json_frame({"op": "ready", "pid": 7}) + protocol.frame(protocol.BOOTSTRAP, b"\x00" * 300)
    for cut in range(len(data) + 1):
        r = protocol.FrameReader()
        got = r.feed(data[:cut]) + r.feed(data[cut:])
        assert [k for k, _ in got] == [protocol.JSON, protocol.BOOTSTRAP]
        assert got[1][1] == b"\x00" * 300


def test_a_bad_frame_header_is_refused():
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameReader().feed(b"\x00\x00\x00\x05Z....")
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameReader().feed(b"\x00\x00\x00\x00J")


def test_change_round_trips_as_a_delta_discovery_response():
    data = protocol.encode_change(
        api.CLUSTER, "v3", {"a": (_cluster("a"), "v3"), "b": (_cluster("b", 2), "v2")}, {"gone"}, "u9"
    )
    [(kind, payload)] = protocol.FrameReader().feed(data)
    assert kind == protocol.XDS
    nonce, update = protocol.decode_change(payload)
    assert nonce == "u9"
    assert update.delta and update.type_url == api.CLUSTER and update.version_info == "v3"
    assert update.resources == {"a": _cluster("a"), "b": _cluster("b", 2)}
    assert update.versions == {"a": "v3", "b": "v2"}
    assert update.removed == {"gone"}


def test_ack_carries_the_error():
    [(_, ok)] = protocol.FrameReader().feed(protocol.encode_ack("u1", api.LISTENER))
    [(_, bad)] = protocol.FrameReader().feed(protocol.encode_ack("u2", api.LISTENER, "Listener 'x': boom"))
    assert protocol.decode_ack(ok) == ("u1", None)
    assert protocol.decode_ack(bad) == ("u2", "Listener 'x': boom")


def _sotw(type_url, version, *msgs):
    return api.ResourceUpdate(type_url, version, {m.name: m for m in msgs})


def test_snapshot_sotw_wildcard_removes_what_is_left_out():
    snap = protocol.Snapshot()
    snap.apply(_sotw(api.CLUSTER, "1", _cluster("a"), _cluster("b")))
    changed, removed = snap.apply(_sotw(api.CLUSTER, "2", _cluster("b", 5)))
    assert removed == {"a"} and set(changed) == {"b"}
    assert snap.resources[api.CLUSTER] == {"b": (_cluster("b", 5), "2")}


def test_snapshot_delta_and_non_wildcard_remove_only_what_is_named():
    snap = protocol.Snapshot()
    snap.apply(api.ResourceUpdate(api.CLUSTER, "1", {"a": _cluster("a")}, delta=True, versions={"a": "x"}))
    snap.apply(api.ResourceUpdate(api.CLUSTER, "2", {"b": _cluster("b")}, delta=True, versions={"b": "y"}))
    assert set(snap.resources[api.CLUSTER]) == {"a", "b"}
    assert snap.resources[api.CLUSTER]["a"][1] == "x"
    snap.apply(api.ResourceUpdate(api.CLUSTER, "3", {}, removed={"a"}, delta=True))
    assert set(snap.resources[api.CLUSTER]) == {"b"}


def test_snapshot_replays_in_envoys_order_with_cds_and_lds_always_present():
    snap = protocol.Snapshot()
    assert [t for t, _, _ in snap.changes()] == [api.CLUSTER, api.LISTENER]
    snap.apply(_sotw(api.LISTENER, "4", listener_pb2.Listener(name="l")))
    snap.apply(_sotw(api.CLUSTER, "7", _cluster("a")))
    snap.set_secret(secret_pb2.Secret(name="default"), "s1")
    order = [(t, v, sorted(r)) for t, v, r in snap.changes()]
    assert order == [
        (api.SECRET, "", ["default"]),
        (api.CLUSTER, "7", ["a"]),
        (api.LISTENER, "4", ["l"]),
    ]
