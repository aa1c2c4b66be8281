"""The discovery server with fake store, registry and builders: requests, ACK/NACK, pushes, Delta."""

import asyncio

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import duration_pb2

from pilot.model.config import ConfigKey, ConfigSnapshot
from pilot.model.proxy import parse_node
from pilot.model.service import Endpoint, Port, RegistrySnapshot, Service
from pilot.xds import resources
from pilot.xds.connection import Connection
from pilot.xds.debounce import config_push
from pilot.xds.generators import Generators
from pilot.xds.server import DiscoveryServer, registry_diff
from pilot.xds.status import NACKED, STALE, SYNCED

HOST = "ratings.default.svc.cluster.local"
CLUSTER_NAME = f"outbound|9080||{HOST}"


class FakeStore:
    def __init__(self):
        self.snap, self.subs = ConfigSnapshot(), []

    def snapshot(self):
        return self.snap

    def subscribe(self, cb):
        self.subs.append(cb)


class FakeRegistry(FakeStore):
    def __init__(self):
        super().__init__()
        self.snap, self.registered, self.unregistered = RegistrySnapshot(), [], []

    def register(self, proxy):
        self.registered.append(proxy.id)

    def unregister(self, proxy, grace):
        self.unregistered.append((proxy.id, grace))


def fake_generate(type_url, proxy, push, names):
    timeout = 1 + len(push.config.all())
    if type_url == resources.CLUSTER:
        return [
            cluster_pb2.Cluster(name=CLUSTER_NAME, connect_timeout=duration_pb2.Duration(seconds=timeout))
        ]
    if type_url == resources.ENDPOINT:
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=CLUSTER_NAME)
        for ep in push.registry.endpoints:
            lb = cla.endpoints.add().lb_endpoints.add()
            lb.endpoint.address.socket_address.address = ep.address
        return [cla]
    return []


def make_server():
    store, registry = FakeStore(), FakeRegistry()
    server = DiscoveryServer(store, registry, generators=Generators(fake_generate), push_concurrency=2)
    proxy = parse_node("sidecar~10.0.0.1~app-1.default~default.svc.cluster.local")
    return server, store, registry, proxy


def sotw(type_url, names=(), nonce="", error=""):
    req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), response_nonce=nonce)
    if error:
        req.error_detail.message = error
    return req


def drain(conn):
    out = []
    while not conn.outbox.empty():
        out.append(conn.outbox.get_nowait())
    return out


async def test_sotw_subscribe_ack_nack_and_stale_nonce():
    server, _, _, proxy = make_server()
    conn = Connection("c1", proxy, delta=False)
    await server.handle_request(conn, sotw(resources.CLUSTER))
    [cds] = drain(conn)
    assert cds.type_url == resources.CLUSTER and len(cds.resources) == 1
    assert conn.watches[resources.CLUSTER].status == STALE
    await server.handle_request(conn, sotw(resources.CLUSTER, nonce=cds.nonce))
    assert conn.watches[resources.CLUSTER].status == SYNCED and drain(conn) == []
    await server.handle_request(conn, sotw(resources.CLUSTER, nonce="not-the-latest", error="ignored"))
    assert conn.watches[resources.CLUSTER].status == SYNCED
    await server.handle_request(conn, sotw(resources.ENDPOINT, [CLUSTER_NAME]))
    [eds] = drain(conn)
    await server.handle_request(conn, sotw(resources.ENDPOINT, [CLUSTER_NAME], eds.nonce, "bad endpoint"))
    watch = conn.watches[resources.ENDPOINT]
    assert watch.status == NACKED and watch.error == "bad endpoint"
    assert server.metrics.rejects.labels("eds")._value.get() == 1


