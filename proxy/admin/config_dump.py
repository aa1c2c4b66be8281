"""``/config_dump``: an ``envoy.admin.v3.ConfigDump`` built from the running server, with Envoy's
``?resource=`` and ``?mask=`` semantics.

* no parameters: one Any per dump (Bootstrap, Clusters, Listeners, Routes), in Envoy's order; static
  resources under ``static_*``, xDS ones under ``dynamic_active_*``/``dynamic_warming_*`` (listeners:
  ``dynamic_listeners`` with active/warming/draining states) with their version_info and last_updated;
* ``include_eds``: adds the EndpointsConfigDump (inline assignments static, EDS ones dynamic);
* ``resource=<field>``: the elements of that repeated field of any dump (e.g. ``static_clusters``),
  each packed on its own;
* ``mask=<paths>``: a FieldMask (comma-separated paths) applied to each top-level dump, or to each
  resource when ``resource`` is given; paths that do not exist in a message select nothing there.
"""

from __future__ import annotations

from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from google.protobuf import field_mask_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message

HCM_TYPE = "type.googleapis.com/" + http_connection_manager_pb2.HttpConnectionManager.DESCRIPTOR.full_name


class ConfigDumpError(ValueError):
    """A bad query (unknown resource, bad mask): the admin answers with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _timestamp(t: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def _listeners(server) -> list:
    lm = getattr(server, "listener_manager", None)
    return list(getattr(lm, "listeners", None) or [])


def _listener_protos(server) -> list[Message]:
    lm = getattr(server, "listener_manager", None)
    if lm is not None and getattr(lm, "listeners", None) is not None:
        return [listener.proto for listener in lm.listeners]
    return list(server.bootstrap.static_resources.listeners)


def _cluster_protos(server) -> list[Message]:
    cm = getattr(server, "cluster_manager", None)
    protos = []
    clusters = getattr(cm, "clusters", None)
    if isinstance(clusters, dict) and clusters:
        protos = [getattr(c, "proto", None) for c in clusters.values() if not getattr(c, "dynamic", False)]
        if all(p is not None for p in protos):
            return protos
    return list(server.bootstrap.static_resources.clusters)


def _xds(server):
    return getattr(server, "xds", None)


def inline_route_configs(listener_protos) -> list[Message]:
    """The inline ``route_config`` of every HttpConnectionManager in these listeners."""
    out = []
    for listener in listener_protos:
        chains = list(listener.filter_chains)
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        for chain in chains:
            for f in chain.filters:
                if f.typed_config.type_url != HCM_TYPE:
                    continue
                hcm = http_connection_manager_pb2.HttpConnectionManager()
                if f.typed_config.Unpack(hcm) and hcm.HasField("route_config"):
                    out.append(hcm.route_config)
    return out


def build_dumps(server, include_eds: bool = False) -> list[Message]:
    """The top-level dump messages, in Envoy's order (endpoints only with ``?include_eds``)."""
    loaded = _timestamp(getattr(server, "start_time", 0.0))
    xds = _xds(server)
    bootstrap = config_dump_pb2.BootstrapConfigDump(last_updated=loaded)
    bootstrap.bootstrap.CopyFrom(server.bootstrap)

    clusters = config_dump_shared_pb2.ClustersConfigDump()
    for c in _cluster_protos(server):
        clusters.static_clusters.add(last_updated=loaded).cluster.Pack(c)
    cm = getattr(server, "cluster_manager", None)
    if xds is not None and cm is not None:
        clusters.version_info = xds.cds.version_info
        for c in cm.clusters.values():
            if getattr(c, "dynamic", False):
                d = clusters.dynamic_active_clusters.add(
                    version_info=c.version_info, last_updated=_timestamp(c.last_updated)
                )
                d.cluster.Pack(c.proto)
        for c in getattr(cm, "warming", {}).values():
            d = clusters.dynamic_warming_clusters.add(
                version_info=c.version_info, last_updated=_timestamp(c.last_updated)
            )
            d.cluster.Pack(c.proto)

    listeners = config_dump_shared_pb2.ListenersConfigDump()
    all_listeners = _listeners(server)
    static_protos = (
        [li.proto for li in all_listeners if not getattr(li, "dynamic", False)]
        if all_listeners
        else _listener_protos(server)
    )
    for lp in static_protos:
        listeners.static_listeners.add(last_updated=loaded).listener.Pack(lp)
    lm = getattr(server, "listener_manager", None)
    if xds is not None and lm is not None:
        listeners.version_info = xds.lds.version_info
        by_name: dict[str, config_dump_shared_pb2.ListenersConfigDump.DynamicListener] = {}

        def entry(name: str):
            if name not in by_name:
                by_name[name] = listeners.dynamic_listeners.add(name=name)
            return by_name[name]

        for li in all_listeners:
            if getattr(li, "dynamic", False):
                st = entry(li.name).active_state
                st.version_info = li.version_info
                st.last_updated.CopyFrom(_timestamp(li.last_updated))
                st.listener.Pack(li.proto)
        for li in getattr(lm, "warming", {}).values():
            st = entry(li.name).warming_state
            st.version_info = li.version_info
            st.last_updated.CopyFrom(_timestamp(li.last_updated))
            st.listener.Pack(li.proto)
        for li in getattr(lm, "draining_listeners", []):
            if getattr(li, "dynamic", False):
                st = entry(li.name).draining_state
                st.version_info = li.version_info
                st.last_updated.CopyFrom(_timestamp(li.last_updated))
                st.listener.Pack(li.proto)

    routes = config_dump_shared_pb2.RoutesConfigDump()
    for rc in inline_route_configs(
        static_protos + [li.proto for li in all_listeners if getattr(li, "dynamic", False)]
    ):
        routes.static_route_configs.add(last_updated=loaded).route_config.Pack(rc)
    if xds is not None:
        for sub in xds.rds.subscriptions.values():
            if sub.received and sub.proto is not None:
                d = routes.dynamic_route_configs.add(
                    version_info=sub.version_info, last_updated=_timestamp(sub.last_updated)
                )
                d.route_config.Pack(sub.proto)

    dumps: list[Message] = [bootstrap, clusters]
    if include_eds:
        dumps.append(_endpoints_dump(server, loaded))
    dumps += [listeners, routes]
    secret_manager = getattr(server, "secret_manager", None)
    if secret_manager is not None and (secret_manager.secrets or secret_manager.watchers):
        from proxy.tls.admin import secrets_config_dump  # private keys redacted

        dumps.append(secrets_config_dump(secret_manager))
    return dumps


