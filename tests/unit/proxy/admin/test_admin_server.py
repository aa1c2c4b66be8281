"""The admin server in-process, against a fake server object, over real sockets."""

import asyncio
import json

import pytest
from envoy.admin.v3 import clusters_pb2, config_dump_pb2, listeners_pb2, server_info_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from proxy.admin.server import AdminServer
from tests.unit.proxy.admin.fakes import FakeServer, State


@pytest.fixture
async def admin():
    server = FakeServer()
    adm = AdminServer(server, "127.0.0.1", 0)
    await adm.start()
    try:
        yield adm
    finally:
        await adm.stop()


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def call(adm, method: str, target: str) -> tuple[int, dict, str]:
    resp = await raw(
        adm.port,
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode(),
    )
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return status, headers, body.decode()


async def test_ready_live_then_503_while_initializing_or_healthcheck_failed(admin):
    status, _, body = await call(admin, "GET", "/ready")
    assert (status, body) == (200, "LIVE\n")
    admin.server.state = State.INITIALIZING
    assert (await call(admin, "GET", "/ready"))[::2] == (503, "INITIALIZING\n")
    admin.server.state = State.LIVE
    assert (await call(admin, "POST", "/healthcheck/fail"))[::2] == (200, "OK\n")
    assert (await call(admin, "GET", "/ready"))[::2] == (503, "DRAINING\n")
    await call(admin, "POST", "/healthcheck/ok")
    assert (await call(admin, "GET", "/ready"))[::2] == (200, "LIVE\n")


async def test_server_info_parses_as_envoy_server_info(admin):
    status, headers, body = await call(admin, "GET", "/server_info")
    assert status == 200 and headers["content-type"] == "application/json"
    info = json_format.Parse(body, server_info_pb2.ServerInfo())
    assert info.state == server_info_pb2.ServerInfo.LIVE
    assert info.uptime_current_epoch.seconds >= 42
    assert info.node.id == "sidecar~10.0.0.1~app.default"
    assert info.command_line_options.config_path == "/etc/bootstrap.yaml"
    assert info.version
    assert json.loads(body)["state"] == "LIVE"


async def test_config_dump_parses_back_and_holds_listener_cluster_route(admin):
    status, _, body = await call(admin, "GET", "/config_dump")
    assert status == 200
    dump = json_format.Parse(body, config_dump_pb2.ConfigDump())
    types = [c.type_url.rsplit(".", 1)[-1] for c in dump.configs]
    assert types == ["BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump"]
    doc = json.loads(body)
    assert doc["configs"][0]["bootstrap"]["node"]["id"] == "sidecar~10.0.0.1~app.default"
    assert doc["configs"][1]["static_clusters"][0]["cluster"]["name"] == "backend"
    assert "last_updated" in doc["configs"][1]["static_clusters"][0]
    assert [sl["listener"]["name"] for sl in doc["configs"][2]["static_listeners"]] == ["ingress", "inbound"]
    assert doc["configs"][3]["static_route_configs"][0]["route_config"]["name"] == "local_route"


async def test_config_dump_resource_and_mask(admin):
    status, _, body = await call(admin, "GET", "/config_dump?resource=static_listeners&mask=last_updated")
    assert status == 200
    dump = json_format.Parse(body, config_dump_pb2.ConfigDump())
    assert len(dump.configs) == 2
    doc = json.loads(body)
    assert doc["configs"][0]["@type"].endswith("ListenersConfigDump.StaticListener")
    assert [set(c) for c in doc["configs"]] == [{"@type", "last_updated"}] * 2
    status, _, body = await call(admin, "GET", "/config_dump?mask=static_clusters")
    doc = json.loads(body)
    assert [set(c) - {"@type"} for c in doc["configs"]] == [set(), {"static_clusters"}, set(), set()]
    status, _, body = await call(admin, "GET", "/config_dump?resource=nope")
    assert status == 404


async def test_clusters_text_and_json(admin):
    status, _, body = await call(admin, "GET", "/clusters")
    assert status == 200
    lines = body.splitlines()
    assert "backend::observability_name::backend" in lines
    assert "backend::default_priority::max_connections::7" in lines
    assert "backend::127.0.0.1:8081::cx_active::2" in lines
    assert "backend::127.0.0.1:8081::rq_total::12" in lines
    assert "backend::127.0.0.1:8081::health_flags::healthy" in lines
    assert "backend::127.0.0.1:8081::weight::3" in lines
    assert "backend::127.0.0.1:8082::health_flags::/failed_eds_health" in lines
    status, _, body = await call(admin, "GET", "/clusters?format=json")
    clusters = json_format.Parse(body, clusters_pb2.Clusters())
    [cs] = clusters.cluster_statuses
    assert cs.name == "backend" and len(cs.host_statuses) == 2
    stats = {s.name: s.value for s in cs.host_statuses[0].stats}
    assert stats["rq_total"] == 12


