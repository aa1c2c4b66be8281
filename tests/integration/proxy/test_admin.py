"""The admin endpoints of a real proxy process (python -m proxy -c ...), over real sockets."""

from __future__ import annotations

import importlib
import json
import urllib.error
import urllib.request

import pytest
from envoy.admin.v3 import clusters_pb2, config_dump_pb2
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from proxy.config.bootstrap import EXTENSION_PROTO_MODULES
from tests.integration.proxy.harness import http_listener, start_proxy, start_upstream, static_cluster
from tests.support.net import free_port

for _mod in EXTENSION_PROTO_MODULES:  # json_format resolves the typed_config Anys in the dump
    importlib.import_module(_mod)


def http(method: str, url: str) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


ROUTE = {
    "name": "local_route",
    "virtual_hosts": [
        {
            "name": "all",
            "domains": ["*"],
            "routes": [{"name": "to_backend", "match": {"prefix": "/"}, "route": {"cluster": "backend"}}],
        }
    ],
}


@pytest.fixture
def proxy(procs):
    up = start_upstream(procs, "a")
    port = free_port()
    bootstrap = {
        "node": {"id": "test-node", "cluster": "test"},
        "static_resources": {
            "listeners": [http_listener(port, ROUTE)],
            "clusters": [static_cluster("backend", [up])],
        },
    }
    p = start_proxy(procs, bootstrap, wait_ports=(port,))
    p.listener_port = port
    p.upstream_port = up
    return p


@pytest.fixture
def bare_proxy(procs):
    """A proxy with only a node and an admin: the admin endpoints need nothing else."""
    return start_proxy(procs, {"node": {"id": "bare-node", "cluster": "test"}})


def test_ready_is_live(bare_proxy):
    assert http("GET", bare_proxy.admin + "/ready") == (200, "LIVE\n")


def test_bare_config_dump_and_prometheus_parse(bare_proxy):
    status, body = http("GET", bare_proxy.admin + "/config_dump")
    assert status == 200
    dump = json_format.Parse(body, config_dump_pb2.ConfigDump())
    assert dump.configs[0].type_url.endswith("BootstrapConfigDump")
    assert json.loads(body)["configs"][0]["bootstrap"]["node"]["id"] == "bare-node"
    status, body = http("GET", bare_proxy.admin + "/stats/prometheus")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["envoy_server_live"].samples[0].value == 1


def test_config_dump_parses_back_with_listener_cluster_and_route(proxy):
    status, body = http("GET", proxy.admin + "/config_dump")
    assert status == 200
    dump = json_format.Parse(body, config_dump_pb2.ConfigDump())
    assert len(dump.configs) == 4
    doc = json.loads(body)
    by_type = {c["@type"].rsplit(".", 1)[-1]: c for c in doc["configs"]}
    assert by_type["BootstrapConfigDump"]["bootstrap"]["node"]["id"] == "test-node"
    assert [c["cluster"]["name"] for c in by_type["ClustersConfigDump"]["static_clusters"]] == ["backend"]
    assert [sl["listener"]["name"] for sl in by_type["ListenersConfigDump"]["static_listeners"]] == [
        "ingress"
    ]
    assert by_type["RoutesConfigDump"]["static_route_configs"][0]["route_config"]["name"] == "local_route"


def test_config_dump_resource_and_mask(proxy):
    status, body = http("GET", proxy.admin + "/config_dump?resource=static_clusters")
    assert status == 200
    dump = json_format.Parse(body, config_dump_pb2.ConfigDump())
    assert [c.type_url for c in dump.configs] == [
        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster"
    ]
    status, body = http("GET", proxy.admin + "/config_dump?mask=static_listeners")
    json_format.Parse(body, config_dump_pb2.ConfigDump())
    kept = [set(c) - {"@type"} for c in json.loads(body)["configs"]]
    assert kept == [set(), set(), {"static_listeners"}, set()]


def test_clusters_shows_hosts(proxy):
    status, body = http("GET", proxy.admin + "/clusters")
    assert status == 200
    host = f"backend::127.0.0.1:{proxy.upstream_port}::"
    assert host + "health_flags::healthy" in body.splitlines()
    assert host + "cx_active::0" in body.splitlines() or any(
        ln.startswith(host + "cx_active::") for ln in body.splitlines()
    )
    status, body = http("GET", proxy.admin + "/clusters?format=json")
    statuses = json_format.Parse(body, clusters_pb2.Clusters()).cluster_statuses
    assert [h.address.socket_address.port_value for h in statuses[0].host_statuses] == [proxy.upstream_port]


def test_rq_total_and_prometheus_after_traffic(proxy):
    for _ in range(3):
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.listener_port}/x", timeout=5) as r:
            assert r.status == 200
    status, body = http("GET", proxy.admin + "/clusters")
    assert f"backend::127.0.0.1:{proxy.upstream_port}::rq_total::3" in body.splitlines()
    status, body = http("GET", proxy.admin + "/stats/prometheus")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert "envoy_cluster_upstream_rq_xx" in families
    samples = [
        s
        for s in families["envoy_http_downstream_rq_xx"].samples
        if s.labels.get("envoy_http_conn_manager_prefix") == "ingress"
        and s.labels.get("envoy_response_code_class") == "2"
    ]
    assert samples and samples[0].value == 3
    status, body = http("GET", proxy.admin + "/stats?filter=^http\\.ingress\\.downstream_rq_2xx$")
    assert body == "http.ingress.downstream_rq_2xx: 3\n"


def test_listeners_and_server_info(proxy):
    assert http("GET", proxy.admin + "/listeners") == (200, f"ingress::127.0.0.1:{proxy.listener_port}\n")
    status, body = http("GET", proxy.admin + "/server_info")
    info = json.loads(body)
    assert info["state"] == "LIVE" and info["node"]["id"] == "test-node"


def test_post_only_endpoints_refuse_get(bare_proxy):
    for path in ("/quitquitquit", "/healthcheck/fail", "/drain_listeners", "/logging"):
        status, body = http("GET", bare_proxy.admin + path)
        assert status == 405 and "POST required" in body, path
    assert http("GET", bare_proxy.admin + "/ready") == (200, "LIVE\n")


def test_healthcheck_fail_makes_ready_503(bare_proxy):
    assert http("POST", bare_proxy.admin + "/healthcheck/fail") == (200, "OK\n")
    assert http("GET", bare_proxy.admin + "/ready") == (503, "DRAINING\n")
    assert http("POST", bare_proxy.admin + "/healthcheck/ok") == (200, "OK\n")
    assert http("GET", bare_proxy.admin + "/ready") == (200, "LIVE\n")


def test_malformed_request_gets_400_and_admin_keeps_serving(bare_proxy):
    import socket

    with socket.create_connection(("127.0.0.1", bare_proxy.admin_port), timeout=5) as s:
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    assert http("GET", bare_proxy.admin + "/ready") == (200, "LIVE\n")


def test_quitquitquit_ends_the_process(bare_proxy):
    assert http("POST", bare_proxy.admin + "/quitquitquit") == (200, "OK\n")
    assert bare_proxy.proc.wait(timeout=10) == 0
