"""RouteConfigurations (RDS), per proxy type.

* Sidecar: one RouteConfiguration per outbound HTTP port, named ``"<port>"`` (Istio's name). Each
  visible service with an HTTP port of that number gets a virtual host ``<fqdn>:<port>`` whose domains
  are every name a client may use (Istio's generateVirtualHostDomains): the FQDN, ``name.ns.svc``,
  ``name.ns``, the short ``name`` (only for proxies in the service's namespace) and the VIPs, each with
  and without ``:<port>``. Its routes come from the service's mesh VirtualService, else the default
  route. A last virtual host ``allow_any`` (domains ``*``) sends unknown hosts to the
  PassthroughCluster (ALLOW_ANY), or ``block_all`` answers 502 (REGISTRY_ONLY).
* Sidecar in local mode (``INTERCEPTION_MODE: NONE``): also ``http_proxy`` (Istio's RDSHttpProxy) for the
  HTTP proxy listener on ``<ip>:15001``: the virtual hosts of every visible service on every HTTP port,
  with the ``host:port`` domains an absolute-form request carries (and the bare names for port 80, which
  a URL leaves out), then the catch-all.
* Router: ``http.<port>`` per gateway server port (see ``gateway``).
* gRPC: ``<host>:<port>`` per service (see ``grpc``).
"""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_pb2

from pilot.model.proxy import GRPC, ROUTER, Proxy
from pilot.model.push_context import PushContext
from pilot.model.service import Service
from pilot.networking import protos
from pilot.networking.httproute import RouteContext, default_route, translate_http
from pilot.networking.index import (
    Index,
    index_of,
    outbound_traffic_policy,
    virtual_service_for_host,
    visible_services,
)
from pilot.networking.names import MESH_GATEWAY, PASSTHROUGH_CLUSTER
from pilot.networking.postprocess import finish_routes
from pilot.serviceregistry.names import is_http

HTTP_PROXY_ROUTE = "http_proxy"


def virtual_host_domains(svc: Service, port: int, proxy_namespace: str, domain: str) -> list[str]:
    host = svc.hostname
    names = [host]
    suffix = f".{svc.namespace}.svc.{domain}"
    if host.endswith(suffix):
        short = host[: -len(suffix)]
        names += [f"{short}.{svc.namespace}.svc", f"{short}.{svc.namespace}"]
        if proxy_namespace == svc.namespace:
            names.insert(1, short)
    names += list(svc.addresses)
    out = []
    for n in names:
        out += [n, f"{n}:{port}"]
    return out


def http_ports(services: list[Service]) -> list[int]:
    return sorted({p.number for s in services for p in s.ports if is_http(p.protocol)})


def service_virtual_host(
    idx: Index, proxy: Proxy, svc: Service, port: int, gateway: str = MESH_GATEWAY
) -> dict:
    ctx = RouteContext(idx, proxy, gateway, port)
    bound = virtual_service_for_host(idx, svc.hostname, proxy.namespace)
    routes = translate_http(ctx, bound.config) if bound is not None else []
    if bound is None or not routes:
        routes = [default_route(ctx, svc.hostname, port)]
    return {
        "name": f"{svc.hostname}:{port}",
        "domains": virtual_host_domains(svc, port, proxy.namespace, idx.domain),
        "routes": routes,
        "include_request_attempt_count": True,
    }


def catch_all_virtual_host(policy: str) -> dict[str, Any]:
    if policy == "REGISTRY_ONLY":
        return {
            "name": "block_all",
            "domains": ["*"],
            "routes": [{"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}],
            "include_request_attempt_count": True,
        }
    return {
        "name": "allow_any",
        "domains": ["*"],
        "routes": [
            {
                "name": "allow_any",
                "match": {"prefix": "/"},
                "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s"},
            }
        ],
        "include_request_attempt_count": True,
    }


def sidecar_route_config(idx: Index, push: PushContext, proxy: Proxy, port: int) -> dict[str, Any]:
    vhosts = []
    seen: set[str] = set()
    for svc in visible_services(idx, proxy):
        if not any(p.number == port and is_http(p.protocol) for p in svc.ports):
            continue
        vh = service_virtual_host(idx, proxy, svc, port)
        vh["domains"] = [d for d in vh["domains"] if not (d in seen or seen.add(d))]
        vhosts.append(vh)
    vhosts.append(
        catch_all_virtual_host(outbound_traffic_policy(idx, proxy, push.mesh.outbound_traffic_policy))
    )
    return {"name": str(port), "virtual_hosts": vhosts, "validate_clusters": False}


def http_proxy_route_config(idx: Index, push: PushContext, proxy: Proxy) -> dict[str, Any]:
    vhosts = []
    seen: set[str] = set()
    for svc in visible_services(idx, proxy):
        for p in svc.ports:
            if not is_http(p.protocol):
                continue
            vh = service_virtual_host(idx, proxy, svc, p.number)
            keep = [d for d in vh["domains"] if d.endswith(f":{p.number}") or p.number == 80]
            vh["domains"] = [d for d in keep if not (d in seen or seen.add(d))]
            if vh["domains"]:
                vhosts.append(vh)
    vhosts.append(
        catch_all_virtual_host(outbound_traffic_policy(idx, proxy, push.mesh.outbound_traffic_policy))
    )
    return {"name": HTTP_PROXY_ROUTE, "virtual_hosts": vhosts, "validate_clusters": False}


def build_routes(
    proxy: Proxy, push: PushContext, names: set[str] | None = None
) -> list[route_pb2.RouteConfiguration]:
    idx = index_of(push)
    if proxy.type == ROUTER:
        from pilot.networking.gateway import gateway_route_configs

        configs = gateway_route_configs(idx, proxy, names)
    elif proxy.type == GRPC:
        from pilot.networking.grpc import grpc_route_configs

        configs = grpc_route_configs(idx, proxy, names)
    else:
        wanted = http_ports(visible_services(idx, proxy))
        configs = [
            sidecar_route_config(idx, push, proxy, p) for p in wanted if names is None or str(p) in names
        ]
        from pilot.networking.listeners import interception_none

        if interception_none(proxy) and (names is None or HTTP_PROXY_ROUTE in names):
            configs.append(http_proxy_route_config(idx, push, proxy))
    configs = finish_routes(configs, proxy, push)  # EnvoyFilter patches
    return [protos.route_configuration(c) for c in configs]
