import asyncio

import pytest

from proxy.filters.http.base import STOP
from proxy.filters.http.router.filter import RouterConfig, RouterFilter
from proxy.upstream.errors import PoolOverflow, UpstreamConnectError, UpstreamResetError
from tests.unit.proxy.filters.http.fakes import (
    FakeCluster,
    FakeResponse,
    FakeStream,
    context,
    request,
    route_for,
)


def vhost(routes, **extra):
    return {"virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": routes, **extra}]}


def cluster_route(action=None, match=None, **extra):
    return vhost(
        [
            {
                "name": "r1",
                "match": match or {"prefix": "/"},
                "route": action or {"cluster": "backend"},
                **extra,
            }
        ]
    )


async def run(cfg, headers=None):
    headers = headers or request()
    ctx, store = context()
    router = RouterFilter(RouterConfig(ctx))
    stream = FakeStream(headers, route_for(cfg, headers))
    assert await router.on_request_headers(stream, True) is STOP
    return stream, store


def counter(store, name):
    c = store.counters.get(name)
    return c.value if c else 0


async def test_no_route_is_404_nr():
    stream, store = await run(
        vhost([{"match": {"prefix": "/api"}, "route": {"cluster": "x"}}]), headers=request("/other")
    )
    assert stream.local_reply[:4] == (404, b"", "NR", "route_not_found")
    assert stream.stream_info.flags_string() == "NR"
    assert counter(store, "http.ingress.no_route") == 1


async def test_unknown_cluster_is_503_nc():
    stream, store = await run(cluster_route({"cluster": "missing"}))
    assert stream.local_reply[:4] == (503, b"", "NC", "cluster_not_found")
    assert counter(store, "http.ingress.no_cluster") == 1


async def _run_with(cluster_kw, cfg, headers=None, body=None, end_stream=None, rand=None, extra_clusters=()):
    ctx, store = context()
    c = FakeCluster("backend", store, **cluster_kw)
    ctx.cluster_manager.clusters["backend"] = c
    for name in extra_clusters:
        ctx.cluster_manager.clusters[name] = FakeCluster(name, store)
    router = RouterFilter(RouterConfig(ctx, rand=rand))
    headers = headers or request()
    stream = FakeStream(headers, route_for(cfg, headers), body=body)
    await router.on_request_headers(stream, end_stream if end_stream is not None else not body)
    return stream, store, c, ctx


async def test_no_healthy_host_is_503_uh():
    stream, store, _, _ = await _run_with({"hosts": 0}, cluster_route())
    assert stream.local_reply[:4] == (503, b"no healthy upstream", "UH", "no_healthy_upstream")
    assert counter(store, "cluster.backend.upstream_cx_none_healthy") == 1


async def test_proxies_and_streams_the_response_with_envoy_headers_and_stats():
    h = request("/x", x_request_id="rid-1", connection="keep-alive", keep_alive="5")
    stream, store, c, _ = await _run_with(
        {"script": [FakeResponse(200, [("content-type", "text/plain")], [b"a", b"b"])]},
        cluster_route(),
        headers=h,
    )
    sent, body = c.requests[0]
    assert body is None
    assert sent.get("x-request-id") == "rid-1"
    assert sent.get("x-forwarded-proto") == "http"
    assert sent.get("x-envoy-expected-rq-timeout-ms") == "15000"
    assert "connection" not in sent and "keep-alive" not in sent
    assert stream.response_headers.status == 200
    assert "x-envoy-upstream-service-time" in stream.response_headers
    assert b"".join(stream.data) == b"ab" and stream.response_end
    si = stream.stream_info
    assert (si.upstream_cluster, si.upstream_host, si.route_name) == ("backend", "127.0.0.1:9000", "r1")
    for name in ("upstream_rq_200", "upstream_rq_2xx", "upstream_rq_completed"):
        assert counter(store, f"cluster.backend.{name}") == 1
    assert store.histograms["cluster.backend.upstream_rq_time"].count == 1


async def test_connect_failure_is_503_uf_with_envoy_body():
    stream, store, _, _ = await _run_with({"script": [UpstreamConnectError()]}, cluster_route())
    status, body, flag, details, _ = stream.local_reply
    assert (status, flag) == (503, "UF")
    assert (
        body == b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    )
    assert details == "upstream_reset_before_response_started{connection_failure}"
    assert counter(store, "cluster.backend.upstream_rq_503") == 1


async def test_reset_before_headers_is_503_uc():
    stream, _, _, _ = await _run_with({"script": [UpstreamResetError()]}, cluster_route())
    assert stream.local_reply[:3] == (
        503,
        b"upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        "UC",
    )


