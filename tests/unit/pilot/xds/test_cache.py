"""The XdsCache: proxies of one shape share serialized resources; proxies whose config must differ
never do; a new push context is a new cache. Real builders (pilot.networking) on the Bookinfo mesh."""

from __future__ import annotations

import asyncio

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilot.model.config import ConfigKey, ConfigSnapshot
from pilot.model.proxy import parse_node
from pilot.model.push_context import PushContext
from pilot.networking import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds import resources
from pilot.xds.cache import CacheMismatch, XdsCache, cache_for, serialize
from pilot.xds.connection import Connection
from pilot.xds.debounce import config_push
from pilot.xds.generators import Generators
from pilot.xds.server import DiscoveryServer
from tests.unit.pilot.networking.bookinfo import (
    DOMAIN,
    NS,
    WORKLOADS,
    config,
    fqdn,
    grpc_client,
    load,
    push,
    registry,
    router,
    sidecar,
)

ALL_TYPES = (CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, ENDPOINT_TYPE)


def new_cache(p: PushContext, verify: bool = True) -> XdsCache:
    return XdsCache(p, Generators().generate, verify=verify)


def bare_sidecar(i: int, ns: str = NS, labels: dict | None = None, **metadata):
    """A sidecar on an address that hosts no workload (as the bench's simulated proxies)."""
    md = {"NAMESPACE": ns, "LABELS": labels or {}, **metadata}
    return parse_node(f"sidecar~127.9.0.{i}~client-{i}.{ns}~{ns}.svc.{DOMAIN}", md)


def fresh(type_url, proxy, p, names=None):
    return [(b.name, b.version) for b in serialize(Generators().generate(type_url, proxy, p, names))]


def cached(cache, type_url, proxy, names=None):
    return [(b.name, b.version) for b in cache.get(type_url, proxy, names)]


