"""The upstream side: clusters, hosts, load balancing, connection pools and circuit breakers.

Use::

    cm = ClusterManager.from_protos(bootstrap.static_resources.clusters, ctx)   # ConfigError on bad config
    await cm.start()                                  # DNS clusters resolve once
    cluster = cm.get("backend")                       # None -> 503 NC / "cluster not found"
    host = cluster.choose_host(LbContext(hash_key, conn, headers))    # None -> 503 UH
    resp = await cluster.http_pool(host).request(headers, body)       # UpstreamResponse
    async for chunk in resp: ...                      # or resp.discard() when stopping early
    transport, proto = await cluster.connect_tcp(host)                 # tcp_proxy (TcpUpstream duplex)

Errors: UpstreamConnectError (UF), UpstreamResetError (UC), PoolOverflow (UO, with
``x-envoy-overloaded: true``). The router consults ``cluster.resources.retries`` before retrying.
"""

from proxy.upstream.cluster import Cluster, build_cluster
from proxy.upstream.cluster_manager import ClusterManager
from proxy.upstream.errors import PoolOverflow, UpstreamConnectError, UpstreamError, UpstreamResetError
from proxy.upstream.host import Host
from proxy.upstream.lb import LbContext, stable_hash64
from proxy.upstream.pool import HttpConnectionPool, UpstreamResponse

__all__ = [
    "Cluster",
    "ClusterManager",
    "Host",
    "HttpConnectionPool",
    "LbContext",
    "PoolOverflow",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamResetError",
    "UpstreamResponse",
    "build_cluster",
    "stable_hash64",
]
