"""Clusters (CDS), as Istio builds them.

* ``outbound|<port>||<host>`` for every port of every visible service, and
  ``outbound|<port>|<subset>|<host>`` for every subset of the host's DestinationRule. Resolution
  STATIC (registry endpoints) → ``EDS`` over ADS (``service_name`` = the cluster name); DNS →
  ``STRICT_DNS`` (DNS_ROUND_ROBIN → ``LOGICAL_DNS``) with the endpoints inline; NONE →
  ``ORIGINAL_DST``. The DestinationRule's traffic policy is applied (``traffic_policy``), and the
  upstream TLS (auto mTLS or the DestinationRule's ``tls``) is chosen by ``mtls``.
* Sidecars also get ``inbound|<port>||`` STATIC clusters for their own workload's ports, pointing at
  the workload's instance IP (Istio ≥ 1.10 forwards inbound traffic to the pod IP; in local mode apps
  listen on their workload IP, so 127.0.0.1 would not reach them; with ``INTERCEPTION_MODE: NONE`` and
  ``ISTHMUS_APP_ADDRESS`` the sidecar owns the workload IP's ports and the endpoint is the app's
  private address instead), plus ``BlackHoleCluster``,
  ``PassthroughCluster`` and ``InboundPassthroughClusterIpv4``. With ``INTERCEPTION_MODE: REDIRECT``
  (the default) the inbound clusters and the inbound passthrough bind ``127.0.0.6``
  (``upstream_bind_config``), which istio-init's rules let through to the app.
* gRPC clients get only the outbound EDS clusters (ROUND_ROBIN, no Envoy-only fields).
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2

from pilot.model.proxy import GRPC, ROUTER, Proxy
from pilot.model.push_context import PushContext
from pilot.model.service import Service
from pilot.networking import protos
from pilot.networking import traffic_policy as tp
from pilot.networking.index import Index, destination_rule, index_of, visible_services
from pilot.networking.mtls import cluster_transport_socket
from pilot.networking.names import (
    BLACKHOLE_CLUSTER,
    INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER,
    inbound_cluster,
    outbound_cluster,
)
from pilot.networking.postprocess import finish_clusters


def _metadata(svc: Service, subset: str) -> dict[str, Any]:
    short = svc.hostname.split(".")[0]
    istio: dict[str, Any] = {"services": [{"host": svc.hostname, "name": short, "namespace": svc.namespace}]}
    if subset:
        istio["subset"] = subset
    return {"filter_metadata": {"istio": istio}}


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"address": {"socket_address": {"address": address, "port_value": port}}}


def outbound_cluster_dict(idx: Index, proxy: Proxy, svc: Service, port: int, subset: str) -> dict[str, Any]:
    name = outbound_cluster(port, subset, svc.hostname)
    c: dict[str, Any] = {"name": name, "connect_timeout": tp.DEFAULT_CONNECT_TIMEOUT}
    resolution = svc.resolution.upper()
    if resolution == "NONE":
        c.update(type="ORIGINAL_DST", lb_policy="CLUSTER_PROVIDED")
    elif resolution in ("DNS", "DNS_ROUND_ROBIN"):
        c["type"] = "STRICT_DNS" if resolution == "DNS" else "LOGICAL_DNS"
        c["dns_lookup_family"] = "V4_ONLY"
        eps = idx.endpoints.get((svc.hostname, port), [])
        c["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": _socket(e.address, e.port)} for e in eps]}]
            if eps
            else [],
        }
    else:
        c["type"] = "EDS"
        c["eds_cluster_config"] = {
            "eds_config": {**protos.ADS, "initial_fetch_timeout": "0s"},
            "service_name": name,
        }
    dr = destination_rule(idx, proxy.namespace, svc.hostname)
    policy = tp.effective_policy(dr.spec if dr else None, subset, port)
    tp.apply_to_cluster(c, policy)
    socket = cluster_transport_socket(idx, svc, port, subset, policy, dr.spec if dr else None)
    if socket is not None:
        c["transport_socket"] = socket
    c["metadata"] = _metadata(svc, subset)
    return c


def subsets_of(idx: Index, proxy: Proxy, svc: Service) -> list[str]:
    dr = destination_rule(idx, proxy.namespace, svc.hostname)
    return [str(s["name"]) for s in (dr.spec.get("subsets") or []) if s.get("name")] if dr else []


def outbound_clusters(idx: Index, proxy: Proxy) -> list[dict[str, Any]]:
    out = []
    for svc in visible_services(idx, proxy):
        subsets = subsets_of(idx, proxy, svc)
        for port in svc.ports:
            out.append(outbound_cluster_dict(idx, proxy, svc, port.number, ""))
            for subset in subsets:
                out.append(outbound_cluster_dict(idx, proxy, svc, port.number, subset))
    return out


def workload_ports(idx: Index, proxy: Proxy) -> list[tuple[int, str]]:
    """(workload port, protocol) of every registry endpoint on this proxy's IPs."""
    ips = set(proxy.ip_addresses)
    found: dict[int, str] = {}
    for (host, sport), eps in sorted(idx.endpoints.items()):
        svc = idx.services.get(host)
        proto = next((p.protocol for p in svc.ports if p.number == sport), "TCP") if svc else "TCP"
        for e in eps:
            if e.address in ips:
                found.setdefault(e.port, proto)
    return sorted(found.items())


