"""Proxyless gRPC clients (``proxy.type == GRPC``), as Istio's grpc generator serves them.

gRPC's xDS client asks LDS for exactly the target of ``xds:///<host>:<port>``. For every visible
service port there is a Listener named ``<fqdn>:<port>`` whose ``api_listener`` holds an
HttpConnectionManager with RDS route ``<fqdn>:<port>`` and the router as the last (only) HTTP filter.
A requested name that is a short or namespaced form (``reviews:9080``, ``reviews.default:9080``)
gets a Listener under that exact name, pointing at the same route configuration. Clusters are the
outbound EDS clusters; endpoints come with weighted localities (``endpoints``).
"""

from __future__ import annotations

from typing import Any

from pilot.model.proxy import Proxy
from pilot.networking.filters import ROUTER_FILTER
from pilot.networking.httproute import RouteContext, default_route, translate_http
from pilot.networking.index import Index, virtual_service_for_host, visible_services
from pilot.networking.protos import ADS, HCM, ROUTER, typed
from pilot.networking.routes import virtual_host_domains


def _targets(idx: Index, proxy: Proxy) -> dict[str, tuple[str, int]]:
    """Every listener name a client may ask for → (fqdn, port)."""
    out: dict[str, tuple[str, int]] = {}
    for svc in visible_services(idx, proxy):
        for p in svc.ports:
            for domain in virtual_host_domains(svc, p.number, proxy.namespace, idx.domain):
                if domain.endswith(f":{p.number}"):
                    out.setdefault(domain, (svc.hostname, p.number))
    return out


def _listener(name: str, route_name: str) -> dict[str, Any]:
    hcm = {
        "rds": {"config_source": dict(ADS), "route_config_name": route_name},
        "http_filters": [{"name": ROUTER_FILTER, "typed_config": typed(ROUTER)}],
    }
    return {"name": name, "api_listener": {"api_listener": typed(HCM, hcm)}}


def grpc_listeners(idx: Index, proxy: Proxy, names: set[str] | None) -> list[dict[str, Any]]:
    targets = _targets(idx, proxy)
    if names is None:
        wanted = sorted({f"{h}:{p}" for h, p in targets.values()})
    else:
        wanted = sorted(n for n in names if n in targets)
    return [_listener(n, "{}:{}".format(*targets[n])) for n in wanted]


def grpc_route_configs(idx: Index, proxy: Proxy, names: set[str] | None) -> list[dict[str, Any]]:
    out = []
    for svc in visible_services(idx, proxy):
        for p in svc.ports:
            name = f"{svc.hostname}:{p.number}"
            if names is not None and name not in names:
                continue
            ctx = RouteContext(idx, proxy, "mesh", p.number)
            bound = virtual_service_for_host(idx, svc.hostname, proxy.namespace)
            routes = translate_http(ctx, bound.config) if bound is not None else []
            if not routes:
                routes = [default_route(ctx, svc.hostname, p.number)]
            routes = [_grpc_route(r) for r in routes]
            out.append(
                {
                    "name": name,
                    "virtual_hosts": [
                        {
                            "name": name,
                            "domains": virtual_host_domains(svc, p.number, proxy.namespace, idx.domain),
                            "routes": routes,
                        }
                    ],
                }
            )
    return out


def _grpc_route(route: dict[str, Any]) -> dict[str, Any]:
    """gRPC ignores what it does not implement, but a retry policy with Envoy-only conditions is
    dropped here: gRPC retries on gRPC status codes, which Istio sets only when asked."""
    out = dict(route)
    action = dict(out.get("route") or {})
    if action:
        action.pop("retry_policy", None)
        if action.get("timeout") == "0s":
            action.pop("timeout")
        out["route"] = action
    return out
