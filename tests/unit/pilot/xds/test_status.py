"""Sync status per proxy and type, and what each kind of request means (SotW and Delta)."""

from pilot.xds import protocol
from pilot.xds.resources import CLUSTER, ENDPOINT, LISTENER, cluster_host
from pilot.xds.status import NACKED, NOT_SENT, STALE, SYNCED, WatchState


def test_status_moves_not_sent_stale_synced_nacked_synced():
    w = WatchState(CLUSTER)
    assert w.status == NOT_SENT
    w.record_sent("v1", "n1", 0.0)
    assert w.status == STALE
    w.record_ack("n1")
    assert w.status == SYNCED and w.version_acked == "v1"
    w.record_sent("v2", "n2", 1.0)
    assert w.status == STALE
    w.record_nack("n2", "cluster x: bad lb_policy")
    assert w.status == NACKED
    assert w.to_json()["error"] == "cluster x: bad lb_policy" and w.to_json()["version_acked"] == "v1"
    w.record_sent("v3", "n3", 2.0)
    w.record_ack("n3")
    assert w.status == SYNCED and "error" not in w.to_json()


def test_sotw_first_request_subscribes_and_gets_an_answer():
    d = protocol.sotw(None, ENDPOINT, ["outbound|9080||a"], "", "")
    assert d.kind == protocol.NEW and d.respond and d.names == {"outbound|9080||a"}


def test_sotw_ack_nack_stale_and_resubscribe():
    w = WatchState(ENDPOINT, names=frozenset({"c1"}))
    w.record_sent("v1", "n1", 0)
    assert protocol.sotw(w, ENDPOINT, ["c1"], "n1", "").kind == protocol.ACK
    assert not protocol.sotw(w, ENDPOINT, ["c1"], "n1", "").respond
    nack = protocol.sotw(w, ENDPOINT, ["c1"], "n1", "boom")
    assert nack.kind == protocol.NACK and not nack.respond and nack.error == "boom"
    stale = protocol.sotw(w, ENDPOINT, ["c1", "c2"], "n0", "")
    assert stale.kind == protocol.STALE_NONCE and not stale.respond and stale.names == {"c1"}
    more = protocol.sotw(w, ENDPOINT, ["c1", "c2"], "n1", "")
    assert more.kind == protocol.RESUBSCRIBE and more.respond and more.names == {"c1", "c2"}


def test_wildcard_types():
    assert protocol.is_wildcard(LISTENER, frozenset(), False)
    assert not protocol.is_wildcard(ENDPOINT, frozenset(), False)
    assert protocol.is_wildcard(ENDPOINT, frozenset(), True)


def test_delta_subscribe_unsubscribe_and_acks():
    first = protocol.delta(None, CLUSTER, [], [], "", "")
    assert first.kind == protocol.NEW and first.wildcard and first.respond
    w = WatchState(ENDPOINT, names=frozenset({"a"}))
    w.record_sent("v1", "n1", 0)
    ack = protocol.delta(w, ENDPOINT, [], [], "n1", "")
    assert ack.kind == protocol.ACK and not ack.respond
    nack = protocol.delta(w, ENDPOINT, [], [], "n1", "bad")
    assert nack.kind == protocol.NACK and nack.error == "bad"
    sub = protocol.delta(w, ENDPOINT, ["b"], ["a"], "", "")
    assert sub.respond and sub.names == {"b"}
    stale = protocol.delta(w, ENDPOINT, ["c"], [], "old", "")
    assert stale.kind == protocol.STALE_NONCE and stale.respond and stale.names == {"a", "c"}


def test_cluster_host_of_istio_cluster_names():
    assert (
        cluster_host("outbound|9080|v1|reviews.default.svc.cluster.local")
        == "reviews.default.svc.cluster.local"
    )
    assert cluster_host("BlackHoleCluster") is None
