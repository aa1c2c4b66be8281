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
  ``failOpen`` → ``failure_mode_allow``, ``timeout`` → the gRPC timeout, ``statusOnError``. Scope: the
  whole workload (every request is checked) when a rule matches every request; Istio scopes the check
  to the requests the rules match (a shadow RBAC filter + dynamic metadata), which the Isthmus proxy
  cannot express yet, so narrower rules are reported and the check still covers the whole workload
  (the provider's own rules decide). A policy without rules matches nothing (Istio) → no check.
* **Provider clusters**: each provider in use is reached through ``outbound|<port>||<service>``. A
  service in the registry keeps the cluster the registry gives it (EDS); otherwise pilot emits a STATIC
  cluster on the address given for the host (``--mixer-address``), or the host itself when it is an IP,
  or a STRICT_DNS cluster on the host name.
"""

from __future__ import annotations

import ipaddress
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
            out.append(
                f"{where}: spec.rules: Isthmus does not scope CUSTOM checks to the rules yet; every HTTP request "
                f"to the selected workloads is checked by {name!r}"
            )
        out.append(
            f"{where}: CUSTOM is enforced on HTTP ports only (no envoy.filters.network.ext_authz in the proxy); "
            "TCP ports are not checked"
        )
    # More than one CUSTOM provider for one workload: Istio rejects it; we use the first.
    return out


# ----------------------------------------------------------------------------- listeners


def _with_hcm(f: dict[str, Any], inbound: bool, http_logs, authz: dict | None) -> dict[str, Any]:
    tc = dict(f["typed_config"])
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
    if not (http_logs or tcp_logs or authz):
        return listeners
    out = []
    for lst in listeners:
        inbound = lst.get("traffic_direction") == "INBOUND"
        chk = authz if (inbound or proxy.type == ROUTER) else None

        def chain(c: dict[str, Any], inbound=inbound, chk=chk) -> dict[str, Any]:
            filters = []
            for f in c.get("filters") or []:
                if f.get("name") == HCM_NAME:
                    f = _with_hcm(f, inbound, http_logs, chk)
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
