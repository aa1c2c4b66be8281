"""Cluster configuration: types, endpoints, validation (rejections by path), DNS, ORIGINAL_DST."""

from __future__ import annotations

import asyncio
import collections
from types import SimpleNamespace

import pytest

from proxy.config.errors import ConfigError
from proxy.core.headers import Headers
from proxy.upstream import ClusterManager, LbContext
from proxy.upstream.cluster import build_cluster
from proxy.upstream.host import FAILED_EDS_HEALTH
from tests.unit.proxy.upstream.helpers import cluster_proto, ctx, endpoints, load_assignment


def build(**fields):
    return build_cluster(cluster_proto(**fields), ctx(), "static_resources.clusters[0]")


def rejects(path_suffix: str, **fields) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build(**fields)
    assert info.value.path == "static_resources.clusters[0]" + path_suffix, info.value
    return info.value


def test_static_cluster_hosts_weights_and_membership_stats():
    c = build(load_assignment=load_assignment(endpoints("10.0.0.1:80", ("10.0.0.2:81", 3))))
    assert [(h.address, h.weight) for h in c.hosts] == [(("10.0.0.1", 80), 1), (("10.0.0.2", 81), 3)]
    assert c.stats.membership_total.value == 2
    assert c.stats.membership_healthy.value == 2
    assert c.hosts[0].health_flags_str() == "healthy"
    picks = collections.Counter(c.choose_host(LbContext()).address[1] for _ in range(400))
    assert picks == {80: 100, 81: 300}


def test_defaults_follow_envoy():
    c = build(load_assignment=load_assignment(endpoints("10.0.0.1:80")))
    assert c.pool_settings.connect_timeout == 1.0
    assert c.pool_settings.idle_timeout == 3600.0
    assert c.pool_settings.max_requests_per_connection == 0
    r = c.resources
    assert (r.connections.max, r.pending_requests.max, r.requests.max, r.retries.max) == (1024, 1024, 1024, 3)
    assert c.lb_config.policy == "ROUND_ROBIN"


def test_connect_timeout_defaults_to_5s():
    from envoy.config.cluster.v3 import cluster_pb2

    proto = cluster_pb2.Cluster(name="b")
    assert build_cluster(proto, ctx(), "c").pool_settings.connect_timeout == 5.0


def test_unhealthy_endpoints_are_flagged_and_skipped():
    la = load_assignment(endpoints("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
    la["endpoints"][0]["lb_endpoints"][0]["health_status"] = "UNHEALTHY"
    c = build(load_assignment=la)
    assert c.hosts[0].health_flags_str() == FAILED_EDS_HEALTH
    assert c.stats.membership_healthy.value == 2
    assert {c.choose_host().address[0] for _ in range(50)} == {"10.0.0.2", "10.0.0.3"}


def test_priorities_use_lowest_healthy_priority():
    c = build(load_assignment=load_assignment(endpoints("10.0.0.1:80", priority=1), endpoints("10.0.0.2:80")))
    assert [hs.priority for hs in c.host_sets] == [0, 1]
    assert {c.choose_host().address[0] for _ in range(20)} == {"10.0.0.2"}


def test_circuit_breaker_thresholds_and_gauges():
    c = build(
        load_assignment=load_assignment(endpoints("10.0.0.1:80")),
        circuit_breakers={
            "thresholds": [
                {
                    "max_connections": 2,
                    "max_pending_requests": 1,
                    "max_requests": 5,
                    "max_retries": 1,
                    "track_remaining": True,
                }
            ]
        },
    )
    r = c.resources
    assert (r.connections.max, r.pending_requests.max, r.requests.max, r.retries.max) == (2, 1, 5, 1)
    gauges = c.ctx.stats.gauges
    assert gauges["cluster.backend.circuit_breakers.default.rq_retry_open"].value == 0
    assert r.retries.can_create()
    with r.retries:
        assert not r.retries.can_create()
        assert gauges["cluster.backend.circuit_breakers.default.rq_retry_open"].value == 1
        assert gauges["cluster.backend.circuit_breakers.default.remaining_retries"].value == 0
    assert r.retries.can_create() and r.retries.count == 0
    assert gauges["cluster.backend.circuit_breakers.default.rq_retry_open"].value == 0


def test_protocol_options_max_requests_and_idle_timeout():
    typed = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"idle_timeout": "30s", "max_requests_per_connection": 7},
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }
    c = build(typed_extension_protocol_options=typed)
    assert c.pool_settings.max_requests_per_connection == 7
    assert c.pool_settings.idle_timeout == 30
    c = build(max_requests_per_connection=3)  # the deprecated field still works
    assert c.pool_settings.max_requests_per_connection == 3


