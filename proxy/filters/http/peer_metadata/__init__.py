"""``istio.metadata_exchange``: Istio's peer metadata filter (typed config
``io.istio.http.peer_metadata.Config``, api/io/istio/http/peer_metadata/config.proto).

It lets each side of a call learn the other's workload, for telemetry (mixer's Istio labels), with
the ``istio_headers`` method (``x-envoy-peer-metadata`` / ``x-envoy-peer-metadata-id``, see
``exchange.py``). As Istio's filter:

* request headers: ``downstream_discovery`` reads the caller's headers (the first method that finds
  a peer wins) into ``filter_state["downstream_peer"]`` / ``["downstream_peer_id"]`` and removes them,
  so the application never sees them; then ``upstream_propagation`` sets our own metadata on the
  request (replacing whatever the application sent), unless the route's cluster is outside the mesh
  and ``skip_external_clusters`` is set (``PassthroughCluster``, or cluster ``filter_metadata``
  ``istio.external: true``), or the cluster says ``istio.disable_mx: true``;
* response headers: ``upstream_discovery`` reads the callee's headers into
  ``filter_state["upstream_peer"]`` / ``["upstream_peer_id"]`` and removes them; then
  ``downstream_propagation`` adds our metadata to the response, but only when the request carried the
  headers itself (a caller outside the mesh learns nothing about us).

Our own metadata is the bootstrap node's: ``NAMESPACE``, ``WORKLOAD_NAME``, ``SERVICE_ACCOUNT``,
``CLUSTER_ID``, ... and the app/version ``LABELS`` (``exchange.shared_metadata``), encoded once per
config. ``baggage`` and ``workload_discovery`` methods and ``shared_with_upstream`` are not
implemented and are rejected by path.
"""

from __future__ import annotations

from google.protobuf import json_format

from api.io.istio.http.peer_metadata import config_pb2
from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import HTTP_FILTERS
from proxy.filters.http.base import CONTINUE, FilterStatus, HttpFilter, sync_request_hook
from proxy.filters.http.peer_metadata import exchange
from proxy.filters.http.peer_metadata.exchange import (
    DOWNSTREAM_PEER,
    DOWNSTREAM_PEER_ID,
    PEER_METADATA_HEADER,
    PEER_METADATA_ID_HEADER,
    UPSTREAM_PEER,
    UPSTREAM_PEER_ID,
    PeerCache,
)

FILTER_NAME = "istio.metadata_exchange"
EXCHANGE_HEADERS = frozenset((PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER))
PASSTHROUGH_CLUSTER = "PassthroughCluster"


def _methods(methods, path: str, kinds: tuple[str, ...]) -> tuple[bool, bool]:
    """(istio_headers configured, its skip_external_clusters); other methods are rejected."""
    found, skip = False, False
    for i, m in enumerate(methods):
        kind = m.WhichOneof("method_specifier")
        if kind == "istio_headers":
            found = True
            skip = skip or m.istio_headers.skip_external_clusters
        elif kind in kinds:
            raise ConfigError(
                f"{path}[{i}].{kind}", f"peer metadata method '{kind}' is not supported by Isthmus yet"
            )
        else:
            raise ConfigError(f"{path}[{i}]", "a method needs one of: " + ", ".join(kinds))
    return found, skip


class PeerMetadataConfig:
    """The parsed config, shared by every stream of a listener."""

    def __init__(self, msg: config_pb2.Config, node_id: str, node_metadata: dict, path: str, cm=None):
        if msg.shared_with_upstream:
            raise ConfigError(
                f"{path}.shared_with_upstream", "sharing the peer with the upstream is not supported yet"
            )
        discovery_kinds = ("baggage", "workload_discovery", "istio_headers")
        self.downstream_discovery, _ = _methods(
            msg.downstream_discovery, f"{path}.downstream_discovery", discovery_kinds
        )
        self.upstream_discovery, _ = _methods(
            msg.upstream_discovery, f"{path}.upstream_discovery", discovery_kinds
        )
        self.downstream_propagation, _ = _methods(
            msg.downstream_propagation, f"{path}.downstream_propagation", ("istio_headers",)
        )
        self.upstream_propagation, self.skip_external = _methods(
            msg.upstream_propagation, f"{path}.upstream_propagation", ("istio_headers",)
        )
        for i, label in enumerate(msg.additional_labels):
            if not label:
                raise ConfigError(f"{path}.additional_labels[{i}]", "a label name must not be empty")
        self.id = node_id
        self.value = exchange.encode(exchange.shared_metadata(node_metadata, msg.additional_labels))
        # Both response headers, in the order they are set one by one (id, then metadata).
        self.both_headers = ((PEER_METADATA_ID_HEADER, node_id), (PEER_METADATA_HEADER, self.value))
        self.peers = PeerCache()
        self.cluster_manager = cm
        self._mx_disabled: dict[str, bool] = {}

    def discover(self, headers, state: dict, peer_key: str, id_key: str) -> tuple[bool, bool]:
        """Read and remove the exchange headers; store the peer (first discovery wins). Returns
        whether the id and the metadata headers were present. One pass over the headers; nothing
        is rebuilt when neither is there."""
        value, peer_id = headers.take(PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER)
        if value is None and peer_id is None:
            return False, False
        if value is not None:
            peer = self.peers.lookup(value)
            if peer is not None and peer_key not in state:
                state[peer_key] = peer
                if peer_id:
                    state[id_key] = peer_id
        return peer_id is not None, value is not None

    def skip_upstream(self, stream) -> bool:
        route = stream.route
        action = getattr(route, "action", None) if route is not None else None
        cluster = getattr(action, "cluster", "") if action is not None else ""
        if not cluster:
            return False
        if cluster == PASSTHROUGH_CLUSTER and self.skip_external:
            return True
        return self._cluster_says_skip(cluster)

    def _cluster_says_skip(self, name: str) -> bool:
        cached = self._mx_disabled.get(name)
        if cached is None:
            cached = False
            cluster = self.cluster_manager.get(name) if self.cluster_manager is not None else None
            proto = getattr(cluster, "proto", None)
            if proto is not None and "istio" in proto.metadata.filter_metadata:
                fields = proto.metadata.filter_metadata["istio"].fields
                disabled = "disable_mx" in fields and fields["disable_mx"].bool_value
                external = "external" in fields and fields["external"].bool_value
                cached = disabled or (self.skip_external and external)
            if len(self._mx_disabled) < 4096:
                self._mx_disabled[name] = cached
        return cached


