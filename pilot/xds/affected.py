"""Which proxies a merged change touches (pure). A simple rule, documented here, refined later.

* An endpoint-only change (``full=False``) touches a proxy that watches an EDS cluster of a changed
  host (cluster names ``outbound|port|subset|host``), or that watches all EDS (wildcard).
* ServiceEntry and WorkloadEntry changes arrive as registry events (services changed: full push to
  proxies that can see those hosts; endpoints only: EDS), not as config changes.
* ``config_keys is None`` (unknown scope: start-up, mesh-wide change) touches everyone.
* A changed service in the registry touches a proxy that can see its host.
* A changed config touches a proxy when:
  - it is a ``Sidecar``: proxies in its namespace (in the root namespace: everyone);
  - it is a ``Gateway``: only gateways (``router`` proxies);
  - it lives in the root namespace: everyone;
  - otherwise when the proxy's Sidecar scope (``egress[].hosts`` of the namespace's Sidecar, else the
    root namespace's) lets it see that namespace; with no Sidecar everyone sees everything, as in Istio.
    A ServiceEntry is also checked host by host against the scope's ``ns/host`` patterns.
  Security kinds (PeerAuthentication, AuthorizationPolicy, RequestAuthentication) follow the same rule.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from pilot.model.config import Config, ConfigKey
from pilot.model.proxy import ROUTER, Proxy
from pilot.model.push_context import PushContext
from pilot.xds.debounce import PushRequest
from pilot.xds.resources import cluster_host


def egress_hosts(proxy: Proxy, push: PushContext) -> list[tuple[str, str]] | None:
    """The proxy's Sidecar egress scope as (namespace, host pattern) pairs; None = sees everything."""
    sidecar = _sidecar_for(proxy, push)
    if sidecar is None:
        return None
    pairs: list[tuple[str, str]] = []
    for egress in sidecar.spec.get("egress") or []:
        for entry in egress.get("hosts") or []:
            ns, _, host = str(entry).partition("/")
            if not host:  # a bare host is not valid Istio, but be lenient: any namespace
                ns, host = "*", ns
            pairs.append((proxy.namespace if ns == "." else ns, host))
    return pairs or None


def _sidecar_for(proxy: Proxy, push: PushContext) -> Config | None:
    labels = proxy.labels
    for namespace in (proxy.namespace, push.mesh.root_namespace):
        candidates = push.config.list("Sidecar", namespace)
        selected = [c for c in candidates if _selects(c, labels)]
        if selected:
            return selected[0]
        plain = [c for c in candidates if not (c.spec.get("workloadSelector") or {}).get("labels")]
        if plain:
            return plain[0]
    return None


def _selects(config: Config, labels: dict[str, str]) -> bool:
    wanted = (config.spec.get("workloadSelector") or {}).get("labels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def namespace_visible(scope: list[tuple[str, str]] | None, namespace: str) -> bool:
    return scope is None or any(ns in ("*", namespace) for ns, _ in scope)


def host_visible(scope: list[tuple[str, str]] | None, namespace: str, host: str) -> bool:
    if scope is None:
        return True
    return any(
        ns in ("*", namespace) and (pattern == "*" or fnmatchcase(host, pattern)) for ns, pattern in scope
    )


def config_affects(proxy: Proxy, push: PushContext, key: ConfigKey, scope) -> bool:
    if key.kind == "Sidecar":
        return key.namespace in (proxy.namespace, push.mesh.root_namespace)
    if key.kind == "Gateway":
        return proxy.type == ROUTER
    if key.namespace == push.mesh.root_namespace:
        return True
    if not namespace_visible(scope, key.namespace):
        return False
    if key.kind == "ServiceEntry":
        config = push.config.get(key.kind, key.namespace, key.name)
        if config is None:  # deleted: we no longer know its hosts
            return True
        hosts = config.spec.get("hosts") or []
        return any(host_visible(scope, key.namespace, h) for h in hosts) or not hosts
    return True


def service_affects(proxy: Proxy, push: PushContext, host: str, scope) -> bool:
    service = push.registry.service(host)
    if service is None:  # removed: assume it was visible
        return True
    return host_visible(scope, service.namespace, host)


FULL = "full"
EDS_ONLY = "eds"


def push_scope(
    proxy: Proxy, push: PushContext, request: PushRequest, eds_names: frozenset[str], eds_wildcard: bool
) -> str | None:
    """FULL (every watched type), EDS_ONLY, or None when the change does not touch this proxy."""
    if request.full:
        if request.config_keys is None:
            return FULL
        scope = egress_hosts(proxy, push)
        if any(config_affects(proxy, push, key, scope) for key in request.config_keys):
            return FULL
        if any(service_affects(proxy, push, host, scope) for host in request.services):
            return FULL
    if request.eds_hosts and (eds_wildcard or any(cluster_host(n) in request.eds_hosts for n in eds_names)):
        return EDS_ONLY
    return None