def _endpoints_dump(server, loaded) -> Message:
    """EndpointsConfigDump: inline load assignments are static; EDS ones dynamic, with their version."""
    out = config_dump_shared_pb2.EndpointsConfigDump()
    cm = getattr(server, "cluster_manager", None)
    for c in list(getattr(cm, "clusters", {}).values()):
        assignment = getattr(c, "assignment", None)
        if getattr(c, "type_name", "") == "EDS":
            if assignment is not None:
                d = out.dynamic_endpoint_configs.add(
                    version_info=c.assignment_version, last_updated=_timestamp(c.assignment_updated)
                )
                d.endpoint_config.Pack(assignment)
        elif c.proto.HasField("load_assignment"):
            la = endpoint_pb2.ClusterLoadAssignment()
            la.CopyFrom(c.proto.load_assignment)
            if not la.cluster_name:
                la.cluster_name = c.name
            out.static_endpoint_configs.add(last_updated=loaded).endpoint_config.Pack(la)
    return out


def _parse_mask(mask: str) -> list[str]:
    paths = [p.strip() for p in mask.split(",") if p.strip()]
    if not paths:
        raise ConfigDumpError(400, "mask must name at least one field")
    return paths


def trim(message: Message, paths: list[str]) -> Message:
    """A copy of `message` holding only the fields named by `paths` (valid for its type)."""
    valid = [p for p in paths if field_mask_pb2.FieldMask(paths=[p]).IsValidForDescriptor(message.DESCRIPTOR)]
    out = type(message)()
    if valid:
        field_mask_pb2.FieldMask(paths=valid).MergeMessage(message, out)
    return out


def build_config_dump(
    server, resource: str | None = None, mask: str | None = None, include_eds: bool = False
) -> config_dump_pb2.ConfigDump:
    dumps = build_dumps(server, include_eds)
    paths = _parse_mask(mask) if mask is not None else None
    out = config_dump_pb2.ConfigDump()
    if resource:
        found = False
        for dump in dumps:
            field = dump.DESCRIPTOR.fields_by_name.get(resource)
            if field is None:
                continue
            if not field.is_repeated or field.message_type is None:
                raise ConfigDumpError(
                    400, f"{resource} is not a repeated field; use ?mask={resource} instead"
                )
            found = True
            for item in getattr(dump, resource):
                out.configs.add().Pack(trim(item, paths) if paths else item)
        if not found:
            raise ConfigDumpError(404, f"{resource} not found in config dump")
        return out
    for dump in dumps:
        out.configs.add().Pack(trim(dump, paths) if paths else dump)
    return out


def config_dump_json(
    server, resource: str | None = None, mask: str | None = None, include_eds: bool = False
) -> str:
    dump = build_config_dump(server, resource, mask, include_eds)
    return json_format.MessageToJson(dump, preserving_proto_field_name=True, indent=1) + "\n"