class _PeerMetadataRequestFilter(HttpFilter):
    """The filter once its request hook found nothing to do on the response (no upstream discovery,
    no peer headers received): without a response hook the connection manager keeps its
    whole-response fast path. ``PeerMetadataFilter`` becomes this class then (same slots)."""

    __slots__ = ("config", "_peer_id_received", "_peer_received")

    def __init__(self, config: PeerMetadataConfig) -> None:
        self.config = config
        self._peer_id_received = False
        self._peer_received = False

    def decode_headers_sync(self, stream, end_stream: bool) -> FilterStatus:
        """The request hook, synchronous (the connection manager calls it without a coroutine)."""
        cfg = self.config
        headers = stream.request_headers
        info = stream.stream_info
        if info.downstream_ssl is None:
            # Until the HCM records the connection's TLS facts itself (StreamInfo.downstream_ssl),
            # the filter that feeds telemetry does: principals belong with the peer it discovers.
            info.downstream_ssl = getattr(stream.connection, "ssl", None)
        if cfg.downstream_discovery:
            self._peer_id_received, self._peer_received = cfg.discover(
                headers, stream.stream_info.filter_state, DOWNSTREAM_PEER, DOWNSTREAM_PEER_ID
            )
        else:  # (a factory-made filter starts with neither set: no __init__ frame)
            self._peer_id_received = self._peer_received = False
        if cfg.upstream_propagation and not cfg.skip_upstream(stream):
            headers.set(PEER_METADATA_ID_HEADER, cfg.id)
            headers.set(PEER_METADATA_HEADER, cfg.value)
        if not cfg.upstream_discovery:
            # Nothing to read on the response: our headers (for a caller that sent its own) are set by
            # the connection manager, and the filter needs no response hook.
            if cfg.downstream_propagation and (self._peer_id_received or self._peer_received):
                if self._peer_id_received and self._peer_received:
                    pairs = cfg.both_headers
                elif self._peer_id_received:
                    pairs = ((PEER_METADATA_ID_HEADER, cfg.id),)
                else:
                    pairs = ((PEER_METADATA_HEADER, cfg.value),)
                before = stream.response_headers_to_set
                stream.response_headers_to_set = (*before, *pairs) if before else pairs
            cls = self._request_only
            if self.__class__ is not cls:  # (a factory-made inbound filter is that class already)
                self.__class__ = cls
        return CONTINUE

    on_request_headers = sync_request_hook


class PeerMetadataFilter(_PeerMetadataRequestFilter):
    __slots__ = ()

    async def on_response_headers(self, stream, headers, end_stream: bool) -> FilterStatus:
        cfg = self.config
        if cfg.upstream_discovery:
            cfg.discover(headers, stream.stream_info.filter_state, UPSTREAM_PEER, UPSTREAM_PEER_ID)
        if cfg.downstream_propagation and (self._peer_id_received or self._peer_received):
            if self._peer_id_received and self._peer_received:
                headers.set_many(cfg.both_headers)
            elif self._peer_id_received:
                headers.set(PEER_METADATA_ID_HEADER, cfg.id)
            else:
                headers.set(PEER_METADATA_HEADER, cfg.value)
        return CONTINUE


_PeerMetadataRequestFilter._request_only = _PeerMetadataRequestFilter


class PeerMetadataFilterFactory:
    """``create`` is a filter class made for this config (``config`` a class attribute, no
    ``__init__`` of its own to run; the request hook sets both flags): a new per-stream filter costs
    no Python frame. Its request-only twin is made for the same config, and is what ``create`` makes
    when the config does no upstream discovery (the filter would become it on every request)."""

    __slots__ = ("config", "create")

    def __init__(self, config: PeerMetadataConfig) -> None:
        self.config = config
        bound = {"__slots__": (), "config": config, "__init__": object.__init__}
        request_only = type("PeerMetadataFilter", (_PeerMetadataRequestFilter,), dict(bound))
        request_only._request_only = request_only
        if config.upstream_discovery:
            self.create = type(
                "PeerMetadataFilter", (PeerMetadataFilter,), dict(bound, _request_only=request_only)
            )
        else:  # nothing is ever read on the response: the request-only class from the start
            self.create = request_only


def node_facts(ctx: FactoryContext | None) -> tuple[str, dict]:
    """(node id, node metadata as plain Python) from the bootstrap the server runs."""
    bootstrap = getattr(getattr(ctx, "server", None), "bootstrap", None)
    node = getattr(bootstrap, "node", None)
    if node is None:
        return "", {}
    md = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    return node.id, md


@HTTP_FILTERS.register(FILTER_NAME, config_pb2.Config)
def make_peer_metadata(
    config: config_pb2.Config, ctx: FactoryContext, path: str
) -> PeerMetadataFilterFactory:
    node_id, md = node_facts(ctx)
    cm = getattr(ctx, "cluster_manager", None)
    return PeerMetadataFilterFactory(PeerMetadataConfig(config, node_id, md, path, cm))