def test_alt_stat_name():
    c = build(alt_stat_name="other")
    assert c.stats.scope.prefix == "cluster.other."


@pytest.mark.parametrize(
    "fields,path,text",
    [
        (
            {"type": "EDS", "eds_cluster_config": {"eds_config": {"path_config_source": {"path": "/x"}}}},
            ".eds_cluster_config.eds_config.path_config_source",
            "not supported",
        ),
        ({"type": "EDS"}, ".eds_cluster_config.eds_config", "ADS"),
        ({"eds_cluster_config": {"service_name": "x"}}, ".eds_cluster_config", "only EDS clusters"),
        (
            {"health_checks": [{"timeout": "1s", "interval": "1s", "http_health_check": {"path": "/"}}]},
            ".health_checks",
            "health",
        ),
        ({"outlier_detection": {}}, ".outlier_detection", "outlier"),
        (
            {"transport_socket": {"name": "envoy.transport_sockets.tls"}},
            ".transport_socket.typed_config",
            "needs a typed_config",
        ),
        (
            {"transport_socket_matches": [{"name": "tls", "match": {}}]},
            ".transport_socket_matches",
            "not supported",
        ),
        ({"http2_protocol_options": {}}, ".http2_protocol_options", "HTTP/2"),
        (
            {"upstream_bind_config": {"source_address": {"address": "1.2.3.4"}, "freebind": True}},
            ".upstream_bind_config.freebind",
            "not supported",
        ),
        (
            {"ring_hash_lb_config": {"hash_function": "MURMUR_HASH_2"}},
            ".ring_hash_lb_config.hash_function",
            "not supported",
        ),
        ({"lb_policy": "CLUSTER_PROVIDED"}, ".lb_policy", "CLUSTER_PROVIDED"),
        ({"type": "ORIGINAL_DST"}, ".lb_policy", "ORIGINAL_DST"),
        (
            {"ring_hash_lb_config": {"minimum_ring_size": 10, "maximum_ring_size": 5}},
            ".ring_hash_lb_config",
            "minimum_ring_size",
        ),
        ({"maglev_lb_config": {"table_size": 100}}, ".maglev_lb_config.table_size", "prime"),
    ],
)
def test_unsupported_or_invalid_config_is_rejected_with_its_path(fields, path, text):
    err = rejects(path, **fields)
    assert text in str(err)


def test_unsupported_endpoint_fields_are_rejected_with_their_path():
    la = load_assignment(endpoints("10.0.0.1:80"))
    la["endpoints"][0]["lb_endpoints"][0]["endpoint"]["health_check_config"] = {"port_value": 9}
    rejects(".load_assignment.endpoints[0].lb_endpoints[0].endpoint.health_check_config", load_assignment=la)


def test_static_cluster_needs_ip_addresses():
    err = rejects(
        ".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
        load_assignment=load_assignment(endpoints("localhost:80")),
    )
    assert "STRICT_DNS" in str(err)


def test_unknown_typed_protocol_options_are_rejected():
    from envoy.extensions.upstreams.tcp.v3 import tcp_protocol_options_pb2  # noqa: F401 (lets json parse it)

    typed = {
        "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"
        }
    }
    rejects(
        ".typed_extension_protocol_options[envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions]",
        typed_extension_protocol_options=typed,
    )


def test_logical_dns_needs_exactly_one_endpoint():
    rejects(
        ".load_assignment",
        type="LOGICAL_DNS",
        load_assignment=load_assignment(endpoints("localhost:80", "localhost:81")),
    )


def test_duplicate_cluster_names_are_rejected():
    protos = [cluster_proto(), cluster_proto()]
    with pytest.raises(ConfigError) as info:
        ClusterManager.from_protos(protos, ctx())
    assert info.value.path == "static_resources.clusters[1].name"


async def test_strict_dns_resolves_localhost():
    c = build(
        type="STRICT_DNS",
        dns_lookup_family="V4_ONLY",
        load_assignment=load_assignment(endpoints(("localhost:8080", 2))),
    )
    assert c.hosts == []
    await c.start()
    try:
        assert [h.address for h in c.hosts] == [("127.0.0.1", 8080)]
        assert c.hosts[0].weight == 2 and c.hosts[0].hostname == "localhost"
        assert c.stats.membership_total.value == 1
        assert c.choose_host().address == ("127.0.0.1", 8080)
        # a refresh with the same answer keeps the same Host objects (pools and stats survive)
        host = c.hosts[0]
        assert await c.refresh()
        assert c.hosts[0] is host
    finally:
        await c.close()


