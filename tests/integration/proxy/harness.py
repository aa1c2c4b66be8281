"""Start real proxies and real upstreams for integration tests."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.net import free_port, wait_for_http, wait_for_port


@dataclass
class RunningProxy:
    proc: object
    admin_port: int
    config_path: Path

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


def start_upstream(procs, name: str, host: str = "127.0.0.1") -> int:
    """Start tests/support/upstream_app.py on a free port; return the port once it accepts."""
    port = free_port(host)
    proc = procs.python(
        "-m", "tests.support.upstream_app", "--host", host, "--port", str(port), "--name", name
    )
    wait_for_port(host, port, proc=proc)
    return port


def admin_block(port: int) -> dict:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}


def start_proxy(procs, bootstrap: dict, *extra_args: str, wait_ports: tuple[int, ...] = ()) -> RunningProxy:
    """Write `bootstrap` (admin added on a free port when absent), run `python -m proxy -c`, wait for
    admin /ready to say LIVE and for each of `wait_ports` to accept connections."""
    bootstrap = dict(bootstrap)
    if "admin" not in bootstrap:
        bootstrap["admin"] = admin_block(free_port())
    admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    path = Path(tempfile.mkstemp(prefix="isthmus-bootstrap-", suffix=".yaml")[1])
    path.write_text(yaml.safe_dump(bootstrap))
    proc = procs.python("-m", "proxy", "-c", str(path), *extra_args)
    wait_for_http(f"http://127.0.0.1:{admin_port}/ready", proc=proc)
    for port in wait_ports:
        wait_for_port("127.0.0.1", port, proc=proc)
    return RunningProxy(proc, admin_port, path)


def static_cluster(name: str, ports: list[int], host: str = "127.0.0.1", **extra) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": p}}}}
                        for p in ports
                    ]
                }
            ],
        },
        **extra,
    }


def http_listener(
    port: int, route_config: dict, http_filters: list[dict] | None = None, name: str = "ingress", **hcm_extra
) -> dict:
    """A listener on 127.0.0.1:port with an HttpConnectionManager and the given inline route_config."""
    filters = list(http_filters or []) + [
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    ]
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": name,
                            "route_config": route_config,
                            "http_filters": filters,
                            **hcm_extra,
                        },
                    }
                ]
            }
        ],
    }
