"""Builders write resources as plain dicts in the proto JSON shape (proto field names), then parse them
into the real xds-protos messages here. Every module whose messages appear inside an ``Any`` is
imported up front, so ``json_format`` can resolve ``@type`` (DESIGN.md pitfalls)."""

from __future__ import annotations

from typing import Any, TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2  # noqa: F401  (Any payload: telemetry loggers)
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2  # noqa: F401  (Any payload)
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401  (Any payload)
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2  # noqa: F401  (EnvoyFilter payload)
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.message import Message

from api.io.istio.http.peer_metadata import config_pb2 as peer_metadata_pb2  # noqa: F401  (Any payload)

T = TypeVar("T", bound=Message)

TYPE_PREFIX = "type.googleapis.com/"
LISTENER_TYPE = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
CLUSTER_TYPE = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
ENDPOINT_TYPE = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"

HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER = "envoy.extensions.filters.http.router.v3.Router"
FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
ORIGINAL_DST = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
TLS_INSPECTOR = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HTTP_RBAC = "envoy.extensions.filters.http.rbac.v3.RBAC"
NETWORK_RBAC = "envoy.extensions.filters.network.rbac.v3.RBAC"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def typed(type_name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ``Any`` in JSON form."""
    return {"@type": TYPE_PREFIX + type_name, **(body or {})}


def parse(cls: type[T], data: dict[str, Any]) -> T:
    return json_format.ParseDict(data, cls())


def listener(data: dict[str, Any]) -> listener_pb2.Listener:
    return parse(listener_pb2.Listener, data)


def cluster(data: dict[str, Any]) -> cluster_pb2.Cluster:
    return parse(cluster_pb2.Cluster, data)


def route_configuration(data: dict[str, Any]) -> route_pb2.RouteConfiguration:
    return parse(route_pb2.RouteConfiguration, data)


def load_assignment(data: dict[str, Any]) -> endpoint_pb2.ClusterLoadAssignment:
    return parse(endpoint_pb2.ClusterLoadAssignment, data)


def to_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


ADS = {"ads": {}, "resource_api_version": "V3"}
