"""Mesh extension providers wired into the generated resources, as Istio wires telemetry and CUSTOM
authorization (pure; applied by ``generate`` after the per-type builders, before EnvoyFilter patches).

* **Telemetry** (``MeshConfig.default_access_logging``): every HCM of a sidecar or gateway gets an
  ``envoy.access_loggers.http_grpc`` logger per ``envoyHttpAls`` provider and, first in its HTTP
  filters, ``istio.metadata_exchange`` (``io.istio.http.peer_metadata.Config`` with ``istio_headers``:
  inbound discovers the caller and answers with our metadata; outbound and gateways propagate ours
  upstream, not to clusters outside the mesh, and discover the callee); every ``tcp_proxy`` gets a
  ``envoy.access_loggers.tcp_grpc`` logger per ``envoyTcpAls`` provider. The node metadata in the
  entries is the proxy's own bootstrap node (the agent sets NAMESPACE, LABELS, WORKLOAD_NAME,
  SERVICE_ACCOUNT); pilot sends nothing per workload.
* **CUSTOM authorization**: an AuthorizationPolicy ``action: CUSTOM`` selecting the workload, whose
  ``provider.name`` is an ``envoyExtAuthzGrpc`` provider, puts ``envoy.filters.http.ext_authz`` into
  the inbound HCMs (gateways: every HCM) before the RBAC filters (Istio's order CUSTOM, DENY, ALLOW):
  ``failOpen`` → ``failure_mode_allow``, ``timeout`` → the gRPC timeout, ``statusOnError``. Scope:
  Istio checks only the requests the rules match (a shadow RBAC filter + dynamic metadata, which the
  Isthmus proxy does not have). Isthmus scopes by route instead, on sidecars: when every rule uses only
  ``to.operation.paths``/``methods``, the inbound route config gets a copy of its catch-all route per
  (path, method) of the rules, first, and the catch-all itself gets ``ExtAuthzPerRoute{disabled: true}``.
  A rule that matches everything, or uses anything else (sources, ``when``, hosts, ports, ``not*``),
  and every gateway (routes from RDS): the whole workload is checked (reported). A policy without rules
  matches nothing (Istio) → no check.
* **Provider clusters**: each provider in use is reached through ``outbound|<port>||<service>``. A
  service in the registry keeps the cluster the registry gives it (EDS); otherwise pilot emits a STATIC
  cluster on the address given for the host (``--mixer-address``), or the host itself when it is an IP,
  or a STRICT_DNS cluster on the host name.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pilot.model.mesh import EXT_AUTHZ_GRPC, HTTP_ALS, TCP_ALS, ExtensionProvider, MeshConfig
from pilot.model.proxy import GRPC, ROUTER, Proxy
from pilot.model.push_context import PushContext
from pilot.networking.authz import HTTP_RBAC_FILTER, policies_for
from pilot.networking.filters import HCM_NAME, TCP_PROXY_NAME
from pilot.networking.index import Index, index_of
from pilot.networking.names import FAULT_FILTER, ROUTER_FILTER, outbound_cluster
from pilot.networking.protos import typed

MX_FILTER = "istio.metadata_exchange"
MX_CONFIG = "io.istio.http.peer_metadata.Config"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_PER_ROUTE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
HTTP_GRPC_LOGGER = "envoy.access_loggers.http_grpc"
TCP_GRPC_LOGGER = "envoy.access_loggers.tcp_grpc"
HTTP_GRPC_ALS = "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
TCP_GRPC_ALS = "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig"
ALS_FLUSH_INTERVAL = "1s"  # Envoy's default, written out
ALS_BUFFER_BYTES = 16384  # Envoy's default, written out
_BEFORE_AUTHZ = (HTTP_RBAC_FILTER, FAULT_FILTER, ROUTER_FILTER)


def provider_cluster(p: ExtensionProvider) -> str:
    return outbound_cluster(p.port, "", p.service)


def _grpc_service(p: ExtensionProvider, timeout: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"envoy_grpc": {"cluster_name": provider_cluster(p)}}
    if timeout:
        out["timeout"] = timeout
    return out


def _als_common(p: ExtensionProvider) -> dict[str, Any]:
    return {
        "log_name": p.log_name,
        "grpc_service": _grpc_service(p),
        "transport_api_version": "V3",
        "buffer_flush_interval": ALS_FLUSH_INTERVAL,
        "buffer_size_bytes": ALS_BUFFER_BYTES,
    }


def http_access_log(p: ExtensionProvider) -> dict[str, Any]:
    return {"name": HTTP_GRPC_LOGGER, "typed_config": typed(HTTP_GRPC_ALS, {"common_config": _als_common(p)})}


def tcp_access_log(p: ExtensionProvider) -> dict[str, Any]:
    return {"name": TCP_GRPC_LOGGER, "typed_config": typed(TCP_GRPC_ALS, {"common_config": _als_common(p)})}


def metadata_exchange_filter(inbound: bool) -> dict[str, Any]:
    """Istio's peer metadata filter: inbound learns the caller and tells it who we are; outbound
    (and gateways) tell the callee who we are (not clusters outside the mesh) and learn who it is."""
    headers = {"istio_headers": {}}
    if inbound:
        body = {"downstream_discovery": [headers], "downstream_propagation": [headers]}
    else:
        body = {
            "upstream_discovery": [headers],
            "upstream_propagation": [{"istio_headers": {"skip_external_clusters": True}}],
        }
    return {"name": MX_FILTER, "typed_config": typed(MX_CONFIG, body)}


def ext_authz_filter(p: ExtensionProvider) -> dict[str, Any]:
    body: dict[str, Any] = {
        "grpc_service": _grpc_service(p, p.timeout),
        "transport_api_version": "V3",
        "failure_mode_allow": p.fail_open,
    }
    if p.fail_open:
        body["failure_mode_allow_header_add"] = True
    if p.status_on_error is not None:
        body["status_on_error"] = {"code": p.status_on_error}
    if p.clear_route_cache:
        body["clear_route_cache"] = True
    return {"name": EXT_AUTHZ_FILTER, "typed_config": typed(EXT_AUTHZ, body)}


# ----------------------------------------------------------------------------- CUSTOM authorization


def _custom_policies(idx: Index, proxy: Proxy):
    return [
        ap
        for ap in policies_for(idx, proxy.namespace, proxy.labels)
        if str(ap.spec.get("action") or "").upper() == "CUSTOM"
    ]


def _rule_matches_all(rule: dict[str, Any]) -> bool:
    return (
        not rule.get("when")
        and all(not (f.get("source") or {}) for f in rule.get("from") or [{}])
        and all(not (t.get("operation") or {}) for t in rule.get("to") or [{}])
    )


_SCOPABLE_OPERATION = {"paths", "methods"}


def _path_route_match(path: str | None) -> dict[str, Any]:
    """Istio's AuthorizationPolicy path forms as a route match: exact, ``/x*`` prefix, ``*x`` suffix,
    ``*`` (or none) any."""
    if path is None or path == "*":
        return {"prefix": "/"}
    if path.endswith("*"):
        return {"prefix": path[:-1]}
    if path.startswith("*"):
        return {"safe_regex": {"regex": ".*" + re.escape(path[1:])}}
    return {"path": path}


def rule_route_matches(rule: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The route matches covering exactly the requests one CUSTOM rule matches, when the rule only
    uses ``to.operation.paths`` / ``methods``; None when it uses anything else (sources, ``when``,
    hosts, ports, ``not*``)."""
    if rule.get("when") or any((f.get("source") or {}) for f in rule.get("from") or []):
        return None
    out = []
    for t in rule.get("to") or [{}]:
        op = t.get("operation") or {}
        if set(op) - _SCOPABLE_OPERATION:
            return None
        for path in op.get("paths") or [None]:
            for method in op.get("methods") or [None]:
                m = _path_route_match(path)
                if method is not None:
                    m["headers"] = [{"name": ":method", "string_match": {"exact": str(method)}}]
                out.append(m)
    return out