async def test_overflow_is_503_uo_with_overloaded_header_and_no_retry():
    cfg = cluster_route({"cluster": "backend", "retry_policy": {"retry_on": "5xx", "num_retries": 3}})
    stream, _, c, _ = await _run_with({"script": [PoolOverflow()]}, cfg)
    status, body, flag, _, extra = stream.local_reply
    assert (status, flag, extra) == (503, "UO", {"x-envoy-overloaded": "true"})
    assert body.endswith(b"reset reason: overflow")
    assert len(c.requests) == 1


async def test_route_timeout_is_504_ut():
    cfg = cluster_route({"cluster": "backend", "timeout": "0.05s"})
    stream, store, _, _ = await _run_with({"script": ["hang"]}, cfg)
    assert stream.local_reply[:4] == (504, b"upstream request timeout", "UT", "upstream_response_timeout")
    assert counter(store, "cluster.backend.upstream_rq_timeout") == 1
    assert counter(store, "cluster.backend.upstream_rq_504") == 1


async def test_retry_on_5xx_hides_the_failure_and_counts():
    cfg = cluster_route(
        {
            "cluster": "backend",
            "retry_policy": {
                "retry_on": "5xx",
                "num_retries": 2,
                "retry_back_off": {"base_interval": "0.001s"},
            },
        }
    )
    stream, store, c, _ = await _run_with({"script": [FakeResponse(503), FakeResponse(200)]}, cfg)
    assert stream.response_headers.status == 200
    assert len(c.requests) == 2
    assert counter(store, "cluster.backend.upstream_rq_retry") == 1
    assert counter(store, "cluster.backend.upstream_rq_retry_success") == 1
    assert counter(store, "cluster.backend.retry.upstream_rq_503") == 1
    assert counter(store, "cluster.backend.upstream_rq_200") == 1
    assert counter(store, "cluster.backend.upstream_rq_503") == 0
    assert stream.stream_info.upstream_request_attempts == 2
    assert c.resources.retries.count == 0  # the retry slot is given back


async def test_retries_exhausted_pass_the_last_response_with_urx():
    cfg = cluster_route(
        {
            "cluster": "backend",
            "retry_policy": {
                "retry_on": "5xx",
                "num_retries": 1,
                "retry_back_off": {"base_interval": "0.001s"},
            },
        }
    )
    stream, store, c, _ = await _run_with(
        {"script": [FakeResponse(503), FakeResponse(503, body=[b"last"])]}, cfg
    )
    assert stream.response_headers.status == 503 and b"".join(stream.data) == b"last"
    assert stream.stream_info.flags_string() == "URX"
    assert counter(store, "cluster.backend.upstream_rq_retry_limit_exceeded") == 1


async def test_non_retriable_status_is_not_retried():
    cfg = cluster_route({"cluster": "backend", "retry_policy": {"retry_on": "gateway-error"}})
    stream, _, c, _ = await _run_with({"script": [FakeResponse(500)]}, cfg)
    assert stream.response_headers.status == 500 and len(c.requests) == 1
    assert stream.stream_info.flags_string() == "-"


async def test_retry_of_connect_failure_then_success():
    cfg = cluster_route(
        {
            "cluster": "backend",
            "retry_policy": {"retry_on": "connect-failure", "retry_back_off": {"base_interval": "0.001s"}},
        }
    )
    stream, _, c, _ = await _run_with({"script": [UpstreamConnectError(), FakeResponse(200)]}, cfg)
    assert stream.response_headers.status == 200 and len(c.requests) == 2


async def test_retry_circuit_breaker_overflow_stops_retrying():
    cfg = cluster_route({"cluster": "backend", "retry_policy": {"retry_on": "5xx", "num_retries": 3}})
    stream, store, c, _ = await _run_with({"script": [FakeResponse(503)], "max_retries": 0}, cfg)
    assert stream.response_headers.status == 503 and len(c.requests) == 1
    assert counter(store, "cluster.backend.upstream_rq_retry_overflow") == 1


async def test_per_try_timeout_retries_then_504_ut():
    cfg = cluster_route(
        {
            "cluster": "backend",
            "retry_policy": {
                "retry_on": "5xx",
                "num_retries": 1,
                "per_try_timeout": "0.03s",
                "retry_back_off": {"base_interval": "0.001s"},
            },
        }
    )
    stream, store, c, _ = await _run_with({"script": ["hang", "hang"]}, cfg)
    assert len(c.requests) == 2
    assert c.requests[0][0].get("x-envoy-expected-rq-timeout-ms") == "30"
    assert stream.local_reply[:3] == (504, b"upstream request timeout", "UT")
    assert counter(store, "cluster.backend.upstream_rq_per_try_timeout") == 2