# Istio's InboundPassthroughBindIpv4: istio-init RETURNs connections from this source over lo, so the
# sidecar's connection to its own pod IP reaches the app instead of being redirected to 15006 again.
INBOUND_PASSTHROUGH_BIND = {"source_address": {"address": "127.0.0.6", "port_value": 0}}


def _interception_redirect(proxy: Proxy) -> bool:
    return str(proxy.metadata.get("INTERCEPTION_MODE") or "REDIRECT").upper() == "REDIRECT"


def inbound_cluster_dict(proxy: Proxy, port: int) -> dict[str, Any]:
    name = inbound_cluster(port)
    address = proxy.ip_addresses[0] if proxy.ip_addresses else "127.0.0.1"
    if not _interception_redirect(proxy) and proxy.metadata.get("ISTHMUS_APP_ADDRESS"):
        address = str(proxy.metadata["ISTHMUS_APP_ADDRESS"])  # local mode: the app's private address
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": tp.DEFAULT_CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": {"thresholds": [dict(tp.DEFAULT_THRESHOLDS)]},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": _socket(address, port)}]}],
        },
    }
    if _interception_redirect(proxy):
        c["upstream_bind_config"] = dict(INBOUND_PASSTHROUGH_BIND)
    return c


def special_clusters() -> list[dict[str, Any]]:
    return [
        {"name": BLACKHOLE_CLUSTER, "type": "STATIC", "connect_timeout": tp.DEFAULT_CONNECT_TIMEOUT},
        {
            "name": PASSTHROUGH_CLUSTER,
            "type": "ORIGINAL_DST",
            "connect_timeout": tp.DEFAULT_CONNECT_TIMEOUT,
            "lb_policy": "CLUSTER_PROVIDED",
            "circuit_breakers": {"thresholds": [dict(tp.DEFAULT_THRESHOLDS)]},
        },
        {
            "name": INBOUND_PASSTHROUGH_CLUSTER,
            "type": "ORIGINAL_DST",
            "connect_timeout": tp.DEFAULT_CONNECT_TIMEOUT,
            "lb_policy": "CLUSTER_PROVIDED",
            "circuit_breakers": {"thresholds": [dict(tp.DEFAULT_THRESHOLDS)]},
        },
    ]


def grpc_cluster_dict(c: dict[str, Any]) -> dict[str, Any]:
    """gRPC's xDS client takes ROUND_ROBIN and RING_HASH through ``lb_policy`` (grpcio NACKs
    LEAST_REQUEST there: "LB policy is not supported"), so Istio's LEAST_REQUEST default becomes
    ROUND_ROBIN; Envoy-only fields (circuit breakers, metadata, connect timeout) are left out."""
    out = {
        k: v
        for k, v in c.items()
        if k in ("name", "type", "eds_cluster_config", "lb_policy", "ring_hash_lb_config")
    }
    if out.get("type") != "EDS":
        out["type"] = "EDS"
        out["eds_cluster_config"] = {"eds_config": protos.ADS, "service_name": c["name"]}
    out["eds_cluster_config"] = {"eds_config": dict(protos.ADS), "service_name": c["name"]}
    if out.get("lb_policy") not in ("ROUND_ROBIN", "RING_HASH"):
        out["lb_policy"] = "ROUND_ROBIN"
    return out


def build_clusters(
    proxy: Proxy, push: PushContext, names: set[str] | None = None
) -> list[cluster_pb2.Cluster]:
    idx = index_of(push)
    dicts = outbound_clusters(idx, proxy)
    if proxy.type == GRPC:
        dicts = [grpc_cluster_dict(c) for c in dicts]
    elif proxy.type == ROUTER:
        dicts += special_clusters()[:2]
    else:
        dicts += [inbound_cluster_dict(proxy, port) for port, _ in workload_ports(idx, proxy)]
        specials = special_clusters()
        if _interception_redirect(proxy):  # Istio binds the inbound passthrough to 127.0.0.6 too
            for c in specials:
                if c["name"] == INBOUND_PASSTHROUGH_CLUSTER:
                    c["upstream_bind_config"] = dict(INBOUND_PASSTHROUGH_BIND)
        dicts += specials
    dicts = finish_clusters(dicts, proxy, push)  # mesh provider clusters (mixer), then EnvoyFilter patches
    return [protos.cluster(c) for c in dicts if names is None or c["name"] in names]