def custom_scope(
    idx: Index, mesh: MeshConfig, proxy: Proxy, provider: ExtensionProvider
) -> list[dict] | None:
    """Route matches of the requests the workload's CUSTOM policies (for this provider) match, or None
    for every request (a rule matches everything, or cannot be expressed as route matches)."""
    out: list[dict[str, Any]] = []
    for ap in _custom_policies(idx, proxy):
        if mesh.provider(str((ap.spec.get("provider") or {}).get("name", ""))) != provider:
            continue
        for rule in ap.spec.get("rules") or []:
            matches = rule_route_matches(rule)
            if matches is None or {"prefix": "/"} in matches:
                return None
            out += [m for m in matches if m not in out]
    return out


def _scope_routes(route_config: dict[str, Any], scope: list[dict[str, Any]]) -> dict[str, Any]:
    """Inbound route config with ext_authz only on ``scope``: a copy of each catch-all route per match
    first, then the catch-all itself with ext_authz ``disabled`` (Envoy's ExtAuthzPerRoute)."""
    disabled = {EXT_AUTHZ_FILTER: typed(EXT_AUTHZ_PER_ROUTE, {"disabled": True})}
    vhosts = []
    for vh in route_config.get("virtual_hosts") or []:
        routes = []
        for r in vh.get("routes") or []:
            if r.get("match") == {"prefix": "/"}:
                base = {k: v for k, v in r.items() if k not in ("match", "name")}
                routes += [
                    {**base, "name": f"{r.get('name', 'default')}-ext-authz-{i}", "match": m}
                    for i, m in enumerate(scope)
                ]
                r = {**r, "typed_per_filter_config": {**(r.get("typed_per_filter_config") or {}), **disabled}}
            routes.append(r)
        vhosts.append({**vh, "routes": routes})
    return {**route_config, "virtual_hosts": vhosts}


