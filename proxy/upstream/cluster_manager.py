"""The cluster manager: every cluster by name, built from protos, started (warmed) before use, and
replaceable at runtime (xDS CDS, issue 4) without disturbing requests in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2

from proxy.config.errors import ConfigError
from proxy.upstream.cluster import Cluster, build_cluster


class ClusterManager:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.clusters: dict[str, Cluster] = {}  # name -> Cluster (each keeps its .proto)
        # CDS clusters built and started but waiting for their endpoints (EDS) before they replace
        # the active cluster of that name; requests never see them.
        self.warming: dict[str, Cluster] = {}
        self.static_names: set[str] = set()  # from the bootstrap: CDS cannot change or remove them
        self._draining: set[Cluster] = set()
        self.started = False
        self.stats = ctx.stats.scope("cluster_manager.") if getattr(ctx, "stats", None) else None

    @classmethod
    def from_protos(
        cls, clusters: Iterable[cluster_pb2.Cluster], ctx, path: str = "static_resources.clusters"
    ) -> ClusterManager:
        """Validate and build every cluster; raises ConfigError naming the offending field."""
        cm = cls(ctx)
        for i, proto in enumerate(clusters):
            here = f"{path}[{i}]"
            if proto.name in cm.clusters:
                raise ConfigError(f"{here}.name", f"cluster manager: duplicate cluster '{proto.name}' found")
            cm.clusters[proto.name] = build_cluster(proto, ctx, here)
        cm.static_names = set(cm.clusters)
        cm._update_gauges()
        return cm

    def get(self, name: str) -> Cluster | None:
        return self.clusters.get(name)

    async def start(self) -> None:
        """Initial membership for every cluster (DNS clusters resolve once)."""
        await asyncio.gather(*(c.start() for c in self.clusters.values()))
        self.started = True

    async def add_or_update(self, proto: cluster_pb2.Cluster, path: str = "cluster") -> Cluster:
        """Build, warm and then swap in a cluster; an old cluster of that name drains. A cluster whose
        proto did not change is kept as it is (Envoy ignores identical CDS updates)."""
        old = self.clusters.get(proto.name)
        if old is not None and old.proto == proto:
            return old
        cluster = build_cluster(proto, self.ctx, path)
        if self.started:
            await cluster.start()
        self.activate(cluster)
        return cluster

    def activate(self, cluster: Cluster) -> Cluster | None:
        """Swap a built (and started or warmed) cluster in by one reference; the cluster it replaces
        drains (requests in flight keep the cluster they chose). Returns the replaced cluster."""
        name = cluster.name
        superseded = self.warming.pop(name, None)
        if superseded is not None and superseded is not cluster:
            self._retire(superseded)
        old = self.clusters.get(name)
        self.clusters[name] = cluster
        if self.stats is not None:
            self.stats.counter("cluster_added" if old is None else "cluster_modified").inc()
        if old is not None and old is not cluster:
            self._retire(old)
        self._update_gauges()
        return old

    def set_warming(self, cluster: Cluster) -> None:
        """Hold a cluster until it is warm; a cluster already warming under that name is dropped."""
        old = self.warming.get(cluster.name)
        self.warming[cluster.name] = cluster
        if old is not None and old is not cluster:
            self._retire(old)
        self._update_gauges()

    def remove(self, name: str) -> bool:
        """Remove a cluster (and one warming under that name): new requests no longer find it; its
        pools drain."""
        warming = self.warming.pop(name, None)
        if warming is not None:
            self._retire(warming)
        old = self.clusters.pop(name, None)
        if old is not None:
            self._retire(old)
            if self.stats is not None:
                self.stats.counter("cluster_removed").inc()
        self._update_gauges()
        return old is not None or warming is not None

    def _update_gauges(self) -> None:
        if self.stats is not None:
            self.stats.gauge("active_clusters").set(len(self.clusters))
            self.stats.gauge("warming_clusters").set(len(self.warming))

    def _retire(self, cluster: Cluster) -> None:
        cluster.drain()
        # Forget retired clusters whose connections are all gone (bounded across many updates).
        self._draining = {c for c in self._draining if c.active_connections()}
        self._draining.add(cluster)

    async def close(self) -> None:
        for cluster in list(self.clusters.values()) + list(self.warming.values()) + list(self._draining):
            await cluster.close()
        self._draining.clear()

    stop = close  # the server's shutdown calls stop()
