"""JSON views of the xDS server for pilot's debug pages (``/debug/syncz``, ``/debug/config_dump``).

``syncz`` has one entry per connected stream, like Istio's: ``proxy``, its type and namespace, the
status per type (``cds``/``lds``/``eds``/``rds``: SYNCED, STALE, NOT SENT or NACKED), the error of a
NACK, versions and nonces (``types``), and ``admin``: where that proxy's Envoy admin is, used by
``isthmus proxy-config``. ``admin`` comes from the node metadata key ``ISTHMUS_ADMIN`` (``host:port``;
an Isthmus addition) or else is ``<first instance IP>:15000``, as each local workload has its own
loopback address and the standard ports.
"""

from __future__ import annotations

import datetime as dt

from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from google.protobuf import json_format

from pilot.model.proxy import GRPC
from pilot.model.push_context import PushContext
from pilot.xds import resources
from pilot.xds.connection import Connection
from pilot.xds.generators import Generators
from pilot.xds.status import NOT_SENT

ADMIN_PORT = 15000
STATUS_TYPES = (resources.CLUSTER, resources.LISTENER, resources.ENDPOINT, resources.ROUTE)


def admin_address(conn: Connection) -> str:
    explicit = conn.proxy.metadata.get("ISTHMUS_ADMIN")
    if explicit:
        return str(explicit)
    if conn.proxy.type == GRPC or not conn.proxy.ip_addresses:
        return ""
    return f"{conn.proxy.ip_addresses[0]}:{ADMIN_PORT}"


def display_name(conn: Connection) -> str:
    """istioctl's NAME column: ``<pod>.<namespace>``; a gRPC client by its node id."""
    if conn.proxy.type == GRPC:
        return conn.proxy.id
    return f"{conn.proxy.name}.{conn.proxy.namespace}"


def syncz_entry(conn: Connection, pilot_id: str) -> dict:
    entry = {
        "name": display_name(conn),
        "proxy": conn.proxy.id,
        "proxy_type": conn.proxy.type,
        "namespace": conn.proxy.namespace,
        "conn_id": conn.conn_id,
        "stream": "delta" if conn.delta else "sotw",
        "peer": conn.peer,
        "connected_at": dt.datetime.fromtimestamp(conn.connected_at, dt.UTC).isoformat(),
        "cluster_id": str(conn.proxy.metadata.get("CLUSTER_ID") or "Kubernetes"),
        "istio_version": str(conn.proxy.metadata.get("ISTIO_VERSION") or ""),
        "istiod": pilot_id,
        "admin": admin_address(conn),
        "types": {},
    }
    for type_url in STATUS_TYPES:
        short = resources.short_name(type_url)
        watch = conn.watches.get(type_url)
        entry[short.lower()] = watch.status if watch else NOT_SENT
        if watch is not None:
            entry["types"][short] = watch.to_json()
    return entry


def syncz(connections: list[Connection], pilot_id: str) -> list[dict]:
    return [syncz_entry(c, pilot_id) for c in sorted(connections, key=lambda c: (display_name(c), c.conn_id))]


def config_dump(conn: Connection, push: PushContext, generators: Generators) -> dict:
    """What pilot would send this proxy now, as an ``envoy.admin.v3.ConfigDump`` (JSON, proto names)."""
    dump = config_dump_pb2.ConfigDump()
    version = push.version

    def names(type_url: str) -> list[str] | None:
        watch = conn.watches.get(type_url)
        if watch is None or watch.wildcard or type_url in resources.WILDCARD_TYPES:
            return None
        return sorted(watch.names)

    clusters = config_dump_shared_pb2.ClustersConfigDump(version_info=version)
    for c in generators.generate(resources.CLUSTER, conn.proxy, push, None):
        item = clusters.dynamic_active_clusters.add(version_info=version)
        item.cluster.Pack(c)
    listeners = config_dump_shared_pb2.ListenersConfigDump(version_info=version)
    for listener in generators.generate(resources.LISTENER, conn.proxy, push, None):
        item = listeners.dynamic_listeners.add(name=listener.name)
        item.active_state.version_info = version
        item.active_state.listener.Pack(listener)
    routes = config_dump_shared_pb2.RoutesConfigDump()
    for route in generators.generate(resources.ROUTE, conn.proxy, push, names(resources.ROUTE)):
        item = routes.dynamic_route_configs.add(version_info=version)
        item.route_config.Pack(route)
    endpoints = config_dump_shared_pb2.EndpointsConfigDump()
    for cla in generators.generate(resources.ENDPOINT, conn.proxy, push, names(resources.ENDPOINT)):
        item = endpoints.dynamic_endpoint_configs.add(version_info=version)
        item.endpoint_config.Pack(cla)
    for section in (clusters, listeners, routes, endpoints):
        dump.configs.add().Pack(section)
    return json_format.MessageToDict(dump, preserving_proto_field_name=True)