def custom_provider(idx: Index, mesh: MeshConfig, proxy: Proxy) -> ExtensionProvider | None:
    """The ext_authz provider the workload's CUSTOM policies ask for (the first usable one; the rest
    is reported by ``mixer_warnings``)."""
    for ap in _custom_policies(idx, proxy):
        if not ap.spec.get("rules"):
            continue
        p = mesh.provider(str((ap.spec.get("provider") or {}).get("name", "")))
        if p is not None and p.kind == EXT_AUTHZ_GRPC:
            return p
    return None


def mixer_warnings(push: PushContext) -> list[str]:
    """What of the CUSTOM policies is not (fully) enforced, per policy and field path."""
    mesh = push.mesh
    out = []
    for ap in push.config.list("AuthorizationPolicy"):
        if str(ap.spec.get("action") or "").upper() != "CUSTOM":
            continue
        where = f"AuthorizationPolicy/{ap.namespace}/{ap.name}"
        name = str((ap.spec.get("provider") or {}).get("name", ""))
        p = mesh.provider(name)
        if p is None:
            out.append(
                f"{where}: spec.provider.name: action CUSTOM: no mesh extension provider named {name!r}; not enforced"
            )
            continue
        if p.kind != EXT_AUTHZ_GRPC:
            out.append(
                f"{where}: spec.provider.name: provider {name!r} is {p.kind}, not envoyExtAuthzGrpc; not enforced"
            )
            continue
        rules = ap.spec.get("rules") or []
        if not rules:
            out.append(
                f"{where}: spec.rules: empty, so the policy matches no request (Istio); nothing is checked"
            )
        elif not any(_rule_matches_all(r) for r in rules):
            if any(rule_route_matches(r) is None for r in rules):
                out.append(
                    f"{where}: spec.rules: only to.operation.paths/methods can scope a CUSTOM check in Isthmus; "
                    f"every HTTP request to the selected workloads is checked by {name!r}"
                )
            out.append(
                f"{where}: spec.rules: on gateways every HTTP request is checked by {name!r} (the rules scope "
                "the check on sidecars only)"
            )
        out.append(
            f"{where}: CUSTOM is enforced on HTTP ports only (no envoy.filters.network.ext_authz in the proxy); "
            "TCP ports are not checked"
        )
    # More than one CUSTOM provider for one workload: Istio rejects it; we use the first.
    return out


# ----------------------------------------------------------------------------- listeners


