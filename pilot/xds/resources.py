"""Type URLs, resource names and per-resource version hashes (pure)."""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message

TYPE_PREFIX = "type.googleapis.com/"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ROUTE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
ENDPOINT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# Short names, as istioctl and Istio's metrics label them.
SHORT = {CLUSTER: "CDS", LISTENER: "LDS", ROUTE: "RDS", ENDPOINT: "EDS", SECRET: "SDS"}
# Order in which a full push sends types, as Envoy wants them: CDS before EDS, LDS before RDS.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
# Types whose empty subscription means "everything" (SotW and Delta wildcard).
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})


def short_name(type_url: str) -> str:
    return SHORT.get(type_url, type_url.rsplit(".", 1)[-1])


def resource_name(message: Message) -> str:
    """The xDS name of a resource: ``name``, or ``cluster_name`` for a ClusterLoadAssignment."""
    if message.DESCRIPTOR.full_name == "envoy.config.endpoint.v3.ClusterLoadAssignment":
        return message.cluster_name
    return message.name


def resource_version(message: Message) -> str:
    """A content hash: equal resources get equal versions, so Delta sends only what changed."""
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()[:16]


def cluster_host(cluster_name: str) -> str | None:
    """The service host of an Istio cluster name ``outbound|port|subset|host`` (None for others)."""
    parts = cluster_name.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound"):
        return parts[3] or None
    return None
