"""Istio's names for generated resources."""

from __future__ import annotations

BLACKHOLE_CLUSTER = "BlackHoleCluster"
PASSTHROUGH_CLUSTER = "PassthroughCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughClusterIpv4"
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
VIRTUAL_OUTBOUND_PORT = 15001
VIRTUAL_INBOUND_PORT = 15006
MESH_GATEWAY = "mesh"
FAULT_FILTER = "envoy.filters.http.fault"
ROUTER_FILTER = "envoy.filters.http.router"


def outbound_cluster(port: int, subset: str, host: str) -> str:
    return f"outbound|{port}|{subset}|{host}"


def inbound_cluster(port: int) -> str:
    return f"inbound|{port}||"


def parse_cluster_name(name: str) -> tuple[str, int, str, str] | None:
    """(direction, port, subset, host) of ``outbound|9080|v1|reviews...``, or None."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ("outbound", "inbound"):
        return None
    try:
        port = int(parts[1])
    except ValueError:
        return None
    return parts[0], port, parts[2], parts[3]
