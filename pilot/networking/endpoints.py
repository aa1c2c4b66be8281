"""ClusterLoadAssignments (EDS) for ``outbound|<port>|<subset>|<host>`` clusters.

Endpoints are grouped by locality (``region/zone/subzone``); every locality carries a
``load_balancing_weight`` (the sum of its endpoints' weights), because gRPC's xDS client ignores a
locality without one, and a ``locality`` message (possibly empty), without which gRPC rejects it. A subset's endpoints are those whose labels contain the subset's labels.
An unknown cluster name gets no resource (as Istio); a known one without endpoints gets an empty
assignment, so the proxy learns that it has none.
"""

from __future__ import annotations

from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2

from pilot.model.proxy import Proxy
from pilot.model.push_context import PushContext
from pilot.model.service import Endpoint
from pilot.networking import protos
from pilot.networking import traffic_policy as tp
from pilot.networking.clusters import subsets_of
from pilot.networking.index import Index, destination_rule, index_of, labels_match, visible_services
from pilot.networking.names import outbound_cluster, parse_cluster_name


def _locality(text: str) -> dict[str, str]:
    parts = (text.split("/") + ["", "", ""])[:3]
    return {k: v for k, v in zip(("region", "zone", "sub_zone"), parts, strict=True) if v}


def assignment_dict(name: str, endpoints: list[Endpoint]) -> dict[str, Any]:
    by_locality: dict[str, list[Endpoint]] = {}
    for e in endpoints:
        by_locality.setdefault(e.locality, []).append(e)
    groups = []
    for loc in sorted(by_locality):
        eps = sorted(by_locality[loc], key=lambda e: (e.address, e.port))
        group: dict[str, Any] = {
            "lb_endpoints": [
                {
                    "endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}},
                    "health_status": "HEALTHY",
                    "load_balancing_weight": max(1, e.weight),
                    "metadata": {
                        "filter_metadata": {"envoy.transport_socket_match": {"tlsMode": e.tls_mode}}
                    },
                }
                for e in eps
            ],
            "load_balancing_weight": sum(max(1, e.weight) for e in eps),
        }
        # Always present, even empty: gRPC's xDS client rejects a LocalityLbEndpoints without one.
        group["locality"] = _locality(loc)
        groups.append(group)
    return {"cluster_name": name, "endpoints": groups}


def endpoints_for(idx: Index, proxy: Proxy, name: str) -> list[Endpoint] | None:
    parsed = parse_cluster_name(name)
    if parsed is None or parsed[0] != "outbound":
        return None
    _, port, subset, host = parsed
    svc = idx.services.get(host)
    if svc is None or not any(p.number == port for p in svc.ports):
        return None
    eps = idx.endpoints.get((host, port), [])
    if subset:
        dr = destination_rule(idx, proxy.namespace, host)
        labels = tp.subset_labels(dr.spec if dr else None, subset)
        if labels is None:
            return None
        eps = [e for e in eps if labels_match(labels, e.labels)]
    return eps


def eds_cluster_names(idx: Index, proxy: Proxy) -> list[str]:
    out = []
    for svc in visible_services(idx, proxy):
        if svc.resolution.upper() not in ("STATIC",):
            continue
        subsets = subsets_of(idx, proxy, svc)
        for p in svc.ports:
            out.append(outbound_cluster(p.number, "", svc.hostname))
            out += [outbound_cluster(p.number, s, svc.hostname) for s in subsets]
    return out


def build_endpoints(
    proxy: Proxy, push: PushContext, names: set[str] | None = None
) -> list[endpoint_pb2.ClusterLoadAssignment]:
    idx = index_of(push)
    wanted = sorted(names) if names is not None else eds_cluster_names(idx, proxy)
    out = []
    for name in wanted:
        eps = endpoints_for(idx, proxy, name)
        if eps is None:
            continue
        out.append(protos.load_assignment(assignment_dict(name, eps)))
    return out
