"""Delta: pilot tracks what the proxy holds from its ACKs, so a NACKed resource is sent again."""

from envoy.service.discovery.v3 import discovery_pb2

from pilot.model.config import Config
from pilot.xds import resources
from pilot.xds.connection import Connection
from pilot.xds.debounce import config_push
from pilot.xds.status import NACKED, SYNCED, WatchState
from tests.unit.pilot.xds.test_server import CLUSTER_NAME, drain, make_server


def delta(nonce="", error="", subscribe=(), unsubscribe=()):
    req = discovery_pb2.DeltaDiscoveryRequest(
        type_url=resources.CLUSTER,
        response_nonce=nonce,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
    )
    if error:
        req.error_detail.message = error
    return req


def change(server, store, name):
    """A config change: fake_generate's cluster timeout counts the configs, so the cluster changes."""
    store.snap = store.snap.with_changes(
        [Config("VirtualService", "networking.istio.io", "v1", "default", name, {})], []
    )
    server.push_context = server._build_push_context()


async def test_a_nacked_resource_is_not_held_and_the_next_push_sends_it_again():
    server, store, _, proxy = make_server()
    conn = Connection("d1", proxy, delta=True)
    await server.handle_request(conn, delta())
    [first] = drain(conn)
    await server.handle_request(conn, delta(first.nonce))
    watch = conn.watches[resources.CLUSTER]
    acked = watch.resource_versions[CLUSTER_NAME]

    change(server, store, "a")
    await server.push_connection(conn, config_push([], 0.0))
    [rejected] = drain(conn)
    assert [r.name for r in rejected.resources] == [CLUSTER_NAME]
    await server.handle_request(conn, delta(rejected.nonce, error="bad cluster"))
    assert watch.status == NACKED
    assert watch.resource_versions == {CLUSTER_NAME: acked}  # the last ACKed version, not the rejected one

    # a later push (here: of the same content) sends the resource again, the proxy takes it
    server.push_context = server._build_push_context()
    await server.push_connection(conn, config_push([], 0.0))
    [again] = drain(conn)
    assert [(r.name, r.version) for r in again.resources] == [(r.name, r.version) for r in rejected.resources]
    await server.handle_request(conn, delta(again.nonce))
    assert watch.status == SYNCED
    assert watch.resource_versions == {CLUSTER_NAME: again.resources[0].version}
    server.push_context = server._build_push_context()
    await server.push_connection(conn, config_push([], 0.0))
    assert drain(conn) == []  # held and ACKed now: nothing to send


async def test_an_unanswered_response_is_not_sent_twice_and_an_ack_of_an_older_nonce_counts():
    server, store, _, proxy = make_server()
    conn = Connection("d1", proxy, delta=True)
    await server.handle_request(conn, delta())
    [first] = drain(conn)
    change(server, store, "a")
    await server.push_connection(conn, config_push([], 0.0))  # pushed before the first was ACKed
    [second] = drain(conn)
    server.push_context = server._build_push_context()
    await server.push_connection(conn, config_push([], 0.0))
    assert drain(conn) == []  # in flight: not sent again
    watch = conn.watches[resources.CLUSTER]
    await server.handle_request(conn, delta(first.nonce))  # stale for the status, but the proxy took it
    assert watch.resource_versions == {CLUSTER_NAME: first.resources[0].version}
    await server.handle_request(conn, delta(second.nonce))
    assert watch.status == SYNCED
    assert watch.resource_versions == {CLUSTER_NAME: second.resources[0].version}


def test_watch_state_settles_each_response_on_its_own():
    w = WatchState(resources.CLUSTER, resource_versions={"a": "1", "b": "1"})
    w.record_delta_sent("n1", {"a": "2"}, frozenset({"b"}))
    w.record_delta_sent("n2", {"c": "1"}, frozenset())
    assert w.expected_versions() == {"a": "2", "c": "1"}
    w.settle("n1", accepted=False)  # rejected: the proxy still has a@1 and b
    assert w.expected_versions() == {"a": "1", "b": "1", "c": "1"}
    w.settle("n2", accepted=True)
    assert w.resource_versions == {"a": "1", "b": "1", "c": "1"} and w.pending == {}
    w.record_delta_sent("n3", {"d": "1"}, frozenset())
    w.forget(["d", "a"])
    w.settle("n3", accepted=True)
    assert w.resource_versions == {"b": "1", "c": "1"}
