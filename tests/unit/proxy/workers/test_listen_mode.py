"""Sockets under --concurrency N: workers share a listener address through SO_REUSEPORT; the main
process holds the address without listening (it gets no connections, yet a foreign bind fails)."""

from __future__ import annotations

import errno
import socket

import pytest
import yaml

from proxy.config.bootstrap import load_bootstrap
from proxy.options import Options
from proxy.server import Server
from tests.support.net import free_port


def _bootstrap(port: int):
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": []}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    listener = {
        "name": "ingress",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    return load_bootstrap(config_yaml=yaml.safe_dump({"static_resources": {"listeners": [listener]}}))


def _connect_refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


def test_main_reserves_the_address_without_accepting_and_workers_share_it():
    port = free_port()
    main = Server(_bootstrap(port), Options(concurrency=2), role="main")
    workers = [Server(_bootstrap(port), Options(), role="worker") for _ in range(2)]
    try:
        main.listener_manager.bind_all()
        assert _connect_refused(port)  # bound, not listening: no connection lands in the main
        with socket.socket() as other, pytest.raises(OSError) as e:
            other.bind(("127.0.0.1", port))
        assert e.value.errno == errno.EADDRINUSE  # yet the address is taken for everyone else
        for w in workers:
            w.listener_manager.bind_all()  # both workers bind the same address
        assert not _connect_refused(port)
    finally:
        for s in [main, *workers]:
            s.listener_manager.stop_accepting()


def test_single_process_keeps_exclusive_binding():
    port = free_port()
    single = Server(_bootstrap(port), Options())
    other = Server(_bootstrap(port), Options())
    try:
        single.listener_manager.bind_all()
        with pytest.raises(OSError, match="cannot bind listener 'ingress'"):
            other.listener_manager.bind_all()
    finally:
        single.listener_manager.stop_accepting()
