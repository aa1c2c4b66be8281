"""Small builders for upstream unit tests."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import json_format

from proxy.config.context import FactoryContext
from proxy.stats.store import Store


def ctx() -> FactoryContext:
    return FactoryContext(stats=Store())


def cluster_proto(**fields) -> cluster_pb2.Cluster:
    base = {"name": "backend", "type": "STATIC", "connect_timeout": "1s"}
    base.update(fields)
    return json_format.ParseDict(base, cluster_pb2.Cluster())


def endpoints(*addrs, **locality) -> dict:
    """One LocalityLbEndpoints: addrs are "ip:port" or ("ip:port", weight)."""
    eps = []
    for a in addrs:
        addr, weight = (a, None) if isinstance(a, str) else a
        ip, port = addr.rsplit(":", 1)
        ep = {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": int(port)}}}}
        if weight is not None:
            ep["load_balancing_weight"] = weight
        eps.append(ep)
    return {"lb_endpoints": eps, **locality}


def load_assignment(*locality_entries) -> dict:
    return {"cluster_name": "backend", "endpoints": list(locality_entries)}
