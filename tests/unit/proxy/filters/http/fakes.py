"""Small fakes of the HCM's HttpStream and the upstream cluster, for router and fault filter tests."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from proxy.config.context import FactoryContext
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo
from proxy.router import compile_route_configuration
from proxy.stats.store import Store
from proxy.upstream.cluster_stats import ClusterStats
from proxy.upstream.host import Host
from proxy.upstream.resources import ResourceManager


class FakeStream:
    def __init__(self, headers: Headers, route, body: list[bytes] | None = None, stat_prefix="ingress"):
        self.request_headers = headers
        self.stream_info = StreamInfo(downstream_remote_address=("10.0.0.9", 4242), request_headers=headers)
        self.connection = SimpleNamespace(remote_address=("10.0.0.9", 4242))
        self.config = SimpleNamespace(stat_prefix=stat_prefix, buffer_limit=1024 * 1024)
        self._route = route
        self._body = body or []
        self.local_reply = None
        self.response_headers: Headers | None = None
        self.response_end = False
        self.data: list[bytes] = []
        self.upgraded = None
        self.response_headers_to_set = None

    def apply_response_headers_to_set(self, headers: Headers) -> None:
        """What the connection manager does when it writes the response head."""
        for name, value in self.response_headers_to_set or ():
            headers.set(name, value)

    @property
    def route(self):
        return self._route

    def clear_route_cache(self):
        pass

    async def request_body(self):
        for c in self._body:
            yield c

    async def encode_headers(self, headers, end_stream):
        self.response_headers = headers
        self.response_end = end_stream
        self.stream_info.response_code = headers.status

    async def encode_data(self, data, end_stream):
        self.data.append(data)
        self.response_end = end_stream

    async def send_local_reply(self, status, body=b"", *, flag=None, details="", headers=None):
        if isinstance(body, str):
            body = body.encode()
        self.local_reply = (status, body, flag, details, dict(headers or {}))
        if flag:
            self.stream_info.set_flag(flag)
        self.stream_info.response_code = status
        self.stream_info.response_code_details = details

    async def upgrade(self, duplex):
        self.upgraded = duplex


class FakeResponse:
    def __init__(self, status=200, headers=(), body=(b"ok",), duplex=None):
        self.headers = Headers([(":status", str(status)), *headers])
        self.status = status
        self._body = list(body)
        self.duplex = duplex
        self.discarded = False

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for c in self._body:
            yield c

    def discard(self):
        self.discarded = True


class FakePool:
    """Answers with the scripted outcomes in order: a FakeResponse, an exception, or ('hang',)."""

    def __init__(self, cluster):
        self.cluster = cluster

    async def request(self, headers, body=None):
        if not isinstance(body, (bytes, type(None))):
            body = b"".join([c async for c in body])
        self.cluster.requests.append((headers.copy(), body))
        outcome = self.cluster.script.pop(0) if self.cluster.script else FakeResponse()
        if outcome == "hang":
            await asyncio.sleep(3600)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class FakeCluster:
    def __init__(self, name, store, script=(), hosts=1, hostname="", max_retries=3):
        self.name = name
        self.stats = ClusterStats(store.scope(f"cluster.{name}."))
        self.resources = ResourceManager(None, max_retries=max_retries)
        self.script = list(script)
        self.requests: list = []
        self.hosts = [Host(("127.0.0.1", 9000 + i), hostname=hostname) for i in range(hosts)]
        self.lb_contexts = []

    def choose_host(self, ctx):
        self.lb_contexts.append(ctx)
        return self.hosts[0] if self.hosts else None

    def http_pool(self, host):
        return FakePool(self)


class FakeClusterManager:
    def __init__(self, *clusters):
        self.clusters = {c.name: c for c in clusters}

    def get(self, name):
        return self.clusters.get(name)


def route_for(cfg: dict, headers: Headers):
    table = compile_route_configuration(json_format.ParseDict(cfg, route_pb2.RouteConfiguration()), "rc")
    return table.match(headers)


def request(path="/", authority="svc", method="GET", **extra) -> Headers:
    h = Headers([(":method", method), (":path", path), (":authority", authority), (":scheme", "http")])
    for k, v in extra.items():
        h.add(k.replace("_", "-"), v)
    return h


def context(*clusters) -> tuple[FactoryContext, Store]:
    store = Store()
    return FactoryContext(stats=store, cluster_manager=FakeClusterManager(*clusters)), store