async def test_a_push_reaches_affected_connections_once_and_endpoint_changes_go_as_eds():
    server, store, registry, proxy = make_server()
    conn = Connection("c1", proxy, delta=False)
    server.connections["c1"] = conn
    await server.handle_request(conn, sotw(resources.CLUSTER))
    await server.handle_request(conn, sotw(resources.ENDPOINT, [CLUSTER_NAME]))
    drain(conn)
    await server.start()
    try:
        server.push_round(config_push([ConfigKey("VirtualService", "default", "x")], 0.0))
        for _ in range(50):
            await asyncio.sleep(0.01)
            if conn.outbox.qsize() >= 2:
                break
        assert [r.type_url for r in drain(conn)] == [resources.CLUSTER, resources.ENDPOINT]
        new = RegistrySnapshot(
            (Service(HOST, "default", (Port("http", 9080, "HTTP"),)),),
            (Endpoint(HOST, 9080, "10.1.1.1", 9080),),
        )
        services, hosts = registry_diff(server._registry_seen, new)
        assert services == {HOST} and hosts == {HOST}
        registry.snap = new
        # Services known, and an endpoint with the same identity elsewhere: only the address moves.
        server._registry_seen = RegistrySnapshot(new.services, (Endpoint(HOST, 9080, "10.1.1.2", 9080),))
        server._on_registry_change(new, True)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not conn.outbox.empty():
                break
        [only] = drain(conn)
        assert only.type_url == resources.ENDPOINT
    finally:
        await server.stop()


async def test_delta_sends_only_what_changed():
    server, store, _, proxy = make_server()
    conn = Connection("d1", proxy, delta=True)
    req = discovery_pb2.DeltaDiscoveryRequest(type_url=resources.CLUSTER)
    await server.handle_request(conn, req)
    [first] = drain(conn)
    assert [r.name for r in first.resources] == [CLUSTER_NAME]
    await server.handle_request(
        conn, discovery_pb2.DeltaDiscoveryRequest(type_url=resources.CLUSTER, response_nonce=first.nonce)
    )
    await server.push_connection(conn, config_push([], 0.0))
    assert drain(conn) == []  # nothing changed: nothing sent
    store.snap = store.snap.with_changes([], [])  # same content, new version: still nothing
    server.push_context = server._build_push_context()
    await server.push_connection(conn, config_push([], 0.0))
    assert drain(conn) == []


async def test_reconnecting_delta_client_gets_only_differences_from_its_initial_versions():
    server, _, _, proxy = make_server()
    conn = Connection("d1", proxy, delta=True)
    await server.handle_request(conn, discovery_pb2.DeltaDiscoveryRequest(type_url=resources.CLUSTER))
    [first] = drain(conn)
    version = first.resources[0].version
    again = Connection("d2", proxy, delta=True)
    req = discovery_pb2.DeltaDiscoveryRequest(type_url=resources.CLUSTER)
    req.initial_resource_versions[CLUSTER_NAME] = version
    req.initial_resource_versions["gone"] = "x"
    await server.handle_request(again, req)
    [resp] = drain(again)
    assert list(resp.resources) == [] and list(resp.removed_resources) == ["gone"]


def test_registry_diff_treats_a_change_of_endpoint_identity_as_a_service_change():
    from pilot.model.service import Endpoint, Port, RegistrySnapshot, Service

    svc = Service("reviews.default.svc.cluster.local", "default", (Port("http", 9080, "HTTP"),))

    def snap(*eps):
        return RegistrySnapshot(services=(svc,), endpoints=eps)

    a = Endpoint(svc.hostname, 9080, "127.0.0.12", 9080, service_account="reviews", tls_mode="istio")
    moved = Endpoint(svc.hostname, 9080, "127.0.0.13", 9080, service_account="reviews", tls_mode="istio")
    no_sidecar = Endpoint(
        svc.hostname, 9080, "127.0.0.12", 9080, service_account="reviews", tls_mode="disabled"
    )
    other_sa = Endpoint(svc.hostname, 9080, "127.0.0.12", 9080, service_account="bookinfo", tls_mode="istio")

    # Only the address moved: EDS is enough.
    assert registry_diff(snap(a), snap(moved)) == (set(), {svc.hostname})
    # The sidecar went away or the identity changed: clusters (TLS, SANs) must be rebuilt too.
    assert registry_diff(snap(a), snap(no_sidecar)) == ({svc.hostname}, {svc.hostname})
    assert registry_diff(snap(a), snap(other_sa)) == ({svc.hostname}, {svc.hostname})
