"""Set-up for the ext_authz / ratelimit / gRPC access log integration tests: a real proxy process in
front of a real upstream, talking real gRPC to a separate services process
(tests/integration/proxy/envoy_services_server.py) through a cluster named "mixer"."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.integration.proxy.harness import http_listener, start_proxy, start_upstream, static_cluster
from tests.support.net import free_port, wait_for_port

FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
HTTP_GRPC_LOG = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
LOG_FORMAT = {"json_format": {"code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "path": "%REQ(:PATH)%"}}


@dataclass
class Services:
    port: int
    record_dir: Path
    proc: object

    def records(self, name: str) -> list[dict]:
        path = self.record_dir / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_records(self, name: str, n: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.records(name)
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


def start_services(procs, record_dir: Path, *flags: str, port: int | None = None) -> Services:
    port = port or free_port()
    proc = procs.python(
        "-m",
        "tests.integration.proxy.envoy_services_server",
        "--port",
        str(port),
        "--record-dir",
        str(record_dir),
        *flags,
    )
    wait_for_port("127.0.0.1", port, proc=proc)
    return Services(port, record_dir, proc)


@dataclass
class Mesh:
    base: str
    admin: str
    log_path: Path

    def stat(self, name: str) -> int:
        with urllib.request.urlopen(f"{self.admin}/stats?format=json", timeout=5) as resp:
            data = json.load(resp)
        for s in data.get("stats", []):
            if s.get("name") == name and "value" in s:
                return int(s["value"])
        return 0

    def wait_stat(self, name: str, at_least: int, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            v = self.stat(name)
            if v >= at_least or time.monotonic() > deadline:
                return v
            time.sleep(0.05)

    def log_entries(self, n: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text() if self.log_path.exists() else ""
            lines = [line for line in text.splitlines() if line.strip()]
            if len(lines) >= n or time.monotonic() > deadline:
                return [json.loads(line) for line in lines]
            time.sleep(0.05)


def start_mesh(
    procs,
    tmp_path: Path,
    services_port: int,
    *,
    http_filters: list[dict] | None = None,
    routes: list[dict] | None = None,
    access_logs: list[dict] | None = None,
    listener_name: str = "ingress",
    listener_extra: dict | None = None,
    node: dict | None = None,
) -> Mesh:
    tmp_path.mkdir(parents=True, exist_ok=True)
    upstream = start_upstream(procs, "app")
    port = free_port()
    log_path = tmp_path / "access.log"
    route_config = {
        "name": "rc",
        "virtual_hosts": [
            {
                "name": "vh",
                "domains": ["*"],
                "routes": routes or [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
            }
        ],
    }
    logs = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {"@type": FILE_LOG, "path": str(log_path), "log_format": LOG_FORMAT},
        },
        *(access_logs or []),
    ]
    listener = http_listener(
        port, route_config, http_filters=http_filters, name=listener_name, access_log=logs
    )
    listener.update(listener_extra or {})
    bootstrap = {
        "static_resources": {
            "listeners": [listener],
            "clusters": [static_cluster("app", [upstream]), static_cluster("mixer", [services_port])],
        }
    }
    if node:
        bootstrap["node"] = node
    proxy = start_proxy(procs, bootstrap, wait_ports=(port,))
    return Mesh(f"http://127.0.0.1:{port}", proxy.admin, log_path)
