"""ratelimit filter with a fake RateLimitService client: descriptors from the route, OK/OVER_LIMIT,
errors with and without failure_mode_deny, stats on the route's cluster, defaults."""

from __future__ import annotations

import asyncio

import grpc
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import json_format

from proxy.config.context import FactoryContext
from proxy.filters.http.base import CONTINUE, STOP
from proxy.filters.http.ratelimit import DEFAULT_TIMEOUT, RateLimitConfig, RateLimitFilter
from proxy.stats.store import Store
from tests.unit.proxy.filters.http.fakes import (
    FakeCluster,
    FakeClusterManager,
    FakeStream,
    request,
    route_for,
)


class FakeRls:
    def __init__(self, responses):
        self.responses = list(responses)
        self.requests = []
        self.timeouts = []

    def stub(self, cls):
        return self

    async def ShouldRateLimit(self, req, timeout=None, metadata=None):
        self.requests.append(req)
        self.timeouts.append(timeout)
        r = self.responses.pop(0)
        if isinstance(r, BaseException):
            raise r
        return r


OK = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
OVER = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OVER_LIMIT)
UNAVAILABLE = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())

ROUTES = {
    "virtual_hosts": [
        {
            "name": "vh",
            "domains": ["*"],
            "rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "vh"}}]}],
            "routes": [
                {
                    "match": {"prefix": "/limited"},
                    "route": {
                        "cluster": "productpage",
                        "rate_limits": [
                            {
                                "actions": [
                                    {"destination_cluster": {}},
                                    {
                                        "request_headers": {
                                            "header_name": "end-user",
                                            "descriptor_key": "user",
                                        }
                                    },
                                ]
                            }
                        ],
                    },
                },
                {"match": {"prefix": "/"}, "route": {"cluster": "details"}},
            ],
        }
    ]
}


def make(responses, **cfg):
    store = Store()
    ctx = FactoryContext(stats=store, cluster_manager=FakeClusterManager(FakeCluster("mixer", store)))
    msg = json_format.ParseDict(
        {
            "domain": "bookinfo",
            "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}}},
            **cfg,
        },
        rate_limit_pb2.RateLimit(),
    )
    client = FakeRls(responses)
    return RateLimitConfig(msg, ctx, "f", client=client), client, store


def run(cfg, path="/limited", **headers):
    h = request(path, **headers)
    s = FakeStream(h, route_for(ROUTES, h))
    status = asyncio.run(RateLimitFilter(cfg).on_request_headers(s, True))
    return status, s


def test_route_descriptors_are_sent_and_ok_continues():
    cfg, client, store = make([OK])
    status, _ = run(cfg, end_user="jason")
    assert status is CONTINUE
    req = client.requests[0]
    assert req.domain == "bookinfo"
    assert [[(e.key, e.value) for e in d.entries] for d in req.descriptors] == [
        [("destination_cluster", "productpage"), ("user", "jason")]
    ]
    assert client.timeouts == [DEFAULT_TIMEOUT] == [0.02]
    assert store.counter("cluster.productpage.ratelimit.ok").value == 1


def test_virtual_host_limits_apply_when_the_route_has_none():
    cfg, client, _ = make([OK])
    run(cfg, "/other")
    assert [(e.key, e.value) for e in client.requests[0].descriptors[0].entries] == [("generic_key", "vh")]


def test_no_descriptor_means_no_call():
    cfg, client, _ = make([])
    status, _ = run(cfg)  # no end-user header: the route's only descriptor is dropped
    assert status is CONTINUE and client.requests == []


def test_over_limit_gives_429_rl_and_the_header():
    cfg, _, store = make([OVER])
    status, s = run(cfg, end_user="jason")
    assert status is STOP
    code, body, flag, details, headers = s.local_reply
    assert (code, flag, details) == (429, "RL", "request_rate_limited")
    assert headers == {"x-envoy-ratelimited": "true"}
    assert store.counter("cluster.productpage.ratelimit.over_limit").value == 1


def test_errors_allow_by_default_and_deny_with_failure_mode_deny():
    cfg, _, store = make([UNAVAILABLE])
    assert run(cfg, end_user="j")[0] is CONTINUE
    assert store.counter("cluster.productpage.ratelimit.error").value == 1
    assert store.counter("cluster.productpage.ratelimit.failure_mode_allowed").value == 1
    cfg, _, _ = make([UNAVAILABLE], failure_mode_deny=True)
    status, s = run(cfg, end_user="j")
    assert status is STOP and s.local_reply[:3] == (500, b"", "RLSE")


def test_unknown_overall_code_counts_as_an_error():
    cfg, _, store = make([rls_pb2.RateLimitResponse()])
    assert run(cfg, end_user="j")[0] is CONTINUE
    assert store.counter("cluster.productpage.ratelimit.error").value == 1


def test_config_errors():
    import pytest

    from proxy.config.errors import ConfigError

    for cfg, field in (
        ({"domain": ""}, "domain"),
        ({"request_type": "internal"}, "request_type"),
        ({"enable_x_ratelimit_headers": "DRAFT_VERSION_03"}, "enable_x_ratelimit_headers"),
        ({"rate_limited_as_resource_exhausted": True}, "rate_limited_as_resource_exhausted"),
    ):
        with pytest.raises(ConfigError) as e:
            make([], **cfg)
        assert field in e.value.path
