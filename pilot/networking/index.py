"""Per-push indexes (computed once per PushContext, kept in ``push.indexes``) and per-proxy scoping.

* services by host name, endpoints by (host, service port);
* VirtualServices by gateway (``mesh`` or ``<ns>/<gateway name>``) with their hosts resolved to FQDNs;
* DestinationRules by (namespace, host); Gateways; Sidecars by namespace;
* PeerAuthentications and AuthorizationPolicies by namespace (``mtls``, ``authz``).

Scoping follows Istio: a proxy sees the services exported to its namespace (``exportTo``), narrowed by
the Sidecar resource that applies to it (workloadSelector match in its namespace, else the namespace's
selector-less Sidecar, else the root namespace's); ``egress[].hosts`` entries are ``<ns>/<host>``
with ``*`` (any namespace), ``.`` (the proxy's namespace) and ``~`` (none), and host wildcards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pilot.model.config import Config
from pilot.model.proxy import Proxy
from pilot.model.push_context import PushContext
from pilot.model.service import Endpoint, Service
from pilot.networking.names import MESH_GATEWAY
from pilot.serviceregistry.names import host_matches, resolve_short_name

INDEX_KEY = "networking"


@dataclass
class BoundVirtualService:
    config: Config
    hosts: list[str]  # resolved (FQDN or wildcard)


@dataclass
class Index:
    domain: str
    root_namespace: str
    services: dict[str, Service] = field(default_factory=dict)
    endpoints: dict[tuple[str, int], list[Endpoint]] = field(default_factory=dict)
    virtual_services: dict[str, list[BoundVirtualService]] = field(default_factory=dict)
    destination_rules: dict[tuple[str, str], Config] = field(default_factory=dict)
    gateways: list[Config] = field(default_factory=list)
    sidecars: dict[str, list[Config]] = field(default_factory=dict)
    trust_domain: str = "cluster.local"
    # security.istio.io, by namespace (each list sorted by name, as ConfigSnapshot.list gives them)
    peer_authentications: dict[str, list[Config]] = field(default_factory=dict)
    authorization_policies: dict[str, list[Config]] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)  # per-push memo (e.g. per-scope services)

    def resolve(self, host: str, namespace: str) -> str:
        return resolve_short_name(host, namespace, self.domain)


def gateway_key(name: str, namespace: str) -> str:
    """``mesh`` stays; ``gw`` -> ``<ns>/gw``; ``ns/gw`` as written."""
    if name == MESH_GATEWAY or "/" in name:
        return name
    return f"{namespace}/{name}"


def build_index(push: PushContext) -> Index:
    idx = Index(push.mesh.domain, push.mesh.root_namespace, trust_domain=push.mesh.trust_domain)
    for s in push.registry.services:
        idx.services.setdefault(s.hostname, s)
    for e in push.registry.endpoints:
        idx.endpoints.setdefault((e.service, e.service_port), []).append(e)
    for vs in push.config.list("VirtualService"):
        hosts = [idx.resolve(str(h), vs.namespace) for h in vs.spec.get("hosts") or []]
        for gw in vs.spec.get("gateways") or [MESH_GATEWAY]:
            idx.virtual_services.setdefault(gateway_key(str(gw), vs.namespace), []).append(
                BoundVirtualService(vs, hosts)
            )
    for dr in push.config.list("DestinationRule"):
        host = idx.resolve(str(dr.spec.get("host") or ""), dr.namespace)
        idx.destination_rules.setdefault((dr.namespace, host), dr)
    idx.gateways = push.config.list("Gateway")
    for sc in push.config.list("Sidecar"):
        idx.sidecars.setdefault(sc.namespace, []).append(sc)
    for pa in push.config.list("PeerAuthentication"):
        idx.peer_authentications.setdefault(pa.namespace, []).append(pa)
    for ap in push.config.list("AuthorizationPolicy"):
        idx.authorization_policies.setdefault(ap.namespace, []).append(ap)
    return idx


def index_of(push: PushContext) -> Index:
    idx = push.indexes.get(INDEX_KEY)
    if idx is None:
        idx = push.indexes[INDEX_KEY] = build_index(push)
    return idx


def _exported_to(export_to, from_ns: str, to_ns: str) -> bool:
    for e in export_to or ("*",):
        if e == "*" or e == to_ns or (e == "." and from_ns == to_ns):
            return True
    return False


def labels_match(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def sidecar_for(idx: Index, proxy: Proxy) -> Config | None:
    """The Sidecar resource that applies to the proxy (Istio's precedence)."""
    own = idx.sidecars.get(proxy.namespace, [])
    for sc in own:
        sel = (sc.spec.get("workloadSelector") or {}).get("labels")
        if sel and labels_match(sel, proxy.labels):
            return sc
    for sc in own:
        if not (sc.spec.get("workloadSelector") or {}).get("labels"):
            return sc
    for sc in idx.sidecars.get(idx.root_namespace, []):
        if not (sc.spec.get("workloadSelector") or {}).get("labels"):
            return sc
    return None


def _egress_allows(egress: list[dict[str, Any]], proxy_ns: str, svc: Service, port: int | None) -> bool:
    for eg in egress:
        eport = (eg.get("port") or {}).get("number")
        if eport and port is not None and int(eport) != port:
            continue
        for entry in eg.get("hosts") or []:
            ns, _, host = str(entry).partition("/")
            if not host:
                continue
            if ns == "~":
                continue
            if ns == ".":
                ns = proxy_ns
            if ns != "*" and ns != svc.namespace:
                continue
            if host_matches(host, svc.hostname):
                return True
    return False


def visible_services(idx: Index, proxy: Proxy) -> list[Service]:
    """The services this proxy may reach, sorted by host name."""
    sc = sidecar_for(idx, proxy)
    key = ("visible", proxy.namespace, sc.key if sc else None)
    cached = idx.cache.get(key)
    if cached is not None:
        return cached
    out = []
    egress = (sc.spec.get("egress") or []) if sc else []
    for host in sorted(idx.services):
        svc = idx.services[host]
        if not _exported_to(svc.export_to, svc.namespace, proxy.namespace):
            continue
        if egress and not _egress_allows(egress, proxy.namespace, svc, None):
            continue
        out.append(svc)
    idx.cache[key] = out
    return out


def outbound_traffic_policy(idx: Index, proxy: Proxy, mesh_default: str) -> str:
    sc = sidecar_for(idx, proxy)
    if sc is not None:
        mode = (sc.spec.get("outboundTrafficPolicy") or {}).get("mode")
        if mode:
            return str(mode).upper()
    return mesh_default.upper()


def destination_rule(idx: Index, proxy_namespace: str, host: str) -> Config | None:
    """Istio's lookup: the proxy's namespace, then the service's namespace, then the root namespace;
    an exact host before the most specific wildcard."""
    svc = idx.services.get(host)
    order = [proxy_namespace]
    if svc is not None:
        order.append(svc.namespace)
    order.append(idx.root_namespace)
    for ns in order:
        dr = idx.destination_rules.get((ns, host))
        if dr is not None and _exported_to(dr.spec.get("exportTo"), ns, proxy_namespace):
            return dr
    best: tuple[int, Config] | None = None
    for (ns, pattern), dr in idx.destination_rules.items():
        if ns in order and pattern.startswith("*") and host_matches(pattern, host):
            if _exported_to(dr.spec.get("exportTo"), ns, proxy_namespace) and (
                best is None or len(pattern) > best[0]
            ):
                best = (len(pattern), dr)
    return best[1] if best else None


def virtual_services_for(idx: Index, gateway: str, proxy_namespace: str) -> list[BoundVirtualService]:
    return [
        b
        for b in idx.virtual_services.get(gateway, [])
        if _exported_to(b.config.spec.get("exportTo"), b.config.namespace, proxy_namespace)
        or gateway != MESH_GATEWAY
    ]


def virtual_service_for_host(idx: Index, host: str, proxy_namespace: str) -> BoundVirtualService | None:
    """The mesh VirtualService for a service host: an exact host first, then the longest wildcard."""
    candidates = virtual_services_for(idx, MESH_GATEWAY, proxy_namespace)
    for b in candidates:
        if host in b.hosts:
            return b
    best = None
    for b in candidates:
        for h in b.hosts:
            if h.startswith("*") and host_matches(h, host) and (best is None or len(h) > best[0]):
                best = (len(h), b)
    return best[1] if best else None
