"""``envoy.config.core.v3.GrpcService`` for the proxy's own gRPC calls (ext_authz, ratelimit, ALS).

Only ``envoy_grpc`` is implemented, as in Istio's sidecars: the target is a cluster of the proxy's
ClusterManager. Each call picks a host with the cluster's load balancer and uses one ``grpc.aio``
channel per host, created lazily (inside the running event loop) and reused for every later call.
Parsing is pure; the channel cache is the only I/O and never blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from proxy.config.errors import ConfigError
from proxy.config.supported import reject_unsupported

log = logging.getLogger("proxy.grpc")

GRPC_SERVICE_SPEC = {
    "envoy_grpc": {"cluster_name": True, "authority": True},
    "timeout": True,
    "initial_metadata": True,
}


class NoHostError(Exception):
    """The cluster is unknown or has no host to send to (Envoy: 'no healthy upstream')."""


def duration_seconds(d) -> float:
    return d.seconds + d.nanos / 1e9


@dataclass(frozen=True)
class GrpcServiceConfig:
    cluster_name: str
    authority: str
    timeout: float | None  # None: the caller's default
    initial_metadata: tuple[tuple[str, str], ...]


def parse_grpc_service(msg, path: str) -> GrpcServiceConfig:
    """A GrpcService message -> GrpcServiceConfig; raises ConfigError naming the field."""
    if msg.HasField("google_grpc"):
        raise ConfigError(
            f"{path}.google_grpc", "google_grpc is not supported by Isthmus; use envoy_grpc with a cluster"
        )
    reject_unsupported(msg, GRPC_SERVICE_SPEC, path)
    if not msg.HasField("envoy_grpc") or not msg.envoy_grpc.cluster_name:
        raise ConfigError(f"{path}.envoy_grpc.cluster_name", "a gRPC service needs envoy_grpc.cluster_name")
    timeout = duration_seconds(msg.timeout) if msg.HasField("timeout") else None
    metadata = []
    for i, hv in enumerate(msg.initial_metadata):
        key = hv.key.lower()
        if not key or key.startswith(":"):
            raise ConfigError(f"{path}.initial_metadata[{i}].key", "a metadata key must be a header name")
        metadata.append((key, hv.value))
    return GrpcServiceConfig(msg.envoy_grpc.cluster_name, msg.envoy_grpc.authority, timeout, tuple(metadata))


def check_cluster_exists(cluster_manager, name: str, path: str) -> None:
    """Envoy refuses a gRPC client whose cluster is unknown at config time ('Unknown gRPC client
    cluster'). Without a cluster manager (tools, unit tests) there is nothing to check."""
    if cluster_manager is None or not hasattr(cluster_manager, "get"):
        return
    if cluster_manager.get(name) is None:
        raise ConfigError(f"{path}.envoy_grpc.cluster_name", f"unknown gRPC client cluster '{name}'")


class GrpcClusterClient:
    """Channels to the hosts of one cluster: ``channel()`` picks a host and returns its (cached)
    channel. Raises NoHostError when the cluster is missing or empty."""

    def __init__(self, cluster_manager, config: GrpcServiceConfig) -> None:
        self.cluster_manager = cluster_manager
        self.config = config
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[int, type], object] = {}

    def stub(self, stub_cls: type):
        """A stub of ``stub_cls`` on the channel of the host chosen for this call (cached per channel)."""
        ch = self.channel()
        key = (id(ch), stub_cls)
        s = self._stubs.get(key)
        if s is None:
            s = self._stubs[key] = stub_cls(ch)
        return s

    def channel(self) -> grpc.aio.Channel:
        cm = self.cluster_manager
        cluster = cm.get(self.config.cluster_name) if cm is not None else None
        if cluster is None:
            raise NoHostError(f"unknown cluster '{self.config.cluster_name}'")
        host = cluster.choose_host(None)
        if host is None:
            raise NoHostError(f"no healthy upstream in cluster '{self.config.cluster_name}'")
        target = host.address_str
        ch = self._channels.get(target)
        if ch is None:
            # A side service that was down must be found again quickly: gRPC's default reconnect
            # back-off grows to 120 s, far longer than a mixer restart.
            options = [
                ("grpc.enable_retries", 0),
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ]
            if self.config.authority:
                options.append(("grpc.default_authority", self.config.authority))
            ch = grpc.aio.insecure_channel(target, options=options)
            self._channels[target] = ch
            if len(self._channels) > 64:  # hosts come and go (EDS): forget the oldest channel
                oldest = next(iter(self._channels))
                self._drop(oldest)
        return ch

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return self.config.initial_metadata or None

    def _drop(self, target: str) -> None:
        ch = self._channels.pop(target, None)
        if ch is not None:
            for key in [k for k in self._stubs if k[0] == id(ch)]:
                del self._stubs[key]
            try:
                asyncio.get_running_loop().create_task(ch.close())
            except RuntimeError:
                pass

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        self._stubs.clear()
        for ch in channels:
            await ch.close()
