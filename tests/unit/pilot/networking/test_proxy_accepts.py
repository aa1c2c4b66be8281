"""Every resource the builders generate is accepted by the real consumer: our own proxy's config
compilers (routes, clusters, listeners with their filters, endpoint assignments)."""

from __future__ import annotations

import pytest

from pilot.networking import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, generate
from pilot.networking.protos import cluster as parse_cluster
from proxy.config.context import FactoryContext
from proxy.config.registry import load_builtin_extensions
from proxy.config.supported import reject_unsupported
from proxy.core.listener import Listener
from proxy.filters.network.http_connection_manager.config import SwappableRouteProvider
from proxy.router import compile_route_configuration
from proxy.stats.store import Store
from proxy.tls.secrets import SecretManager
from proxy.upstream.cluster import CLA_SPEC, build_cluster, parse_assignment
from proxy.upstream.config import _ENDPOINTS
from tests.unit.pilot.networking.bookinfo import SAMPLES, config, grpc_client, push, router, sidecar

load_builtin_extensions()

# Files that need something other than Bookinfo's own services are applied too (the builders must
# still produce acceptable config); certmanager-gateway lives in istio-system.
SAMPLE_FILES = sorted(p.name for p in SAMPLES.glob("*.yaml") if p.name != "destination-rule-all-mtls.yaml")


class _NoSdsStream:
    """The SDS client a SecretManager would start: these tests only compile config, no stream runs."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def secret_manager() -> SecretManager:
    """What a sidecar bootstrap gives the proxy: the ``sds-grpc`` cluster on the agent's Unix socket."""
    sds_grpc = parse_cluster(
        {
            "name": "sds-grpc",
            "type": "STATIC",
            "load_assignment": {
                "cluster_name": "sds-grpc",
                "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": "/tmp/isthmus-sds.sock"}}}}]}
                ],
            },
        }
    )
    return SecretManager((), [sds_grpc], client_factory=_NoSdsStream)


def ctx() -> FactoryContext:
    return FactoryContext(
        stats=Store(),
        extra={
            "rds_provider_factory": lambda rds, path, *rest: SwappableRouteProvider(rds.route_config_name),
            "secret_manager": secret_manager(),
        },
    )


def check_all(proxy, p, *, listeners=True):
    for rc in generate(ROUTE_TYPE, proxy, p):
        compile_route_configuration(rc, f"route[{rc.name}]")
    c = ctx()
    for cluster in generate(CLUSTER_TYPE, proxy, p):
        build_cluster(cluster, c, f"cluster[{cluster.name}]")
    for cla in generate(ENDPOINT_TYPE, proxy, p):
        reject_unsupported(cla, {**CLA_SPEC, "endpoints": _ENDPOINTS}, f"cla[{cla.cluster_name}]")
        parse_assignment(cla, f"cla[{cla.cluster_name}]")
    if listeners:
        for lst in generate(LISTENER_TYPE, proxy, p):
            Listener(lst, c, f"listener[{lst.name}]")


@pytest.mark.parametrize("sample", SAMPLE_FILES)
def test_sidecar_config_for_every_sample_is_accepted(sample):
    p = push("destination-rule-all.yaml", sample)
    check_all(sidecar("productpage", "v1", "127.0.0.10"), p)
    check_all(sidecar("reviews", "v2", "127.0.0.13"), p)


def test_gateway_config_is_accepted():
    p = push("destination-rule-all.yaml", "bookinfo-gateway.yaml", "certmanager-gateway.yaml")
    check_all(router(), p)


def test_grpc_client_routes_clusters_and_endpoints_are_accepted():
    # (its api_listeners are for gRPC's xDS client, not for the proxy)
    p = push("destination-rule-all.yaml", "virtual-service-reviews-50-v3.yaml")
    check_all(grpc_client(), p, listeners=False)


def test_traffic_policies_and_rich_routes_are_accepted():
    dr = config(
        "DestinationRule",
        "reviews",
        {
            "host": "reviews",
            "trafficPolicy": {
                "loadBalancer": {"consistentHash": {"httpCookie": {"name": "user", "ttl": "0s"}}},
                "connectionPool": {
                    "tcp": {"maxConnections": 10, "connectTimeout": "2s"},
                    "http": {
                        "http1MaxPendingRequests": 5,
                        "maxRequestsPerConnection": 3,
                        "idleTimeout": "30s",
                    },
                },
                "outlierDetection": {"consecutive5xxErrors": 3},
                "tls": {"mode": "ISTIO_MUTUAL"},
                "portLevelSettings": [{"port": {"number": 9080}, "loadBalancer": {"simple": "RANDOM"}}],
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {
                    "name": "v2",
                    "labels": {"version": "v2"},
                    "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
                },
                {
                    "name": "v3",
                    "labels": {"version": "v3"},
                    "trafficPolicy": {"loadBalancer": {"consistentHash": {"useSourceIp": True}}},
                },
            ],
        },
    )
    vs = config(
        "VirtualService",
        "reviews",
        {
            "hosts": ["reviews"],
            "http": [
                {
                    "match": [
                        {
                            "uri": {"regex": "/reviews/[0-9]+"},
                            "ignoreUriCase": True,
                            "method": {"exact": "GET"},
                            "queryParams": {"debug": {"exact": "1"}},
                            "withoutHeaders": {"x-skip": {}},
                        }
                    ],
                    "route": [{"destination": {"host": "reviews", "subset": "v3"}}],
                    "timeout": "2.5s",
                    "retries": {
                        "attempts": 3,
                        "perTryTimeout": "1s",
                        "retryOn": "5xx,reset,503,refused-stream",
                    },
                    "mirror": {"host": "reviews", "subset": "v1"},
                    "mirrorPercentage": {"value": 25.0},
                    "headers": {"request": {"set": {"x-a": "1"}, "add": {"x-b": "2"}, "remove": ["x-c"]}},
                    "rewrite": {"uri": "/v3/", "authority": "reviews-v3"},
                },
                {"match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new", "redirectCode": 302}},
                {
                    "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 12.5}}},
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                        {
                            "destination": {"host": "reviews", "subset": "v2"},
                            "weight": 10,
                            "headers": {"response": {"set": {"x-v": "2"}}},
                        },
                    ],
                },
            ],
        },
    )
    check_all(sidecar(), push(configs=[dr, vs]))