async def test_request_body_is_buffered_for_retries_and_resent():
    cfg = cluster_route(
        {
            "cluster": "backend",
            "retry_policy": {"retry_on": "5xx", "retry_back_off": {"base_interval": "0.001s"}},
        }
    )
    h = request("/", method="POST", content_length="6")
    stream, _, c, _ = await _run_with(
        {"script": [FakeResponse(503), FakeResponse(200)]}, cfg, headers=h, body=[b"abc", b"def"]
    )
    assert [b for _, b in c.requests] == [b"abcdef", b"abcdef"]


async def test_streamed_chunked_body_drops_transfer_encoding():
    h = request("/", method="POST", transfer_encoding="chunked")
    stream, _, c, _ = await _run_with({}, cluster_route(), headers=h, body=[b"abc"])
    sent, body = c.requests[0]
    assert body == b"abc" and "transfer-encoding" not in sent


async def test_rewrites_and_header_mutations():
    cfg = vhost(
        [
            {
                "match": {"prefix": "/api/"},
                "route": {
                    "cluster": "backend",
                    "prefix_rewrite": "/",
                    "host_rewrite_literal": "internal.svc",
                },
                "request_headers_to_add": [{"header": {"key": "x-route", "value": "yes"}}],
                "response_headers_to_add": [{"header": {"key": "x-resp", "value": "%UPSTREAM_CLUSTER%"}}],
                "response_headers_to_remove": ["x-secret"],
            }
        ]
    )
    h = request("/api/users?id=1")
    stream, _, c, _ = await _run_with({"script": [FakeResponse(200, [("x-secret", "s")])]}, cfg, headers=h)
    sent, _ = c.requests[0]
    assert sent.get(":path") == "/users?id=1"
    assert sent.get("x-envoy-original-path") == "/api/users?id=1"
    assert sent.get(":authority") == "internal.svc"
    assert sent.get("x-route") == "yes"
    assert stream.response_headers.get("x-resp") == "backend"
    assert "x-secret" not in stream.response_headers


async def test_auto_host_rewrite_uses_the_hosts_hostname():
    cfg = cluster_route({"cluster": "backend", "auto_host_rewrite": True})
    _, _, c, _ = await _run_with({"hostname": "api.example.com"}, cfg)
    assert c.requests[0][0].get(":authority") == "api.example.com"


async def test_weighted_clusters_follow_the_random_value():
    cfg = cluster_route(
        {
            "weighted_clusters": {
                "clusters": [{"name": "backend", "weight": 80}, {"name": "other", "weight": 20}]
            }
        }
    )
    seen = []
    for value in (0, 79, 80, 99):
        stream, _, _, _ = await _run_with({}, cfg, rand=lambda bits, v=value: v, extra_clusters=["other"])
        seen.append(stream.stream_info.upstream_cluster)
    assert seen == ["backend", "backend", "other", "other"]


async def test_hash_policy_reaches_the_load_balancer():
    cfg = cluster_route({"cluster": "backend", "hash_policy": [{"header": {"header_name": "x-user"}}]})
    _, _, c1, _ = await _run_with({}, cfg, headers=request(x_user="a"))
    _, _, c2, _ = await _run_with({}, cfg, headers=request(x_user="a"))
    _, _, c3, _ = await _run_with({}, cfg, headers=request(x_user="b"))
    k1, k2, k3 = (c.lb_contexts[0].hash_key for c in (c1, c2, c3))
    assert k1 is not None and k1 == k2 != k3


async def test_direct_response_and_redirect():
    cfg = vhost(
        [
            {
                "match": {"prefix": "/dr"},
                "direct_response": {"status": 200, "body": {"inline_string": "hi"}},
                "response_headers_to_add": [{"header": {"key": "x-a", "value": "1"}}],
            },
            {"match": {"prefix": "/"}, "redirect": {"https_redirect": True}},
        ]
    )
    stream, _, _, _ = await _run_with({}, cfg, headers=request("/dr"))
    assert stream.local_reply == (200, b"hi", None, "direct_response", {"x-a": "1"})
    stream, _, _, _ = await _run_with({}, cfg, headers=request("/p?q=1", authority="a.com"))
    assert stream.local_reply[0] == 301 and stream.local_reply[4]["location"] == "https://a.com/p?q=1"


