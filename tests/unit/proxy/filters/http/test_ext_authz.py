"""ext_authz filter with a fake Authorization client: decisions, failure modes, per-route, and the cache."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.filters.http.base import CONTINUE, STOP
from proxy.filters.http.ext_authz import DEFAULT_TIMEOUT, ExtAuthzConfig
from proxy.filters.http.ext_authz.cache import CheckCache, Validity
from proxy.stats.store import Store
from tests.unit.proxy.filters.http.fakes import (
    FakeCluster,
    FakeClusterManager,
    FakeStream,
    request,
    route_for,
)


class FakeAuthz:
    def __init__(self, responses):
        self.responses = list(responses)
        self.requests = []
        self.timeouts = []

    def stub(self, cls):
        return self

    async def Check(self, req, timeout=None, metadata=None):
        self.requests.append(req)
        self.timeouts.append(timeout)
        r = self.responses.pop(0)
        if isinstance(r, BaseException):
            raise r
        return r


def ok(**md):
    r = external_auth_pb2.CheckResponse()
    r.status.code = 0
    h = r.ok_response.headers.add()
    h.header.key, h.header.value = "x-user-id", "42"
    if md:
        r.dynamic_metadata.update(md)
    return r


def denied(status=0, body="nope"):
    r = external_auth_pb2.CheckResponse()
    r.status.code = 7
    if status:
        r.denied_response.status.code = status
    r.denied_response.body = body
    return r


class RpcError(grpc.aio.AioRpcError):
    def __init__(self):
        super().__init__(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())


def make(responses, **cfg):
    store = Store()
    ctx = FactoryContext(stats=store, cluster_manager=FakeClusterManager(FakeCluster("mixer", store)))
    base = {} if "http_service" in cfg else {"grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}}}
    msg = json_format.ParseDict({**base, **cfg}, ext_authz_pb2.ExtAuthz())
    client = FakeAuthz(responses)
    return ExtAuthzConfig(msg, ctx, "f", client=client), client, store


ROUTES = {
    "virtual_hosts": [
        {"name": "vh", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "a"}}]}
    ]
}


def run(cfg, headers=None):
    h = headers or request("/p", end_user="jason")
    s = FakeStream(h, route_for(ROUTES, h))
    f = cfg_filter = type(cfg).__module__ and __import__(
        "proxy.filters.http.ext_authz", fromlist=["x"]
    ).ExtAuthzFilter(cfg)
    status = asyncio.run(f.on_request_headers(s, True))
    return status, s, cfg_filter


def stat(store, name):
    return store.counter(f"http.ingress.ext_authz.{name}").value


def test_ok_adds_headers_upstream_and_sends_the_attributes():
    cfg, client, store = make([ok()])
    status, s, _ = run(cfg)
    assert status is CONTINUE and s.request_headers.get("x-user-id") == "42"
    attrs = client.requests[0].attributes
    assert attrs.request.http.method == "GET" and attrs.request.http.path == "/p"
    assert (
        attrs.request.http.headers["end-user"] == "jason"
        and attrs.request.http.headers[":authority"] == "svc"
    )
    assert attrs.source.address.socket_address.address == "10.0.0.9" and attrs.source.principal == ""
    assert client.timeouts == [DEFAULT_TIMEOUT] and stat(store, "ok") == 1


def test_denied_uses_the_returned_status_or_403_with_uaex():
    cfg, _, store = make([denied(), denied(status=401, body="who")])
    _, s1, _ = run(cfg)
    _, s2, _ = run(cfg)
    assert s1.local_reply[:3] == (403, b"nope", "UAEX")
    assert s2.local_reply[:3] == (401, b"who", "UAEX")
    assert stat(store, "denied") == 2


def test_errors_fail_closed_or_open():
    cfg, _, store = make([RpcError()])
    status, s, _ = run(cfg)
    assert status is STOP and s.local_reply[:3] == (403, b"", "UAEX") and stat(store, "error") == 1
    cfg, _, store = make([RpcError()], failure_mode_allow=True, failure_mode_allow_header_add=True)
    status, s, _ = run(cfg)
    assert status is CONTINUE and s.local_reply is None
    assert s.request_headers.get("x-envoy-auth-failure-mode-allowed") == "true"
    assert stat(store, "failure_mode_allowed") == 1
    cfg, _, _ = make([RpcError()], status_on_error={"code": 503})
    assert run(cfg)[1].local_reply[0] == 503


def test_cache_honours_validity_and_referenced_attributes():
    cfg, client, store = make(
        [ok(valid_duration_ms=60000, referenced_attributes=["request.headers.end-user"]), ok()]
    )
    for path in ("/a", "/b", "/c"):
        assert run(cfg, request(path, end_user="jason"))[0] is CONTINUE
    assert len(client.requests) == 1 and stat(store, "cache_hit") == 2 and stat(store, "cache_miss") == 1
    run(cfg, request("/a", end_user="other"))  # another referenced value: a new check
    assert len(client.requests) == 2


def test_no_validity_no_cache():
    cfg, client, store = make([ok(), ok()])
    run(cfg)
    run(cfg)
    assert len(client.requests) == 2 and stat(store, "cache_hit") == 0


def test_cache_unit_duration_use_count_and_full_key_ignores_request_id():
    now = [0.0]
    cache = CheckCache(clock=lambda: now[0])
    a = {"request.path": "/", "request.id": "1", "request.headers.x-request-id": "1"}
    b = {"request.path": "/", "request.id": "2", "request.headers.x-request-id": "2"}
    cache.store(a, "r", Validity(duration=10, use_count=3, referenced=None))
    assert cache.lookup(b) == "r" and cache.lookup(a) == "r"
    assert cache.lookup(a) is None  # three uses, including the check itself
    cache.store(a, "r2", Validity(duration=1, use_count=None, referenced=None))
    now[0] = 1.5
    assert cache.lookup(a) is None  # expired
    cache.store(a, "x", Validity(None, None, None))
    assert len(cache) == 0


@pytest.mark.parametrize(
    "cfg, field",
    [
        ({"with_request_body": {"max_request_bytes": 10}}, "with_request_body"),
        ({"http_service": {"server_uri": {"uri": "x", "cluster": "c", "timeout": "1s"}}}, "http_service"),
        ({"include_peer_certificate": True}, "include_peer_certificate"),
        ({"transport_api_version": "V2"}, "transport_api_version"),
    ],
)
def test_unsupported_fields_are_config_errors(cfg, field):
    with pytest.raises(ConfigError) as e:
        make([], **cfg)
    assert field in e.value.path


def test_unknown_grpc_cluster_is_a_config_error():
    from types import SimpleNamespace

    ctx = FactoryContext(stats=Store(), cluster_manager=SimpleNamespace(get=lambda n: None))
    msg = json_format.ParseDict(
        {"grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}}}, ext_authz_pb2.ExtAuthz()
    )
    with pytest.raises(ConfigError, match="unknown gRPC client cluster 'mixer'"):
        ExtAuthzConfig(msg, ctx, "f")


def test_header_attribute_synonym_is_keyed_like_the_dotted_name():
    cfg, client, _ = make(
        [ok(valid_duration_ms=60000, referenced_attributes=["request.headers[End-User]"]), ok()]
    )
    run(cfg, request("/a", end_user="jason"))
    run(cfg, request("/a", end_user="evil"))  # a different user must not hit jason's result
    assert len(client.requests) == 2


def test_principals_come_from_the_tls_transport_info():
    from types import SimpleNamespace

    from proxy.filters.http.ext_authz.attributes import tls_principals

    info = SimpleNamespace(
        peer_uri_sans=("spiffe://cluster.local/ns/default/sa/productpage",), local_uri_sans=()
    )
    conn = SimpleNamespace(ssl=SimpleNamespace(info=info))
    assert tls_principals(conn) == ("spiffe://cluster.local/ns/default/sa/productpage", "")
    assert tls_principals(SimpleNamespace(ssl=None)) == ("", "")
