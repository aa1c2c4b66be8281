"""The ADS protocol state machines, SotW and Delta (sans-IO).

They take DiscoveryResponses in and give ``Received`` batches and DiscoveryRequests out; the client
(``proxy/xds/client.py``) moves the messages over gRPC and calls the handlers. Every rule of the
xDS protocol the proxy follows lives here:

* a fresh stream subscribes in ``api.SUBSCRIBE_ORDER`` (CDS, EDS, LDS, RDS, SDS), only for types with
  interest (wildcard, or at least one name);
* SotW: an ACK carries the response's version_info and nonce; a NACK the previous good version_info,
  the response's nonce and error_detail; a subscription change carries the full name list with the
  last version and nonce; a new stream carries the last good version (the server answers with the
  full set, so removals made while away are learned);
* Delta: subscribe/unsubscribe lists; wildcard is an explicit ``"*"``; a new stream carries
  ``initial_resource_versions`` of everything applied, so the server sends only what changed and
  names what was removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from proxy.xds import api
from proxy.xds.resources import ResourceDecodeError, decode_any, decode_sotw, resource_name

WILDCARD = "*"


@dataclass
class Received:
    """One response for one type: either a decoded `update` for the handler, or a `decode_error` to
    NACK without bothering the handler."""

    type_url: str
    nonce: str
    version_info: str
    update: api.ResourceUpdate | None
    decode_error: ResourceDecodeError | None = None


@dataclass
class _TypeState:
    wildcard: bool
    names: set[str] = field(default_factory=set)
    version_info: str = ""  # SotW: last accepted version
    nonce: str = ""  # last nonce received on this stream
    versions: dict[str, str] = field(default_factory=dict)  # Delta: applied resource -> version
    on_stream: set[str] = field(default_factory=set)  # Delta: names subscribed on this stream
    requested: bool = False  # a request went out for this type on the current stream

    def interested(self) -> bool:
        return self.wildcard or bool(self.names)


class _Base:
    def __init__(self, node: base_pb2.Node, node_on_first_message_only: bool = False) -> None:
        self._node = node
        self.node_on_first_message_only = node_on_first_message_only
        self._node_sent = False
        self.types: dict[str, _TypeState] = {}
        self.stream_active = False

    @property
    def node(self) -> base_pb2.Node | None:
        """The node for the next request: on every one (Envoy's default) or on the stream's first."""
        if self.node_on_first_message_only and self._node_sent:
            return None
        self._node_sent = True
        return self._node

    def add_type(self, type_url: str, wildcard: bool) -> None:
        if type_url in self.types:
            raise ValueError(f"type {type_url} is already registered")
        self.types[type_url] = _TypeState(wildcard=wildcard)

    def _ordered(self) -> list[str]:
        known = [t for t in api.SUBSCRIBE_ORDER if t in self.types]
        return known + sorted(t for t in self.types if t not in api.SUBSCRIBE_ORDER)

    def stream_lost(self) -> None:
        self.stream_active = False
        self._node_sent = False
        for st in self.types.values():
            st.nonce = ""
            st.requested = False
            st.on_stream = set()


class SotwProtocol(_Base):
    """State of the world: ``StreamAggregatedResources``."""

    delta = False

    def _request(self, type_url: str, st: _TypeState, **kw) -> discovery_pb2.DiscoveryRequest:
        st.requested = True
        return discovery_pb2.DiscoveryRequest(
            node=self.node,
            type_url=type_url,
            version_info=kw.pop("version_info", st.version_info),
            resource_names=[] if st.wildcard else sorted(st.names),
            response_nonce=kw.pop("response_nonce", st.nonce),
            **kw,
        )

    def start_stream(self) -> list[discovery_pb2.DiscoveryRequest]:
        self.stream_lost()
        self.stream_active = True
        return [self._request(t, self.types[t]) for t in self._ordered() if self.types[t].interested()]

    def set_interest(self, type_url: str, names: set[str]) -> discovery_pb2.DiscoveryRequest | None:
        st = self.types[type_url]
        if st.wildcard or names == st.names:
            return None
        st.names = set(names)
        if not self.stream_active:
            return None
        if not st.requested and not st.names:
            return None  # never subscribed on this stream: an empty list would mean wildcard
        return self._request(type_url, st)

    def on_response(self, resp: discovery_pb2.DiscoveryResponse) -> Received:
        st = self.types.get(resp.type_url)
        if st is None:
            return Received(
                resp.type_url,
                resp.nonce,
                resp.version_info,
                None,
                ResourceDecodeError(resp.type_url, "type URL not subscribed"),
            )
        st.nonce = resp.nonce
        try:
            resources = decode_sotw(resp.type_url, resp.resources)
        except ResourceDecodeError as e:
            return Received(resp.type_url, resp.nonce, resp.version_info, None, e)
        update = api.ResourceUpdate(
            type_url=resp.type_url,
            version_info=resp.version_info,
            resources=resources,
            delta=False,
            versions={name: resp.version_info for name in resources},
        )
        return Received(resp.type_url, resp.nonce, resp.version_info, update)

    def ack(self, rx: Received) -> discovery_pb2.DiscoveryRequest | None:
        st = self.types.get(rx.type_url)
        if st is None:
            return None
        st.version_info = rx.version_info
        return self._request(rx.type_url, st, response_nonce=rx.nonce)

    def nack(self, rx: Received, detail: status_pb2.Status) -> discovery_pb2.DiscoveryRequest:
        st = self.types.get(rx.type_url)
        if st is None:
            return discovery_pb2.DiscoveryRequest(
                node=self.node, type_url=rx.type_url, response_nonce=rx.nonce, error_detail=detail
            )
        return self._request(rx.type_url, st, response_nonce=rx.nonce, error_detail=detail)

    def accepted_version(self, type_url: str) -> str:
        return self.types[type_url].version_info


class DeltaProtocol(_Base):
    """Incremental: ``DeltaAggregatedResources``."""

    delta = True

    def start_stream(self) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        self.stream_lost()
        self.stream_active = True
        out = []
        for t in self._ordered():
            st = self.types[t]
            if not st.interested():
                continue
            st.on_stream = {WILDCARD} if st.wildcard else set(st.names)
            st.requested = True
            out.append(
                discovery_pb2.DeltaDiscoveryRequest(
                    node=self.node,
                    type_url=t,
                    resource_names_subscribe=sorted(st.on_stream),
                    initial_resource_versions=dict(st.versions),
                )
            )
        return out

    def set_interest(self, type_url: str, names: set[str]) -> discovery_pb2.DeltaDiscoveryRequest | None:
        st = self.types[type_url]
        if st.wildcard or names == st.names:
            return None
        gone = st.names - names
        st.names = set(names)
        for name in gone:
            # Forget what we had, so a later re-subscription is answered with the resource again.
            st.versions.pop(name, None)
        if not self.stream_active:
            return None
        subscribe = sorted(st.names - st.on_stream)
        unsubscribe = sorted(st.on_stream - st.names)
        if not subscribe and not unsubscribe:
            return None
        st.on_stream = set(st.names)
        st.requested = True
        return discovery_pb2.DeltaDiscoveryRequest(
            node=self.node,
            type_url=type_url,
            resource_names_subscribe=subscribe,
            resource_names_unsubscribe=unsubscribe,
        )

    def on_response(self, resp: discovery_pb2.DeltaDiscoveryResponse) -> Received:
        version = resp.system_version_info
        if resp.type_url not in self.types:
            err = ResourceDecodeError(resp.type_url, "type URL not subscribed")
            return Received(resp.type_url, resp.nonce, version, None, err)
        resources, versions = {}, {}
        try:
            for i, res in enumerate(resp.resources):
                where = res.name or f"resources[{i}]"
                if not res.HasField("resource"):
                    raise ResourceDecodeError(where, "resource has no body")
                msg = decode_any(resp.type_url, res.resource, where)
                name = res.name or resource_name(msg)
                if not name:
                    raise ResourceDecodeError(where, "resource has no name")
                if name in resources:
                    raise ResourceDecodeError(name, "duplicate resource name in one response")
                resources[name] = msg
                versions[name] = res.version
        except ResourceDecodeError as e:
            return Received(resp.type_url, resp.nonce, version, None, e)
        removed = set(resp.removed_resources) | {r.name for r in resp.removed_resource_names}
        update = api.ResourceUpdate(
            type_url=resp.type_url,
            version_info=version,
            resources=resources,
            removed=removed,
            delta=True,
            versions=versions,
        )
        return Received(resp.type_url, resp.nonce, version, update)

    def ack(self, rx: Received) -> discovery_pb2.DeltaDiscoveryRequest | None:
        st = self.types.get(rx.type_url)
        if st is None or rx.update is None:
            return None
        for name in rx.update.removed:
            st.versions.pop(name, None)
        for name, version in rx.update.versions.items():
            if st.wildcard or name in st.names:
                st.versions[name] = version
        st.version_info = rx.version_info
        return discovery_pb2.DeltaDiscoveryRequest(
            node=self.node, type_url=rx.type_url, response_nonce=rx.nonce
        )

    def nack(self, rx: Received, detail: status_pb2.Status) -> discovery_pb2.DeltaDiscoveryRequest:
        return discovery_pb2.DeltaDiscoveryRequest(
            node=self.node, type_url=rx.type_url, response_nonce=rx.nonce, error_detail=detail
        )

    def accepted_version(self, type_url: str) -> str:
        return self.types[type_url].version_info
