"""DestinationRule ``trafficPolicy`` → Cluster fields and route hash policies, as Istio translates them.

Merging (Istio's MergeTrafficPolicy): the top-level policy, overridden field by field by its
``portLevelSettings`` entry for the cluster's port; then the subset's policy and its port-level entry.

What the Isthmus proxy cannot take yet is reported by ``policy_warnings`` and never emitted (the proxy
would NACK the whole cluster batch):

* ``outlierDetection`` -- the proxy has no outlier detection (Envoy's ``outlier_detection``).
* ``tls`` is translated by ``mtls`` (``transport_socket``); its fields Isthmus cannot take
  (``credentialName``, ``insecureSkipVerify``, MUTUAL without files) are reported by ``tls.tls_warnings``.
* ``consistentHash.httpCookie.ttl``/``path`` -- the proxy's cookie hash policy reads an existing cookie
  only (no cookie generation); Istio accepts a cookie without ttl, so we emit ``cookie {name}``.
* ``loadBalancer.localityLbSetting``, ``warmupDurationSecs``, ``connectionPool.tcp.tcpKeepalive``,
  ``maxConnectionDuration``, ``http.h2UpgradePolicy``, ``useClientProtocol``, ``tunnel``,
  ``proxyProtocol`` -- no proxy support yet.
"""

from __future__ import annotations

from typing import Any

from pilot.networking.protos import HTTP_PROTOCOL_OPTIONS, typed
from pilot.networking.tls import tls_warnings

MAX_U32 = 4294967295
# Istio's defaults: unlimited circuit breakers, track_remaining for stats.
DEFAULT_THRESHOLDS = {
    "max_connections": MAX_U32,
    "max_pending_requests": MAX_U32,
    "max_requests": MAX_U32,
    "max_retries": MAX_U32,
    "track_remaining": True,
}
DEFAULT_CONNECT_TIMEOUT = "10s"  # Istio's meshConfig.connectTimeout default
DEFAULT_LB = "LEAST_REQUEST"  # Istio's default since 1.14

_SIMPLE = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "UNSPECIFIED": DEFAULT_LB,
}
_FIELDS = ("loadBalancer", "connectionPool", "outlierDetection", "tls", "tunnel", "proxyProtocol")


