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
