"""Builders for xDS-driven proxy tests: real resources (protobuf), a bootstrap pointing at the test
control plane (tests/support/xds_server.py), and small HTTP/TCP clients."""

from __future__ import annotations

import json
import re
import socket
import urllib.request

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from tests.integration.proxy.harness import start_proxy, static_cluster
from tests.support.net import wait_for_port

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
FAULT = {
    "name": "envoy.filters.http.fault",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
}


def bootstrap(xds_port: int, delta: bool = False) -> dict:
    return {
        "node": {"id": "sidecar~127.0.0.1~test.default~default.svc.cluster.local", "cluster": "test"},
        "static_resources": {"clusters": [static_cluster("xds-grpc", [xds_port])]},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
    }


def start_xds_proxy(procs, xds_port: int, *listen_ports: int, delta: bool = False, drain_s: int = 2):
    return start_proxy(
        procs, bootstrap(xds_port, delta), "--drain-time-s", str(drain_s), wait_ports=listen_ports
    )


def static(name: str, *ports: int) -> cluster_pb2.Cluster:
    return json_format.ParseDict(static_cluster(name, list(ports)), cluster_pb2.Cluster())


def eds_cluster(name: str, service: str = "") -> cluster_pb2.Cluster:
    ecc: dict = {"eds_config": {"ads": {}, "resource_api_version": "V3"}}
    if service:
        ecc["service_name"] = service
    return json_format.ParseDict(
        {"name": name, "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": ecc},
        cluster_pb2.Cluster(),
    )


def cla(name: str, *ports: int, weights: tuple[int, ...] = ()) -> endpoint_pb2.ClusterLoadAssignment:
    eps = []
    for i, p in enumerate(ports):
        ep: dict = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        if weights:
            ep["load_balancing_weight"] = weights[i]
        eps.append(ep)
    return json_format.ParseDict(
        {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]}, endpoint_pb2.ClusterLoadAssignment()
    )


def routes(name: str, *rules: tuple[str, str | dict]) -> route_pb2.RouteConfiguration:
    """rules: (prefix, cluster name) or (prefix, {cluster: weight, ...}) for a weighted split."""
    out = []
    for prefix, target in rules:
        if isinstance(target, dict):
            action = {
                "weighted_clusters": {"clusters": [{"name": c, "weight": w} for c, w in target.items()]}
            }
        else:
            action = {"cluster": target}
        out.append({"match": {"prefix": prefix}, "route": action})
    return json_format.ParseDict(
        {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": out}]},
        route_pb2.RouteConfiguration(),
    )


def http_listener(
    name: str, port: int, route_name: str, http_filters: list | None = None, access_log: str = ""
) -> listener_pb2.Listener:
    hcm: dict = {
        "@type": HCM,
        "stat_prefix": name,
        "rds": {"route_config_name": route_name, "config_source": {"ads": {}, "resource_api_version": "V3"}},
        "http_filters": http_filters if http_filters is not None else [ROUTER],
    }
    if access_log:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": access_log,
                    "log_format": {
                        "text_format_source": {"inline_string": "%RESPONSE_CODE% %RESPONSE_FLAGS%\n"}
                    },
                },
            }
        ]
    return _listener(
        name, port, {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
    )


def tcp_listener(name: str, port: int, cluster: str) -> listener_pb2.Listener:
    cfg = {"@type": TCP_PROXY, "stat_prefix": name, "cluster": cluster}
    return _listener(name, port, {"name": "envoy.filters.network.tcp_proxy", "typed_config": cfg})


def _listener(name: str, port: int, network_filter: dict) -> listener_pb2.Listener:
    return json_format.ParseDict(
        {
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [network_filter]}],
        },
        listener_pb2.Listener(),
    )


def get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, dict | bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def upstream_of(port: int, path: str = "/") -> str | None:
    status, body = get(port, path)
    return body.get("upstream") if status == 200 and isinstance(body, dict) else None


def tcp_upstream_of(port: int) -> str | None:
    """One HTTP request over a raw TCP connection (through a tcp_proxy listener)."""
    wait_for_port("127.0.0.1", port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /tcp HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        return None
    m = re.search(rb'"upstream": ?"([^"]+)"', data)  # chunked or not, the JSON names the upstream
    return m.group(1).decode() if m else None


def admin_json(proxy, path: str) -> dict:
    with urllib.request.urlopen(proxy.admin + path, timeout=5) as resp:
        return json.loads(resp.read())


def stat(proxy, name: str) -> int:
    with urllib.request.urlopen(
        proxy.admin + "/stats?filter=^" + name.replace(".", r"\.") + "$", timeout=5
    ) as r:
        for line in r.read().decode().splitlines():
            k, _, v = line.partition(": ")
            if k == name:
                return int(v)
    return 0


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll a condition that the proxy reaches asynchronously (an xDS push being applied)."""
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not reached within {timeout}s (last: {last!r})")