def test_proxies_of_one_shape_share_the_serialized_resources():
    p = push("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    cache = new_cache(p)
    a = bare_sidecar(1, labels={"team": "x"})  # a label no selector reads
    b = bare_sidecar(2, labels={"team": "y"}, ISTIO_VERSION="1.22")
    for type_url in (CLUSTER_TYPE, LISTENER_TYPE):
        first, second = cache.get(type_url, a, None), cache.get(type_url, b, None)
        assert first is second and len(first) > 0
    assert cache.get(ROUTE_TYPE, a, ["9080"]) is cache.get(ROUTE_TYPE, b, ["9080"])
    assert (cache.misses, cache.hits) == (3, 3)
    # what is cached is the serialized Any, decodable as the real resource
    built = cache.get(ROUTE_TYPE, a, ["9080"])[0]
    rc = route_pb2.RouteConfiguration.FromString(built.resource.value)
    assert rc.name == "9080" and built.resource.type_url == ROUTE_TYPE
    assert built.version == resources.resource_version(rc)


async def test_sotw_responses_of_one_shape_share_the_encoded_resources_without_copies():
    p = push("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    store = Store(ConfigSnapshot({c.key: c for c in p.config.all()}, 1))
    server = DiscoveryServer(store, Registry(registry()), push_concurrency=1)
    conns = [Connection(f"c{i}", bare_sidecar(i + 1, labels={"n": str(i)}), delta=False) for i in range(3)]
    for conn in conns:
        await server.handle_request(conn, discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE))
    sent = [c.outbox.get_nowait() for c in conns]
    assert sent[0].body is sent[1].body is sent[2].body and len(sent[0].body) > 1000
    assert len({r.nonce for r in sent}) == 3
    decoded = discovery_pb2.DiscoveryResponse.FromString(sent[0].SerializeToString())
    names = [cluster_pb2.Cluster.FromString(r.value).name for r in decoded.resources]
    assert names == fresh_names(CLUSTER_TYPE, conns[0].proxy, server.push_context)


def fresh_names(type_url, proxy, p):
    return [name for name, _ in fresh(type_url, proxy, p)]


def test_requested_names_are_part_of_the_key():
    p = push()
    cache = new_cache(p)
    proxy = bare_sidecar(1)
    reviews = f"outbound|9080||{fqdn('reviews')}"
    assert [b.name for b in cache.get(ENDPOINT_TYPE, proxy, [reviews])] == [reviews]
    everything = [b.name for b in cache.get(ENDPOINT_TYPE, proxy, None)]
    assert reviews in everything and len(everything) == 4
    assert cache.misses == 2


def test_a_namespace_with_a_sidecar_scope_never_shares_with_another_namespace():
    scope = config(
        "Sidecar",
        "default",
        {"egress": [{"hosts": ["default/reviews.default.svc.cluster.local"]}]},
        namespace="team",
    )
    p = push(configs=[scope])
    cache = new_cache(p)
    scoped, open_ = bare_sidecar(1, ns="team"), bare_sidecar(2, ns="default")
    scoped_clusters = {n for n, _ in cached(cache, CLUSTER_TYPE, scoped)}
    open_clusters = {n for n, _ in cached(cache, CLUSTER_TYPE, open_)}
    assert f"outbound|9080||{fqdn('reviews')}" in scoped_clusters
    assert f"outbound|9080||{fqdn('ratings')}" not in scoped_clusters
    assert f"outbound|9080||{fqdn('ratings')}" in open_clusters
    for type_url in ALL_TYPES:
        names = ["9080"] if type_url == ROUTE_TYPE else None
        assert cached(cache, type_url, scoped, names) == fresh(type_url, scoped, p, names)
        assert cached(cache, type_url, open_, names) == fresh(type_url, open_, p, names)
    assert cache.misses == 2 * len(ALL_TYPES)  # nothing was shared between the two


def test_proxies_told_apart_by_source_labels_never_share_routes():
    vs = config(
        "VirtualService",
        "ratings",
        {
            "hosts": ["ratings"],
            "http": [
                {
                    "match": [{"sourceLabels": {"app": "reviews", "version": "v2"}}],
                    "route": [{"destination": {"host": "ratings", "subset": "v2"}}],
                },
                {"route": [{"destination": {"host": "ratings", "subset": "v1"}}]},
            ],
        },
    )
    p = push("destination-rule-all.yaml", configs=[vs])
    cache = new_cache(p)

    def ratings_routes(proxy):
        (built,) = cache.get(ROUTE_TYPE, proxy, ["9080"])
        rc = route_pb2.RouteConfiguration.FromString(built.resource.value)
        vh = next(v for v in rc.virtual_hosts if v.name.startswith("ratings."))
        return [r.route.cluster for r in vh.routes]

    v2 = bare_sidecar(1, labels={"app": "reviews", "version": "v2"})
    v3 = bare_sidecar(2, labels={"app": "reviews", "version": "v3"})
    v2_again = bare_sidecar(3, labels={"app": "reviews", "version": "v2", "pod-template-hash": "abc"})
    v3_first = ratings_routes(v3)  # the v3 answer is cached first: v2 must not get it
    assert ratings_routes(v2) == [
        "outbound|9080|v2|ratings.default.svc.cluster.local",
        "outbound|9080|v1|ratings.default.svc.cluster.local",
    ]
    assert v3_first == ["outbound|9080|v1|ratings.default.svc.cluster.local"]
    assert ratings_routes(v2_again) == ratings_routes(v2)
    assert (cache.misses, cache.hits) == (2, 2)


def test_a_gateway_never_shares_with_a_sidecar_of_the_same_namespace_and_labels():
    p = push("bookinfo-gateway.yaml")
    cache = new_cache(p)
    gw = router()
    twin = parse_node(
        f"sidecar~127.9.0.1~twin-1.istio-system~istio-system.svc.{DOMAIN}",
        {"NAMESPACE": "istio-system", "LABELS": gw.labels},
    )
    gw_listeners = {n for n, _ in cached(cache, LISTENER_TYPE, gw)}
    twin_listeners = {n for n, _ in cached(cache, LISTENER_TYPE, twin)}
    assert "virtualOutbound" in twin_listeners and "virtualOutbound" not in gw_listeners
    assert cached(cache, CLUSTER_TYPE, gw) == fresh(CLUSTER_TYPE, gw, p)
    assert cached(cache, CLUSTER_TYPE, twin) == fresh(CLUSTER_TYPE, twin, p)
    assert cache.hits == 0


def test_workload_ips_split_listeners_and_clusters_but_not_routes():
    p = push()
    cache = new_cache(p)
    reviews_v1, reviews_v2 = sidecar("reviews", "v1", "127.0.0.12"), sidecar("reviews", "v1", "127.0.0.13")
    c1 = cache.get(CLUSTER_TYPE, reviews_v1, None)
    c2 = cache.get(CLUSTER_TYPE, reviews_v2, None)
    inbound = {b.name: cluster_pb2.Cluster.FromString(b.resource.value) for b in c2}["inbound|9080||"]
    assert inbound.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == (
        "127.0.0.13"
    )
    assert c1 is not c2
    assert cache.get(ROUTE_TYPE, reviews_v1, ["9080"]) is cache.get(ROUTE_TYPE, reviews_v2, ["9080"])


def test_interception_none_binds_each_proxy_its_own_ip():
    p = push()
    cache = new_cache(p)
    a, b = bare_sidecar(1, INTERCEPTION_MODE="NONE"), bare_sidecar(2, INTERCEPTION_MODE="NONE")
    names_a = {n for n, _ in cached(cache, LISTENER_TYPE, a)}
    names_b = {n for n, _ in cached(cache, LISTENER_TYPE, b)}
    assert "127.9.0.1_9080" in names_a and "127.9.0.2_9080" in names_b


def every_bookinfo_proxy():
    proxies = [sidecar(name, version, ip) for name, version, ip in WORKLOADS]
    proxies += [bare_sidecar(1), bare_sidecar(2, labels={"app": "reviews", "version": "v2"})]
    proxies += [bare_sidecar(3, ns="other"), router(), grpc_client(), grpc_client("other")]
    proxies += [sidecar(INTERCEPTION_MODE="NONE")]
    # Local mode with the app behind its sidecar: the app address shapes listeners and clusters.
    proxies += [sidecar(INTERCEPTION_MODE="NONE", ISTHMUS_APP_ADDRESS="127.0.1.10")]
    proxies += [sidecar(INTERCEPTION_MODE="NONE", ISTHMUS_APP_ADDRESS="127.0.1.99")]
    for ip in ("127.0.0.1", "127.0.0.2"):  # local-mode gateways bind their own IP
        local_gw = router(ip)
        local_gw.metadata["INTERCEPTION_MODE"] = "NONE"
        proxies.append(local_gw)
    return proxies


@pytest.mark.parametrize(
    "files",
    [
        ("destination-rule-all.yaml", "virtual-service-reviews-jason-v2-v3.yaml"),
        ("destination-rule-all.yaml", "virtual-service-reviews-50-v3.yaml", "bookinfo-gateway.yaml"),
        (
            "destination-rule-all.yaml",
            "fault-injection-details-v1.yaml",
            "virtual-service-ratings-test-delay.yaml",
        ),
    ],
)
def test_every_cached_answer_equals_a_fresh_one(files):
    """verify mode regenerates on every hit: any input the key misses would raise CacheMismatch."""
    p = push(*files)
    cache = new_cache(p, verify=True)
    proxies = every_bookinfo_proxy()
    for _ in range(2):  # the second round is all hits
        for proxy in proxies:
            for type_url in ALL_TYPES:
                names = ["9080"] if type_url == ROUTE_TYPE and proxy.type == "sidecar" else None
                assert cached(cache, type_url, proxy, names) == fresh(type_url, proxy, p, names)
    assert cache.hits >= len(proxies) * len(ALL_TYPES)


def test_verify_mode_catches_a_key_that_misses_an_input():
    def by_pod_name(type_url, proxy, push, names):  # reads the pod name, which the shape leaves out
        return [cluster_pb2.Cluster(name=proxy.name)]

    cache = XdsCache(push(), Generators(by_pod_name).generate, verify=True)
    cache.get(CLUSTER_TYPE, bare_sidecar(1), None)
    with pytest.raises(CacheMismatch, match="misses an input"):
        cache.get(CLUSTER_TYPE, bare_sidecar(2), None)


def test_one_cache_per_push_context():
    gen = Generators().generate
    p1, p2 = push(), push()
    assert cache_for(p1, gen) is cache_for(p1, gen)
    assert cache_for(p1, gen) is not cache_for(p2, gen)


class Store:
    def __init__(self, snap):
        self.snap = snap

    def snapshot(self):
        return self.snap

    def subscribe(self, cb):
        pass


class Registry(Store):
    def register(self, proxy):
        pass

    def unregister(self, proxy, grace):
        pass


def reviews_clusters(response) -> list[str]:
    rc = route_pb2.RouteConfiguration()
    packed = response.resources[0]
    (packed.resource if hasattr(packed, "resource") else packed).Unpack(rc)
    vh = next(v for v in rc.virtual_hosts if v.name.startswith("reviews."))
    return sorted(
        {r.route.cluster for r in vh.routes}
        | {w.name for r in vh.routes for w in r.route.weighted_clusters.clusters}
    )


async def test_after_a_change_every_proxy_gets_the_new_config():
    configs = load("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    store = Store(ConfigSnapshot({c.key: c for c in configs}, 1))
    server = DiscoveryServer(store, Registry(registry()), push_concurrency=4, verify_cache=True)
    conns = []
    for i in range(6):
        conn = Connection(f"c{i}", bare_sidecar(i + 1), delta=i % 2 == 1)
        server.connections[conn.conn_id] = conn
        if conn.delta:
            req = discovery_pb2.DeltaDiscoveryRequest(type_url=ROUTE_TYPE, resource_names_subscribe=["9080"])
        else:
            req = discovery_pb2.DiscoveryRequest(type_url=ROUTE_TYPE, resource_names=["9080"])
        await server.handle_request(conn, req)
        conns.append(conn)
    first = [c.outbox.get_nowait() for c in conns]
    assert all(reviews_clusters(r) == [f"outbound|9080|v1|{fqdn('reviews')}"] for r in first)
    old_cache = server.cache_for(server.push_context)
    assert old_cache.misses == 1 and old_cache.hits == 5

    changed = load("virtual-service-reviews-v3.yaml")
    store.snap = store.snap.with_changes(changed, [])
    await server.start()
    try:
        server.push_round(config_push([ConfigKey("VirtualService", NS, "reviews")], 0.0))
        got = await asyncio.wait_for(asyncio.gather(*(c.outbox.get() for c in conns)), 5)
    finally:
        await server.stop()
    assert all(reviews_clusters(r) == [f"outbound|9080|v3|{fqdn('reviews')}"] for r in got)
    new_cache = server.cache_for(server.push_context)
    assert new_cache is not old_cache and new_cache.misses == 1


async def test_a_sotw_push_skips_types_whose_acked_content_did_not_change():
    configs = load("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    store = Store(ConfigSnapshot({c.key: c for c in configs}, 1))
    server = DiscoveryServer(store, Registry(registry()), push_concurrency=2)
    synced, nacked = (
        Connection("s", bare_sidecar(1), delta=False),
        Connection("n", bare_sidecar(2), delta=False),
    )
    for conn in (synced, nacked):
        server.connections[conn.conn_id] = conn
        for type_url, names in ((CLUSTER_TYPE, []), (LISTENER_TYPE, []), (ROUTE_TYPE, ["9080"])):
            await server.handle_request(
                conn, discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names)
            )
            sent = conn.outbox.get_nowait()
            ack = discovery_pb2.DiscoveryRequest(
                type_url=type_url, resource_names=names, response_nonce=sent.nonce
            )
            if conn is nacked and type_url == CLUSTER_TYPE:
                ack.error_detail.message = "rejected"
            await server.handle_request(conn, ack)
    store.snap = store.snap.with_changes(load("virtual-service-reviews-v3.yaml"), [])
    server.push_context = server._build_push_context()
    request = config_push([ConfigKey("VirtualService", NS, "reviews")], 0.0)
    await server.push_connection(synced, request)
    await server.push_connection(nacked, request)
    assert [r.type_url for r in drain(synced)] == [ROUTE_TYPE]  # clusters and listeners did not change
    assert [r.type_url for r in drain(nacked)] == [CLUSTER_TYPE, ROUTE_TYPE]  # what it rejected goes again


def drain(conn):
    out = []
    while not conn.outbox.empty():
        out.append(conn.outbox.get_nowait())
    return out


async def test_endpoints_go_again_after_changed_clusters_even_when_unchanged():
    """Envoy re-warms an updated EDS cluster from the next EDS response: EDS follows a sent CDS."""
    store = Store(ConfigSnapshot({c.key: c for c in load("destination-rule-all.yaml")}, 1))
    server = DiscoveryServer(store, Registry(registry()), push_concurrency=2)
    conn = Connection("s", bare_sidecar(1), delta=False)
    server.connections[conn.conn_id] = conn
    eds_names = [f"outbound|9080|v1|{fqdn('reviews')}"]
    for type_url, names in ((CLUSTER_TYPE, []), (ENDPOINT_TYPE, eds_names), (LISTENER_TYPE, [])):
        await server.handle_request(
            conn, discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names)
        )
        sent = conn.outbox.get_nowait()
        ack = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=names, response_nonce=sent.nonce
        )
        await server.handle_request(conn, ack)
    limited = config(
        "DestinationRule",
        "reviews",
        {
            "host": "reviews",
            "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 7}}},
            "subsets": [{"name": f"v{i}", "labels": {"version": f"v{i}"}} for i in (1, 2, 3)],
        },
    )
    store.snap = store.snap.with_changes([limited], [])  # the reviews clusters change, not their endpoints
    server.push_context = server._build_push_context()
    await server.push_connection(conn, config_push([limited.key], 0.0))
    pushed = drain(conn)
    assert [r.type_url for r in pushed] == [CLUSTER_TYPE, ENDPOINT_TYPE]  # listeners unchanged: skipped
    assert resource_names_of(pushed[1]) == eds_names


def resource_names_of(response) -> list[str]:
    from envoy.config.endpoint.v3 import endpoint_pb2

    return [endpoint_pb2.ClusterLoadAssignment.FromString(a.value).cluster_name for a in response.resources]