async def test_strict_dns_keeps_last_good_hosts_when_resolution_fails():
    c = build(
        type="STRICT_DNS",
        dns_lookup_family="V4_ONLY",
        dns_refresh_rate="0.05s",
        load_assignment=load_assignment(endpoints("localhost:8080")),
    )
    await c.start()
    try:
        c.specs[0].address = "no-such-host.invalid"
        assert not await c.refresh()
        assert [h.address for h in c.hosts] == [("127.0.0.1", 8080)]
        assert c.stats.update_failure.value >= 1
    finally:
        await c.close()


async def test_strict_dns_refreshes_periodically():
    c = build(
        type="STRICT_DNS",
        dns_lookup_family="V4_ONLY",
        dns_refresh_rate="0.05s",
        load_assignment=load_assignment(endpoints("localhost:8080")),
    )
    await c.start()
    try:
        for _ in range(100):
            if c.stats.update_attempt.value >= 3:
                break
            await asyncio.sleep(0.02)
        assert c.stats.update_attempt.value >= 3
    finally:
        await c.close()


async def test_logical_dns_single_host():
    c = build(
        type="LOGICAL_DNS",
        dns_lookup_family="V4_ONLY",
        load_assignment=load_assignment(endpoints("localhost:9000")),
    )
    cm = ClusterManager(c.ctx)
    cm.clusters[c.name] = c
    await cm.start()
    try:
        assert [h.address for h in c.hosts] == [("127.0.0.1", 9000)]
        assert c.choose_host().address == ("127.0.0.1", 9000)
    finally:
        await cm.close()


def original_dst(**fields):
    return build(type="ORIGINAL_DST", lb_policy="CLUSTER_PROVIDED", **fields)


def test_original_dst_creates_hosts_from_the_downstream_connection():
    c = original_dst()
    conn = SimpleNamespace(original_dst=("10.1.2.3", 8080), local_address=("127.0.0.1", 15001))
    host = c.choose_host(LbContext(downstream_connection=conn))
    assert host.address == ("10.1.2.3", 8080)
    assert c.choose_host(LbContext(downstream_connection=conn)) is host
    assert c.stats.membership_total.value == 1
    other = SimpleNamespace(original_dst=None, local_address=("10.9.9.9", 80))
    assert c.choose_host(LbContext(downstream_connection=other)).address == ("10.9.9.9", 80)
    assert c.choose_host(LbContext()) is None
    assert c.stats.membership_total.value == 2


def test_original_dst_http_header_and_port_override():
    c = original_dst(original_dst_lb_config={"use_http_header": True, "upstream_port_override": 9090})
    headers = Headers([("x-envoy-original-dst-host", "10.0.0.7:80")])
    assert c.choose_host(LbContext(headers=headers)).address == ("10.0.0.7", 9090)


def test_original_dst_hosts_are_cleaned_up_after_an_idle_interval():
    c = original_dst()
    conn = SimpleNamespace(original_dst=("10.1.2.3", 8080))
    c.choose_host(LbContext(downstream_connection=conn))
    c.cleanup()  # used since the last sweep: kept
    assert len(c.hosts) == 1
    c.cleanup()  # not used since: removed
    assert c.hosts == [] and c.stats.membership_total.value == 0


def test_original_dst_rejects_load_assignment():
    with pytest.raises(ConfigError) as info:
        original_dst(load_assignment=load_assignment(endpoints("10.0.0.1:80")))
    assert info.value.path.endswith(".load_assignment")


async def test_cluster_manager_add_update_remove():
    cm = ClusterManager.from_protos(
        [cluster_proto(load_assignment=load_assignment(endpoints("10.0.0.1:80")))], ctx()
    )
    await cm.start()
    first = cm.get("backend")
    assert first.proto.name == "backend" and cm.get("nope") is None
    same = await cm.add_or_update(cluster_proto(load_assignment=load_assignment(endpoints("10.0.0.1:80"))))
    assert same is first
    new = await cm.add_or_update(cluster_proto(load_assignment=load_assignment(endpoints("10.0.0.2:80"))))
    assert cm.get("backend") is new and new is not first and first.closed
    assert cm.remove("backend") and cm.get("backend") is None and not cm.remove("backend")
    await cm.close()


def test_cluster_stats_answer_like_a_scope():
    c = build()
    c.stats.counter("upstream_cx_none_healthy").inc()
    assert c.ctx.stats.counters["cluster.backend.upstream_cx_none_healthy"].value == 1
    assert c.stats.scope.prefix == c.stats.prefix == "cluster.backend."
    assert c.stats.upstream_rq_pending_overflow is c.stats.counter("upstream_rq_pending_overflow")
