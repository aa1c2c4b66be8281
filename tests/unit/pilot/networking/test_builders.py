"""What each proxy type gets, checked on the generated protos."""

from __future__ import annotations

from pilot.model.push_context import MeshConfig
from pilot.model.service import Endpoint, Port, RegistrySnapshot, Service
from pilot.networking import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    generate,
    translation_warnings,
)
from pilot.networking.protos import to_dict
from tests.unit.pilot.networking.bookinfo import config, fqdn, grpc_client, push, registry, router, sidecar


def by_name(msgs):
    return {getattr(m, "name", None) or m.cluster_name: to_dict(m) for m in msgs}


def test_sidecar_listeners_virtual_outbound_port_and_inbound():
    ls = by_name(generate(LISTENER_TYPE, sidecar("reviews", "v1", "127.0.0.12"), push()))
    assert set(ls) == {"virtualOutbound", "0.0.0.0_9080", "virtualInbound"}
    vo = ls["virtualOutbound"]
    assert vo["use_original_dst"] is True and vo["address"]["socket_address"]["port_value"] == 15001
    assert vo["filter_chains"][1]["filters"][0]["typed_config"]["cluster"] == "PassthroughCluster"
    out = ls["0.0.0.0_9080"]
    assert out["bind_to_port"] is False
    hcm = out["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == "9080"
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    vi = ls["virtualInbound"]
    chain = vi["filter_chains"][0]
    assert chain["filter_chain_match"]["destination_port"] == 9080
    route = chain["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["route"]["cluster"] == "inbound|9080||"


def test_inbound_cluster_points_at_the_workload_ip():
    cs = by_name(generate(CLUSTER_TYPE, sidecar("reviews", "v1", "127.0.0.12"), push()))
    ep = cs["inbound|9080||"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert ep["address"]["socket_address"] == {"address": "127.0.0.12", "port_value": 9080}
    assert {
        "BlackHoleCluster",
        "PassthroughCluster",
        "outbound|9080||reviews.default.svc.cluster.local",
    } <= set(cs)


def test_interception_none_binds_the_workload_ip():
    ls = by_name(generate(LISTENER_TYPE, sidecar(INTERCEPTION_MODE="NONE"), push()))
    assert ls["virtualOutbound"]["address"]["socket_address"]["address"] == "127.0.0.10"
    assert "127.0.0.10_9080" in ls


def test_registry_only_blackholes_unknown_destinations():
    p = push(mesh=MeshConfig(outbound_traffic_policy="REGISTRY_ONLY"))
    ls = by_name(generate(LISTENER_TYPE, sidecar(), p))
    assert (
        ls["virtualOutbound"]["filter_chains"][1]["filters"][0]["typed_config"]["cluster"]
        == "BlackHoleCluster"
    )
    (rc,) = generate(ROUTE_TYPE, sidecar(), p)
    assert to_dict(rc)["virtual_hosts"][-1]["name"] == "block_all"


def test_sidecar_resource_scopes_services_and_policy():
    sc = config(
        "Sidecar",
        "default",
        {
            "egress": [{"hosts": ["./reviews.default.svc.cluster.local"]}],
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
        },
    )
    p = push(configs=[sc])
    names = {c.name for c in generate(CLUSTER_TYPE, sidecar(), p)}
    assert "outbound|9080||reviews.default.svc.cluster.local" in names
    assert not any("ratings" in n or "details" in n for n in names)
    (rc,) = generate(ROUTE_TYPE, sidecar(), p)
    assert [vh.name for vh in rc.virtual_hosts] == ["reviews.default.svc.cluster.local:9080", "block_all"]


def test_short_names_only_for_the_same_namespace():
    other = sidecar()
    other.namespace = "other"
    (rc,) = generate(ROUTE_TYPE, other, push())
    domains = {d for vh in rc.virtual_hosts for d in vh.domains}
    assert "reviews.default:9080" in domains and "reviews" not in domains


def test_source_labels_apply_only_to_matching_proxies():
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

    def ratings_clusters(proxy):
        (rc,) = generate(ROUTE_TYPE, proxy, p, {"9080"})
        vh = next(v for v in rc.virtual_hosts if v.name.startswith("ratings."))
        return [r.route.cluster for r in vh.routes]

    assert ratings_clusters(sidecar("reviews", "v2", "127.0.0.13")) == [
        "outbound|9080|v2|ratings.default.svc.cluster.local",
        "outbound|9080|v1|ratings.default.svc.cluster.local",
    ]
    assert ratings_clusters(sidecar("reviews", "v3", "127.0.0.14")) == [
        "outbound|9080|v1|ratings.default.svc.cluster.local"
    ]


def test_subset_endpoints_and_weighted_localities():
    reg = registry()
    eps = list(reg.endpoints)
    eps[2] = Endpoint(
        eps[2].service, 9080, eps[2].address, 9080, labels=eps[2].labels, locality="eu/zone-a", weight=3
    )
    p = push("destination-rule-all.yaml", reg=RegistrySnapshot(reg.services, tuple(eps), 2))
    got = by_name(
        generate(
            ENDPOINT_TYPE,
            sidecar(),
            p,
            {
                "outbound|9080|v1|reviews.default.svc.cluster.local",
                "outbound|9080||reviews.default.svc.cluster.local",
                "outbound|9080|nope|reviews.default.svc.cluster.local",
            },
        )
    )
    assert set(got) == {
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "outbound|9080||reviews.default.svc.cluster.local",
    }
    v1 = got["outbound|9080|v1|reviews.default.svc.cluster.local"]["endpoints"]
    assert v1 == [
        {
            "locality": {"region": "eu", "zone": "zone-a"},
            "load_balancing_weight": 3,
            "lb_endpoints": [
                {
                    "endpoint": {
                        "address": {"socket_address": {"address": "127.0.0.12", "port_value": 9080}}
                    },
                    "health_status": "HEALTHY",
                    "load_balancing_weight": 3,
                    "metadata": {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}},
                }
            ],
        }
    ]
    all_eps = got["outbound|9080||reviews.default.svc.cluster.local"]["endpoints"]
    assert all(g["load_balancing_weight"] >= 1 for g in all_eps)
    assert sum(len(g["lb_endpoints"]) for g in all_eps) == 3


def test_gateway_listener_and_routes_from_bound_virtual_service():
    p = push("bookinfo-gateway.yaml")
    ls = by_name(generate(LISTENER_TYPE, router(), p))
    assert set(ls) == {"0.0.0.0_8080"}
    assert (
        ls["0.0.0.0_8080"]["filter_chains"][0]["filters"][0]["typed_config"]["rds"]["route_config_name"]
        == "http.8080"
    )
    (rc,) = generate(ROUTE_TYPE, router(), p)
    (vh,) = rc.virtual_hosts
    assert list(vh.domains) == ["*"]
    assert [r.match.path or r.match.prefix for r in vh.routes] == [
        "/productpage",
        "/static",
        "/login",
        "/logout",
        "/api/v1/products",
    ]
    assert {r.route.cluster for r in vh.routes} == {"outbound|9080||productpage.default.svc.cluster.local"}
    # A sidecar is not bound to the gateway: its productpage host keeps the default route.
    (src,) = generate(ROUTE_TYPE, sidecar(), p)
    pp = next(v for v in src.virtual_hosts if v.name.startswith("productpage."))
    assert [r.name for r in pp.routes] == ["default"]


def test_gateway_selector_must_match_router_labels():
    p = push("bookinfo-gateway.yaml")
    other = router()
    other.metadata["LABELS"] = {"istio": "egressgateway"}
    assert generate(LISTENER_TYPE, other, p) == []


def test_grpc_client_gets_api_listener_named_after_target():
    svc = Service("echo.default.svc.cluster.local", "default", (Port("grpc", 7070, "GRPC"),))
    eps = (Endpoint(svc.hostname, 7070, "127.0.0.21", 17070, labels={"app": "echo"}),)
    p = push(reg=RegistrySnapshot((svc,), eps, 1))
    client = grpc_client()
    (lst,) = generate(LISTENER_TYPE, client, p, {"echo:7070"})
    assert lst.name == "echo:7070"
    d = to_dict(lst)["api_listener"]["api_listener"]
    assert d["rds"]["route_config_name"] == "echo.default.svc.cluster.local:7070"
    assert d["http_filters"][-1]["name"] == "envoy.filters.http.router"
    (rc,) = generate(ROUTE_TYPE, client, p, {"echo.default.svc.cluster.local:7070"})
    assert rc.virtual_hosts[0].routes[0].route.cluster == "outbound|7070||echo.default.svc.cluster.local"
    (cla,) = generate(ENDPOINT_TYPE, client, p)
    assert cla.endpoints[0].load_balancing_weight.value == 1
    assert cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 17070


def test_consistent_hash_becomes_ring_hash_and_route_hash_policy():
    dr = config(
        "DestinationRule",
        "reviews",
        {
            "host": "reviews",
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "end-user"}}},
        },
    )
    p = push(configs=[dr])
    cs = by_name(generate(CLUSTER_TYPE, sidecar(), p))
    assert cs["outbound|9080||reviews.default.svc.cluster.local"]["lb_policy"] == "RING_HASH"
    (rc,) = generate(ROUTE_TYPE, sidecar(), p)
    vh = next(v for v in rc.virtual_hosts if v.name.startswith("reviews."))
    assert vh.routes[0].route.hash_policy[0].header.header_name == "end-user"


