"""A small ADS client for tests: real gRPC (SotW or Delta) to a real pilot, driven step by step."""

from __future__ import annotations

import queue
import threading

import grpc

# Import what the resources carry so Any payloads unpack (and json_format can print them).
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2

PREFIX = "type.googleapis.com/"
CDS = PREFIX + "envoy.config.cluster.v3.Cluster"
EDS = PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = PREFIX + "envoy.config.listener.v3.Listener"
RDS = PREFIX + "envoy.config.route.v3.RouteConfiguration"


def node(node_id: str, metadata: dict | None = None) -> base_pb2.Node:
    md = struct_pb2.Struct()
    json_format.ParseDict(metadata or {}, md)
    return base_pb2.Node(id=node_id, cluster="test", metadata=md)


class AdsClient:
    def __init__(self, address: str, node_id: str, metadata: dict | None = None, delta: bool = False) -> None:
        self.node = node(node_id, metadata)
        self.delta = delta
        self.channel = grpc.insecure_channel(address)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self._requests: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        self.call = method(iter(self._requests.get, None))
        self._first = True
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as e:
            self.responses.put(e)

    def _with_node(self, request):
        if self._first:
            request.node.CopyFrom(self.node)
            self._first = False
        return request

    def request(self, type_url: str, names=(), nonce: str = "", version: str = "", error: str = "") -> None:
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version
        )
        if error:
            req.error_detail.code = 3
            req.error_detail.message = error
        self._requests.put(self._with_node(req))

    def delta_request(
        self, type_url: str, subscribe=(), unsubscribe=(), nonce: str = "", error: str = ""
    ) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
        )
        if error:
            req.error_detail.code = 3
            req.error_detail.message = error
        self._requests.put(self._with_node(req))

    def ack(self, response) -> None:
        if self.delta:
            self.delta_request(response.type_url, nonce=response.nonce)
        else:
            names = [] if response.type_url in (CDS, LDS) else resource_names(response)
            self.request(response.type_url, names, nonce=response.nonce, version=response.version_info)

    def recv(self, timeout: float = 15.0):
        item = self.responses.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item

    def recv_type(self, type_url: str, timeout: float = 15.0):
        """The next response; it must be of `type_url`."""
        response = self.recv(timeout)
        assert response.type_url == type_url, f"expected {type_url}, got {response.type_url}"
        return response

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()
        self.channel.close()


def unpack_all(response) -> list:
    from google.protobuf import symbol_database

    db = symbol_database.Default()
    out = []
    items = (
        [r.resource for r in response.resources]
        if hasattr(response, "system_version_info")
        else response.resources
    )
    for any_msg in items:
        cls = db.GetSymbol(any_msg.type_url.split("/", 1)[1])
        msg = cls()
        any_msg.Unpack(msg)
        out.append(msg)
    return out


def resource_names(response) -> list[str]:
    return [getattr(m, "cluster_name", "") or m.name for m in unpack_all(response)]


def route_names(listener_response) -> set[str]:
    """RDS route config names the listeners' HttpConnectionManagers ask for."""
    names = set()
    for listener in unpack_all(listener_response):
        chains = list(listener.filter_chains)
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        for chain in chains:
            for f in chain.filters:
                if f.typed_config.type_url.endswith("HttpConnectionManager"):
                    hcm = http_connection_manager_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        names.add(hcm.rds.route_config_name)
        if listener.HasField("api_listener"):
            hcm = http_connection_manager_pb2.HttpConnectionManager()
            listener.api_listener.api_listener.Unpack(hcm)
            if hcm.HasField("rds"):
                names.add(hcm.rds.route_config_name)
    return names