def _overlay(base: dict[str, Any], top: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(base)
    for f in _FIELDS:
        if top and top.get(f) is not None:
            out[f] = top[f]
    return out


def _port_level(policy: dict[str, Any] | None, port: int | None) -> dict[str, Any] | None:
    if not policy or port is None:
        return None
    for pls in policy.get("portLevelSettings") or []:
        if int((pls.get("port") or {}).get("number") or 0) == port:
            return pls
    return None


def effective_policy(
    dr_spec: dict[str, Any] | None, subset: str = "", port: int | None = None
) -> dict[str, Any]:
    if not dr_spec:
        return {}
    top = dr_spec.get("trafficPolicy") or {}
    merged = _overlay(_overlay({}, top), _port_level(top, port))
    if subset:
        for s in dr_spec.get("subsets") or []:
            if s.get("name") == subset:
                sp = s.get("trafficPolicy") or {}
                merged = _overlay(_overlay(merged, sp), _port_level(sp, port))
    return merged


def subset_labels(dr_spec: dict[str, Any] | None, subset: str) -> dict[str, str] | None:
    for s in (dr_spec or {}).get("subsets") or []:
        if s.get("name") == subset:
            return {str(k): str(v) for k, v in (s.get("labels") or {}).items()}
    return None


def _duration(value: Any) -> str:
    return str(value)


def apply_to_cluster(cluster: dict[str, Any], policy: dict[str, Any]) -> None:
    """Set lb_policy, ring/least-request config, circuit breakers, connect timeout and HTTP protocol
    options on a cluster dict (EDS, STRICT_DNS or STATIC; ORIGINAL_DST keeps CLUSTER_PROVIDED)."""
    lb = policy.get("loadBalancer") or {}
    original_dst = cluster.get("type") == "ORIGINAL_DST"
    if not original_dst:
        cluster["lb_policy"] = DEFAULT_LB
        if lb.get("simple"):
            simple = str(lb["simple"]).upper()
            if simple == "PASSTHROUGH":
                # Istio: PASSTHROUGH sends to the caller's original destination.
                cluster["type"] = "ORIGINAL_DST"
                cluster["lb_policy"] = "CLUSTER_PROVIDED"
                cluster.pop("eds_cluster_config", None)
                cluster.pop("load_assignment", None)
            else:
                cluster["lb_policy"] = _SIMPLE.get(simple, DEFAULT_LB)
        elif lb.get("consistentHash"):
            ch = lb["consistentHash"]
            if ch.get("maglev") is not None:
                cluster["lb_policy"] = "MAGLEV"
                size = (ch.get("maglev") or {}).get("tableSize")
                if size:
                    cluster["maglev_lb_config"] = {"table_size": int(size)}
            else:
                cluster["lb_policy"] = "RING_HASH"
                minimum = (ch.get("ringHash") or {}).get("minimumRingSize") or ch.get("minimumRingSize")
                if minimum:
                    cluster["ring_hash_lb_config"] = {"minimum_ring_size": int(minimum)}
    pool = policy.get("connectionPool") or {}
    tcp = pool.get("tcp") or {}
    http = pool.get("http") or {}
    thresholds = dict(DEFAULT_THRESHOLDS)
    if tcp.get("maxConnections") is not None:
        thresholds["max_connections"] = int(tcp["maxConnections"])
    if http.get("http1MaxPendingRequests") is not None:
        thresholds["max_pending_requests"] = int(http["http1MaxPendingRequests"])
    if http.get("http2MaxRequests") is not None:
        thresholds["max_requests"] = int(http["http2MaxRequests"])
    if http.get("maxRetries") is not None:
        thresholds["max_retries"] = int(http["maxRetries"])
    cluster["circuit_breakers"] = {"thresholds": [thresholds]}
    if tcp.get("connectTimeout"):
        cluster["connect_timeout"] = _duration(tcp["connectTimeout"])
    common: dict[str, Any] = {}
    if http.get("idleTimeout"):
        common["idle_timeout"] = _duration(http["idleTimeout"])
    if http.get("maxRequestsPerConnection"):
        common["max_requests_per_connection"] = int(http["maxRequestsPerConnection"])
    if common:
        cluster["typed_extension_protocol_options"] = {
            HTTP_PROTOCOL_OPTIONS: typed(
                HTTP_PROTOCOL_OPTIONS,
                {
                    "common_http_protocol_options": common,
                    "explicit_http_config": {"http_protocol_options": {}},
                },
            )
        }


def hash_policy(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """The route hash_policy for a consistentHash load balancer (empty otherwise)."""
    ch = (policy.get("loadBalancer") or {}).get("consistentHash") or {}
    if ch.get("httpHeaderName"):
        return [{"header": {"header_name": str(ch["httpHeaderName"])}}]
    if ch.get("httpCookie"):
        return [{"cookie": {"name": str(ch["httpCookie"].get("name") or "")}}]
    if ch.get("useSourceIp"):
        return [{"connection_properties": {"source_ip": True}}]
    if ch.get("httpQueryParameterName"):
        return [{"query_parameter": {"name": str(ch["httpQueryParameterName"])}}]
    return []


def _policy_warnings(where: str, policy: dict[str, Any] | None) -> list[str]:
    if not policy:
        return []
    out = []
    if policy.get("outlierDetection") is not None:
        out.append(f"{where}.outlierDetection: not emitted (the proxy has no outlier detection yet)")
    out.extend(tls_warnings(where, policy.get("tls")))
    lb = policy.get("loadBalancer") or {}
    for f in ("localityLbSetting", "warmupDurationSecs", "warmup"):
        if lb.get(f) is not None:
            out.append(f"{where}.loadBalancer.{f}: not supported by the proxy yet; ignored")
    cookie = (lb.get("consistentHash") or {}).get("httpCookie") or {}
    for f in ("ttl", "path", "attributes"):
        if cookie.get(f) is not None:
            out.append(
                f"{where}.loadBalancer.consistentHash.httpCookie.{f}: not emitted (the proxy hashes an "
                f"existing cookie and does not generate one)"
            )
    pool = policy.get("connectionPool") or {}
    for f in ("tcpKeepalive", "maxConnectionDuration", "idleTimeout"):
        if (pool.get("tcp") or {}).get(f) is not None:
            out.append(f"{where}.connectionPool.tcp.{f}: not supported by the proxy yet; ignored")
    for f in ("h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"):
        if (pool.get("http") or {}).get(f) is not None:
            out.append(f"{where}.connectionPool.http.{f}: not supported by the proxy yet; ignored")
    for f in ("tunnel", "proxyProtocol"):
        if policy.get(f) is not None:
            out.append(f"{where}.{f}: not supported by the proxy yet; ignored")
    for i, pls in enumerate(policy.get("portLevelSettings") or []):
        out.extend(_policy_warnings(f"{where}.portLevelSettings[{i}]", pls))
    return out


def policy_warnings(dr_key: str, spec: dict[str, Any]) -> list[str]:
    out = _policy_warnings(f"{dr_key}: trafficPolicy", spec.get("trafficPolicy"))
    for i, s in enumerate(spec.get("subsets") or []):
        out.extend(_policy_warnings(f"{dr_key}: subsets[{i}].trafficPolicy", s.get("trafficPolicy")))
    return out
