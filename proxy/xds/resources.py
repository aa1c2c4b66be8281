"""Decode xDS resources (``google.protobuf.Any``) into their messages and name them (pure).

A server may send a resource bare (``Any`` of the resource type) or wrapped in
``envoy.service.discovery.v3.Resource``; both are accepted, as Envoy does.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from proxy.xds import api

MESSAGE_TYPES: dict[str, type[Message]] = {
    api.LISTENER: listener_pb2.Listener,
    api.CLUSTER: cluster_pb2.Cluster,
    api.ROUTE: route_pb2.RouteConfiguration,
    api.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    api.SECRET: secret_pb2.Secret,
}

RESOURCE_WRAPPER = api.TYPE_PREFIX + "envoy.service.discovery.v3.Resource"

# Short names for logs and error messages, as Envoy's subscription names them.
SHORT_NAMES = {
    api.LISTENER: "LDS",
    api.CLUSTER: "CDS",
    api.ROUTE: "RDS",
    api.ENDPOINT: "EDS",
    api.SECRET: "SDS",
}


class ResourceDecodeError(ValueError):
    """A resource that cannot be decoded; `name` is its name if known, else ``#<index>``."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def resource_name(msg: Message) -> str:
    """The name an xDS resource is known by (ClusterLoadAssignment uses cluster_name)."""
    if isinstance(msg, endpoint_pb2.ClusterLoadAssignment):
        return msg.cluster_name
    return msg.name  # type: ignore[attr-defined]


def decode_any(type_url: str, packed: any_pb2.Any, where: str) -> Message:
    """Unpack one resource of `type_url`; raise ResourceDecodeError naming `where` on any problem."""
    cls = MESSAGE_TYPES.get(type_url)
    if cls is None:
        raise ResourceDecodeError(where, f"unsupported type URL {type_url}")
    if packed.type_url == RESOURCE_WRAPPER:
        wrapper = discovery_pb2.Resource()
        try:
            wrapper.ParseFromString(packed.value)
        except DecodeError as e:
            raise ResourceDecodeError(where, f"malformed Resource wrapper: {e}") from None
        packed = wrapper.resource
    if packed.type_url != type_url:
        raise ResourceDecodeError(where, f"resource has type {packed.type_url!r}, expected {type_url!r}")
    msg = cls()
    try:
        msg.ParseFromString(packed.value)
    except DecodeError as e:
        raise ResourceDecodeError(where, f"malformed {cls.DESCRIPTOR.full_name}: {e}") from None
    return msg


def decode_sotw(type_url: str, resources) -> dict[str, Message]:
    """Decode a DiscoveryResponse's resources into {name: message}.

    Raises ResourceDecodeError for the first bad resource, an empty name, or a duplicate name
    (Envoy rejects a response that names a resource twice)."""
    out: dict[str, Message] = {}
    for i, packed in enumerate(resources):
        msg = decode_any(type_url, packed, f"resources[{i}]")
        name = resource_name(msg)
        if not name:
            raise ResourceDecodeError(f"resources[{i}]", "resource has no name")
        if name in out:
            raise ResourceDecodeError(name, "duplicate resource name in one response")
        out[name] = msg
    return out