def test_unsupported_policy_fields_are_reported_not_emitted():
    dr = config(
        "DestinationRule",
        "reviews",
        {
            "host": "reviews",
            "trafficPolicy": {
                "outlierDetection": {"consecutive5xxErrors": 1},
                "tls": {"mode": "ISTIO_MUTUAL", "credentialName": "reviews-cert"},
            },
        },
    )
    p = push(configs=[dr])
    warnings = translation_warnings(p)
    assert any("DestinationRule/default/reviews: trafficPolicy.outlierDetection" in w for w in warnings)
    assert any("trafficPolicy.tls.credentialName: not supported" in w for w in warnings)
    c = by_name(generate(CLUSTER_TYPE, sidecar(), p))["outbound|9080||reviews.default.svc.cluster.local"]
    assert "outlier_detection" not in c
    assert c["transport_socket"]["name"] == "envoy.transport_sockets.tls"  # tls is translated since issue 6


def test_dns_service_entry_becomes_strict_dns_cluster():
    svc = Service("www.example.com", "default", (Port("http", 80, "HTTP"),), "DNS", True)
    eps = (Endpoint("www.example.com", 80, "www.example.com", 80),)
    p = push(reg=RegistrySnapshot((*registry().services, svc), (*registry().endpoints, *eps), 1))
    c = by_name(generate(CLUSTER_TYPE, sidecar(), p))["outbound|80||www.example.com"]
    assert c["type"] == "STRICT_DNS"
    assert (
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
            "address"
        ]
        == "www.example.com"
    )
    assert fqdn("reviews") in {s.hostname for s in p.registry.services}