async def test_listeners_text_and_json(admin):
    status, _, body = await call(admin, "GET", "/listeners")
    assert body == "ingress::127.0.0.1:10000\ninbound::127.0.0.1:15006\n"
    status, _, body = await call(admin, "GET", "/listeners?format=json")
    ls = json_format.Parse(body, listeners_pb2.Listeners())
    assert [s.local_address.socket_address.port_value for s in ls.listener_statuses] == [10000, 15006]


async def test_stats_text_filter_json_and_prometheus(admin):
    admin.server.stats.counter("cluster.backend.upstream_rq_2xx").inc(3)
    admin.server.stats.histogram("cluster.backend.upstream_rq_time").record(12)
    status, _, body = await call(admin, "GET", "/stats?filter=^cluster\\.")
    assert status == 200
    assert "cluster.backend.upstream_rq_2xx: 3\n" in body
    assert all(ln.startswith("cluster.") for ln in body.splitlines())
    status, _, body = await call(admin, "GET", "/stats?format=json")
    assert {"name": "cluster.backend.upstream_rq_2xx", "value": 3} in json.loads(body)["stats"]
    status, headers, body = await call(admin, "GET", "/stats/prometheus")
    assert headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body)}
    assert "envoy_cluster_upstream_rq_xx" in names and "envoy_cluster_upstream_rq_time" in names
    status, _, _ = await call(admin, "GET", "/stats?filter=(")
    assert status == 400


async def test_admin_counts_its_own_requests(admin):
    await call(admin, "GET", "/ready")
    _, _, body = await call(admin, "GET", "/stats?filter=^http\\.admin\\.downstream_rq_2xx$")
    assert body.startswith("http.admin.downstream_rq_2xx: ") and int(body.split(": ")[1]) >= 1


@pytest.mark.parametrize(
    "path",
    [
        "/quitquitquit",
        "/healthcheck/fail",
        "/healthcheck/ok",
        "/drain_listeners",
        "/logging",
        "/logging?level=debug",
    ],
)
async def test_post_only_endpoints_refuse_get(admin, path):
    status, _, body = await call(admin, "GET", path)
    assert status == 405 and "POST required" in body
    assert admin.server.shutdowns == [] and admin.server.healthcheck_failed is False


async def test_quitquitquit_answers_then_shuts_down(admin):
    status, _, body = await call(admin, "POST", "/quitquitquit")
    assert (status, body) == (200, "OK\n")
    assert admin.server.shutdowns == [False]


async def test_drain_listeners_inboundonly_stops_only_inbound(admin):
    status, _, _ = await call(admin, "POST", "/drain_listeners?inboundonly")
    assert status == 200 and admin.server.drains == [True]
    accepting = {ln.name: ln.accepting for ln in admin.server.listener_manager.listeners}
    assert accepting == {"ingress": True, "inbound": False}


async def test_logging_changes_levels(admin):
    import logging

    logging.getLogger("proxy.test_admin_dummy")
    root_before = logging.getLogger().level
    try:
        status, _, body = await call(admin, "POST", "/logging?level=debug")
        assert status == 200 and body.startswith("active loggers:")
        assert logging.getLogger("proxy.test_admin_dummy").getEffectiveLevel() == logging.DEBUG
        status, _, _ = await call(admin, "POST", "/logging?level=loud")
        assert status == 404
    finally:
        logging.getLogger().setLevel(root_before)


async def test_unknown_path_404_lists_commands(admin):
    status, _, body = await call(admin, "GET", "/nope")
    assert status == 404 and "admin commands are:" in body and "/config_dump" in body
    status, _, body = await call(admin, "GET", "/help")
    assert status == 200 and "/stats/prometheus" in body


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n\r\n",
        b"GET /ready HTTP/9.9\r\n\r\n",
        b"GET /ready HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /ready HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /ready HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400_and_admin_keeps_serving(admin, data):
    resp = await raw(admin.port, data)
    assert resp.startswith(b"HTTP/1.1 400 ")
    status, _, body = await call(admin, "GET", "/ready")
    assert (status, body) == (200, "LIVE\n")


async def test_oversized_head_gets_431(admin):
    resp = await raw(admin.port, b"GET /ready HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 431 ")


async def test_keep_alive_serves_several_requests_on_one_connection(admin):
    reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
    try:
        for _ in range(3):
            writer.write(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert await reader.readexactly(5) == b"LIVE\n"
    finally:
        writer.close()


async def test_config_dump_roundtrips_listener_protos(admin):
    _, _, body = await call(admin, "GET", "/config_dump?resource=static_listeners")
    dump = json_format.Parse(body, config_dump_pb2.ConfigDump())
    from envoy.admin.v3 import config_dump_shared_pb2

    sl = config_dump_shared_pb2.ListenersConfigDump.StaticListener()
    assert dump.configs[0].Unpack(sl)
    lst = listener_pb2.Listener()
    assert sl.listener.Unpack(lst) and lst == admin.server.bootstrap.static_resources.listeners[0]