async def test_mirror_sends_a_copy_to_the_shadow_with_suffix():
    cfg = cluster_route({"cluster": "backend", "request_mirror_policies": [{"cluster": "shadow"}]})
    ctx, store = context()
    main, shadow = FakeCluster("backend", store), FakeCluster("shadow", store, script=["hang"])
    ctx.cluster_manager.clusters.update(backend=main, shadow=shadow)
    config = RouterConfig(ctx)
    h = request("/", authority="svc:8080")
    stream = FakeStream(h, route_for(cfg, h))
    await RouterFilter(config).on_request_headers(stream, True)
    assert stream.response_headers.status == 200  # the shadow hangs, the client does not wait for it
    await asyncio.sleep(0)
    assert shadow.requests[0][0].get(":authority") == "svc-shadow:8080"
    for t in list(config.mirror_tasks):
        t.cancel()


async def test_upgrade_response_is_tunnelled():
    duplex = object()
    h = request("/ws", upgrade="websocket", connection="Upgrade")
    stream, _, c, _ = await _run_with(
        {"script": [FakeResponse(101, [("upgrade", "websocket"), ("connection", "upgrade")], duplex=duplex)]},
        cluster_route(),
        headers=h,
    )
    assert c.requests[0][0].get("upgrade") == "websocket"
    assert stream.response_headers.status == 101 and stream.upgraded is duplex


async def test_vhost_attempt_count_headers():
    cfg = cluster_route(
        {
            "cluster": "backend",
            "retry_policy": {"retry_on": "5xx", "retry_back_off": {"base_interval": "0.001s"}},
        }
    )
    cfg["virtual_hosts"][0].update(include_request_attempt_count=True, include_attempt_count_in_response=True)
    stream, _, c, _ = await _run_with({"script": [FakeResponse(503), FakeResponse(200)]}, cfg)
    assert [r[0].get("x-envoy-attempt-count") for r in c.requests] == ["1", "2"]
    assert stream.response_headers.get("x-envoy-attempt-count") == "2"


async def test_head_request_and_204_end_at_headers():
    stream, _, _, _ = await _run_with({"script": [FakeResponse(204, body=[])]}, cluster_route())
    assert stream.response_end and stream.data == []


def test_unsupported_router_field_is_rejected():
    from envoy.extensions.filters.http.router.v3 import router_pb2

    from proxy.config.errors import ConfigError
    from proxy.filters.http.router import make_router

    ctx, _ = context()
    with pytest.raises(ConfigError) as e:
        make_router(router_pb2.Router(start_child_span=True), ctx, "hcm.http_filters[0].typed_config")
    assert e.value.path == "hcm.http_filters[0].typed_config.start_child_span"
    assert make_router(router_pb2.Router(suppress_envoy_headers=True), ctx, "p").config.suppress_envoy_headers


async def test_route_idle_timeout_before_response_is_408_si():
    cfg = cluster_route({"cluster": "backend", "idle_timeout": "0.03s"})
    stream, _, _, _ = await _run_with({"script": ["hang"]}, cfg)
    assert stream.local_reply[:4] == (408, b"stream timeout", "SI", "stream_idle_timeout")


class _SlowBodyResponse(FakeResponse):
    async def _gen(self):
        yield b"first"
        await asyncio.sleep(3600)
        yield b"never"


async def _run_expecting_reset(cfg, response):
    ctx, store = context()
    ctx.cluster_manager.clusters["backend"] = FakeCluster("backend", store, script=[response])
    h = request()
    stream = FakeStream(h, route_for(cfg, h))
    with pytest.raises(ConnectionResetError):
        await RouterFilter(RouterConfig(ctx)).on_request_headers(stream, True)
    assert stream.data == [b"first"]
    return stream, store


async def test_timeout_after_response_started_resets_the_stream_with_ut():
    stream, store = await _run_expecting_reset(
        cluster_route({"cluster": "backend", "timeout": "0.05s"}), _SlowBodyResponse(200)
    )
    assert stream.stream_info.flags_string() == "UT"
    assert counter(store, "cluster.backend.upstream_rq_timeout") == 1
    assert counter(store, "http.ingress.rq_reset_after_downstream_response_started") == 1


async def test_idle_timeout_between_body_chunks_resets_with_si():
    stream, _ = await _run_expecting_reset(
        cluster_route({"cluster": "backend", "idle_timeout": "0.03s"}), _SlowBodyResponse(200)
    )
    assert stream.stream_info.flags_string() == "SI"