SEC = "security.istio.io"
EVERY_RULE_KIND = {
    "from": [
        {
            "source": {
                "principals": [
                    "cluster.local/ns/default/sa/bookinfo-productpage",
                    "*/sa/x",
                    "cluster.local/*",
                ],
                "notPrincipals": ["*"],
                "namespaces": ["default", "test-*"],
                "notNamespaces": ["other"],
                "ipBlocks": ["127.0.0.0/8", "10.1.2.3"],
                "notIpBlocks": ["127.0.0.99"],
                "remoteIpBlocks": ["192.0.2.0/24"],
                "notRemoteIpBlocks": ["192.0.2.7"],
                "serviceAccounts": ["default/bookinfo-productpage"],
            }
        }
    ],
    "to": [
        {
            "operation": {
                "hosts": ["reviews", "*.example.com"],
                "notHosts": ["evil.example.com"],
                "ports": ["9080"],
                "notPorts": ["9443"],
                "methods": ["GET", "HEAD"],
                "notMethods": ["DELETE"],
                "paths": ["/exact", "/admin*", "*.html", "*"],
                "notPaths": ["/private*"],
            }
        }
    ],
    "when": [
        {"key": "request.headers[end-user]", "values": ["jason", "*"], "notValues": ["bob"]},
        {"key": "source.ip", "values": ["127.0.0.1"]},
        {"key": "remote.ip", "notValues": ["192.0.2.1"]},
        {"key": "source.principal", "values": ["cluster.local/ns/default/sa/bookinfo-productpage"]},
        {"key": "source.namespace", "values": ["default"]},
        {"key": "destination.port", "values": ["9080"]},
        {"key": "destination.ip", "values": ["127.0.0.12"]},
        {"key": "connection.sni", "values": ["outbound_.9080_._.reviews.default.svc.cluster.local"]},
    ],
}


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_security_config_for_every_mtls_mode_and_rule_kind_is_accepted(mode):
    """Inbound mTLS chains (DownstreamTlsContext over SDS), HCM XFCC and path normalization, HTTP and
    network RBAC with every rule kind, and ISTIO_MUTUAL clusters, for an HTTP and a TCP workload."""
    from pilot.model.service import Endpoint, Port, RegistrySnapshot, Service
    from tests.unit.pilot.networking.bookinfo import fqdn, registry

    db = Service(fqdn("mongodb"), "default", (Port("tcp", 27017, "TCP"),))
    ep = Endpoint(
        fqdn("mongodb"), 27017, "127.0.0.16", 27017, labels={"app": "mongodb"}, service_account="mongo"
    )
    reg = RegistrySnapshot((*registry().services, db), (*registry().endpoints, ep), 2)
    configs = [
        config("PeerAuthentication", "default", {"mtls": {"mode": mode}}, "istio-system", SEC),
        config(
            "PeerAuthentication",
            "reviews",
            {"selector": {"matchLabels": {"app": "reviews"}}, "portLevelMtls": {"9080": {"mode": "STRICT"}}},
            "default",
            SEC,
        ),
        config("AuthorizationPolicy", "deny", {"action": "DENY", "rules": [EVERY_RULE_KIND]}, "default", SEC),
        config("AuthorizationPolicy", "allow", {"rules": [EVERY_RULE_KIND, {}]}, "default", SEC),
        config(
            "AuthorizationPolicy", "audit", {"action": "AUDIT", "rules": [EVERY_RULE_KIND]}, "default", SEC
        ),
        config("AuthorizationPolicy", "nothing", {}, "istio-system", SEC),
    ]
    p = push("destination-rule-all.yaml", configs=configs, reg=reg)
    check_all(sidecar("reviews", "v1", "127.0.0.12"), p)
    check_all(sidecar("mongodb", "v1", "127.0.0.16"), p)
    check_all(sidecar("productpage", "v1", "127.0.0.10"), p)


def test_destination_rule_tls_modes_are_accepted():
    # (MUTUAL reads the client certificate files when the proxy compiles it: covered in test_security)
    for tls in (
        {"mode": "DISABLE"},
        {"mode": "ISTIO_MUTUAL", "subjectAltNames": ["spiffe://cluster.local/ns/default/sa/reviews"]},
        {"mode": "SIMPLE", "sni": "reviews.example", "subjectAltNames": ["reviews.example"]},
    ):
        dr = config("DestinationRule", "reviews", {"host": "reviews", "trafficPolicy": {"tls": tls}})
        c = ctx()
        for cluster in generate(CLUSTER_TYPE, sidecar(), push(configs=[dr])):
            build_cluster(cluster, c, f"cluster[{cluster.name}]")
