"""Network and HTTP filter dicts shared by the listener builders."""

from __future__ import annotations

from typing import Any

from pilot.networking import protos
from pilot.networking.names import FAULT_FILTER, ROUTER_FILTER
from pilot.networking.protos import FAULT, HCM, ROUTER, TCP_PROXY, typed

HCM_NAME = "envoy.filters.network.http_connection_manager"
TCP_PROXY_NAME = "envoy.filters.network.tcp_proxy"


def http_filters(authz: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Istio's order, as far as the proxy has the filters: RBAC (inbound: DENY, ALLOW, AUDIT), fault
    (configured per route), router last."""
    return [
        *authz,
        {"name": FAULT_FILTER, "typed_config": typed(FAULT)},
        {"name": ROUTER_FILTER, "typed_config": typed(ROUTER)},
    ]


# Inbound sidecar HCM settings, as Istio sets them: XFCC carries the caller's identity to the app, and
# paths are normalised before RBAC sees them (Istio's DECODE_AND_MERGE_SLASHES), so that encoding
# tricks (``/%61dmin``, ``//admin``, ``/x/../admin``) cannot get past a DENY on ``/admin*``.
INBOUND_HCM_OPTIONS: dict[str, Any] = {
    "forward_client_cert_details": "APPEND_FORWARD",
    "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True},
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
}


def hcm(
    stat_prefix: str,
    *,
    rds: str | None = None,
    route_config: dict | None = None,
    authz: list[dict[str, Any]] = (),
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"stat_prefix": stat_prefix, **(options or {})}
    if rds is not None:
        body["rds"] = {
            "config_source": {**protos.ADS, "initial_fetch_timeout": "0s"},
            "route_config_name": rds,
        }
    else:
        body["route_config"] = route_config
    body["http_filters"] = http_filters(authz)
    body["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    return {"name": HCM_NAME, "typed_config": typed(HCM, body)}


def tcp_proxy(
    stat_prefix: str, cluster: str | None = None, weighted: list[tuple[str, int]] | None = None
) -> dict:
    body: dict[str, Any] = {"stat_prefix": stat_prefix}
    if weighted and len(weighted) > 1:
        body["weighted_clusters"] = {"clusters": [{"name": n, "weight": w} for n, w in weighted]}
    else:
        body["cluster"] = cluster if cluster is not None else weighted[0][0]
    return {"name": TCP_PROXY_NAME, "typed_config": typed(TCP_PROXY, body)}


def listener_filter(name: str, type_name: str) -> dict[str, Any]:
    return {"name": name, "typed_config": typed(type_name)}
