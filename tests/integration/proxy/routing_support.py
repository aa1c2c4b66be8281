"""Shared set-up for the routing and fault integration tests: a real proxy in front of two real
upstreams (tests/support/upstream_app.py), with a JSON file access log."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.integration.proxy.harness import http_listener, start_proxy, start_upstream, static_cluster
from tests.support.net import free_port

FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
LOG_FORMAT = {
    "json_format": {
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "path": "%REQ(:PATH)%",
        "route": "%ROUTE_NAME%",
        "cluster": "%UPSTREAM_CLUSTER%",
    }
}


@dataclass
class Setup:
    base: str
    admin: str
    ports: dict[str, int]
    log_path: Path

    def stat(self, name: str) -> int:
        """A counter or gauge value from admin /stats (0 when the stat does not exist yet)."""
        with urllib.request.urlopen(f"{self.admin}/stats?format=json", timeout=5) as resp:
            data = json.load(resp)
        for s in data.get("stats", []):
            if s.get("name") == name and "value" in s:
                return int(s["value"])
        return 0

    def log_entries(self, n: int, timeout: float = 10.0) -> list[dict]:
        """The access log is flushed off the request path: wait until it has n entries."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text() if self.log_path.exists() else ""
            lines = [line for line in text.splitlines() if line.strip()]
            if len(lines) >= n or time.monotonic() > deadline:
                return [json.loads(line) for line in lines]
            time.sleep(0.05)


def start_mesh(
    procs,
    tmp_path,
    routes: list[dict],
    http_filters: list[dict] | None = None,
    extra_clusters: list[dict] | None = None,
    cluster_extra: dict | None = None,
    vhost_extra: dict | None = None,
) -> Setup:
    """Upstreams "a" and "b" (clusters of the same names) behind a proxy whose single virtual host
    has `routes`."""
    ports = {name: start_upstream(procs, name) for name in ("a", "b")}
    port = free_port()
    log_path = tmp_path / "access.log"
    route_config = {
        "name": "rc",
        "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": routes, **(vhost_extra or {})}],
    }
    listener = http_listener(
        port,
        route_config,
        http_filters=http_filters,
        access_log=[
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {"@type": FILE_LOG, "path": str(log_path), "log_format": LOG_FORMAT},
            }
        ],
    )
    clusters = [static_cluster(name, [p], **(cluster_extra or {}).get(name, {})) for name, p in ports.items()]
    bootstrap = {
        "static_resources": {"listeners": [listener], "clusters": clusters + list(extra_clusters or [])}
    }
    proxy = start_proxy(procs, bootstrap, wait_ports=(port,))
    return Setup(f"http://127.0.0.1:{port}", proxy.admin, ports, log_path)
