"""``envoy.filters.network.http_connection_manager``: HTTP/1.1 over the sans-IO codec, the HTTP filter
chain, routing, local replies, timeouts, access logs and Envoy's ``http.<stat_prefix>.*`` stats."""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from proxy.config.context import FactoryContext
from proxy.config.registry import NETWORK_FILTERS
from proxy.filters.network.http_connection_manager.config import (
    HcmConfig,
    StaticRouteProvider,
    SwappableRouteProvider,
    build_config,
)
from proxy.filters.network.http_connection_manager.manager import ActiveStream, HttpConnectionManager

__all__ = [
    "ActiveStream",
    "HcmConfig",
    "HcmFactory",
    "HttpConnectionManager",
    "StaticRouteProvider",
    "SwappableRouteProvider",
    "build_config",
]


class HcmFactory:
    """Built once per configuration; ``create(conn)`` per downstream connection."""

    __slots__ = ("config",)

    def __init__(self, config: HcmConfig) -> None:
        self.config = config

    def create(self, conn) -> HttpConnectionManager:
        return HttpConnectionManager(self.config, conn)


@NETWORK_FILTERS.register("envoy.filters.network.http_connection_manager", hcm_pb2.HttpConnectionManager)
def make_http_connection_manager(
    config: hcm_pb2.HttpConnectionManager, ctx: FactoryContext, path: str
) -> HcmFactory:
    return HcmFactory(build_config(config, ctx, path))