def _with_hcm(f: dict[str, Any], inbound: bool, http_logs, authz: dict | None, scope=None) -> dict[str, Any]:
    tc = dict(f["typed_config"])
    if authz is not None and scope is not None and tc.get("route_config"):
        tc["route_config"] = _scope_routes(tc["route_config"], scope)
    filters = list(tc.get("http_filters") or [])
    if authz is not None and not any(x.get("name") == EXT_AUTHZ_FILTER for x in filters):
        at = next((i for i, x in enumerate(filters) if x.get("name") in _BEFORE_AUTHZ), len(filters))
        filters.insert(at, authz)
    if http_logs and not any(x.get("name") == MX_FILTER for x in filters):
        filters.insert(0, metadata_exchange_filter(inbound))
    tc["http_filters"] = filters
    if http_logs:
        tc["access_log"] = [*(tc.get("access_log") or []), *http_logs]
    return {**f, "typed_config": tc}


def _with_tcp(f: dict[str, Any], tcp_logs) -> dict[str, Any]:
    tc = dict(f["typed_config"])
    tc["access_log"] = [*(tc.get("access_log") or []), *tcp_logs]
    return {**f, "typed_config": tc}


def wire_listeners(listeners: list[dict[str, Any]], proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    """The listeners with telemetry and CUSTOM ext_authz added (new dicts; the input is not changed)."""
    if proxy.type == GRPC:
        return listeners
    mesh = push.mesh
    providers = mesh.access_log_providers()
    http_logs = [http_access_log(p) for p in providers if p.kind == HTTP_ALS]
    tcp_logs = [tcp_access_log(p) for p in providers if p.kind == TCP_ALS]
    authz_provider = custom_provider(index_of(push), mesh, proxy) if mesh.extension_providers else None
    authz = ext_authz_filter(authz_provider) if authz_provider is not None else None
    # Sidecars: only the requests the CUSTOM rules match are checked, when the rules can be expressed
    # as route matches; gateways (routes from RDS) and other rules: every request.
    scope = None
    if authz_provider is not None and proxy.type != ROUTER:
        scope = custom_scope(index_of(push), mesh, proxy, authz_provider)
    if not (http_logs or tcp_logs or authz):
        return listeners
    out = []
    for lst in listeners:
        inbound = lst.get("traffic_direction") == "INBOUND"
        chk = authz if (inbound or proxy.type == ROUTER) else None

        def chain(c: dict[str, Any], inbound=inbound, chk=chk, scope=scope) -> dict[str, Any]:
            filters = []
            for f in c.get("filters") or []:
                if f.get("name") == HCM_NAME:
                    f = _with_hcm(f, inbound, http_logs, chk, scope if chk is not None else None)
                elif f.get("name") == TCP_PROXY_NAME and tcp_logs:
                    f = _with_tcp(f, tcp_logs)
                filters.append(f)
            return {**c, "filters": filters}

        new = {**lst, "filter_chains": [chain(c) for c in lst.get("filter_chains") or []]}
        if lst.get("default_filter_chain"):
            new["default_filter_chain"] = chain(lst["default_filter_chain"])
        out.append(new)
    return out


# ----------------------------------------------------------------------------- clusters


def providers_in_use(proxy: Proxy, push: PushContext) -> list[ExtensionProvider]:
    if proxy.type == GRPC:
        return []
    mesh = push.mesh
    used = list(mesh.access_log_providers())
    if mesh.extension_providers:
        p = custom_provider(index_of(push), mesh, proxy)
        if p is not None:
            used.append(p)
    return used


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def provider_cluster_dict(p: ExtensionProvider, mesh: MeshConfig) -> dict[str, Any]:
    """A cluster for a provider outside the service registry."""
    name = provider_cluster(p)
    address = mesh.address_of(p.service) or p.service
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if _is_ip(address) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": address, "port_value": p.port}}
                            }
                        }
                    ]
                }
            ],
        },
    }
    if c["type"] == "STRICT_DNS":
        c["dns_lookup_family"] = "V4_ONLY"
    return c


def wire_clusters(clusters: list[dict[str, Any]], proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    """The clusters plus one per provider in use that the builders did not emit."""
    have = {c["name"] for c in clusters}
    idx = index_of(push)
    out = list(clusters)
    for p in providers_in_use(proxy, push):
        name = provider_cluster(p)
        if name in have:
            continue
        svc = idx.services.get(p.service)
        if svc is not None and any(port.number == p.port for port in svc.ports):
            from pilot.networking.clusters import outbound_cluster_dict

            out.append(outbound_cluster_dict(idx, proxy, svc, p.port, ""))
        else:
            out.append(provider_cluster_dict(p, push.mesh))
        have.add(name)
    return out
