"""A fake proxy server object with the attributes the admin reads (see proxy/server.py)."""

from __future__ import annotations

import enum
import importlib
import time

from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

from proxy.config.bootstrap import EXTENSION_PROTO_MODULES
from proxy.stats.store import Store
from proxy.upstream.host import Host

for _mod in EXTENSION_PROTO_MODULES:  # so json_format can resolve the typed_config Anys
    importlib.import_module(_mod)

BOOTSTRAP = {
    "node": {"id": "sidecar~10.0.0.1~app.default", "cluster": "app"},
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
    "static_resources": {
        "listeners": [
            {
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
                "filter_chains": [
                    {
                        "filters": [
                            {
                                "name": "envoy.filters.network.http_connection_manager",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                    "stat_prefix": "ingress",
                                    "route_config": {
                                        "name": "local_route",
                                        "virtual_hosts": [
                                            {
                                                "name": "all",
                                                "domains": ["*"],
                                                "routes": [
                                                    {
                                                        "match": {"prefix": "/"},
                                                        "route": {"cluster": "backend"},
                                                    }
                                                ],
                                            }
                                        ],
                                    },
                                    "http_filters": [
                                        {
                                            "name": "envoy.filters.http.router",
                                            "typed_config": {
                                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                            },
                                        }
                                    ],
                                },
                            }
                        ]
                    }
                ],
            },
            {
                "name": "inbound",
                "traffic_direction": "INBOUND",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15006}},
                "filter_chains": [
                    {
                        "filters": [
                            {
                                "name": "envoy.filters.network.tcp_proxy",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                    "stat_prefix": "inbound",
                                    "cluster": "backend",
                                },
                            }
                        ]
                    }
                ],
            },
        ],
        "clusters": [
            {
                "name": "backend",
                "type": "STATIC",
                "connect_timeout": "1s",
                "circuit_breakers": {"thresholds": [{"max_connections": 7}]},
                "load_assignment": {
                    "cluster_name": "backend",
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {
                                    "endpoint": {
                                        "address": {
                                            "socket_address": {"address": "127.0.0.1", "port_value": 8081}
                                        }
                                    }
                                },
                                {
                                    "endpoint": {
                                        "address": {
                                            "socket_address": {"address": "127.0.0.1", "port_value": 8082}
                                        }
                                    }
                                },
                            ]
                        }
                    ],
                },
            }
        ],
    },
}


class State(enum.IntEnum):
    LIVE = 0
    DRAINING = 1
    PRE_INITIALIZING = 2
    INITIALIZING = 3


class FakeListener:
    def __init__(self, proto):
        self.proto = proto
        self.name = proto.name
        self.host = proto.address.socket_address.address
        self.port = proto.address.socket_address.port_value
        self.accepting = True

    def stop_accepting(self):
        self.accepting = False


class FakeListenerManager:
    def __init__(self, protos):
        self.listeners = [FakeListener(p) for p in protos]
        self.drained = None

    def start_drain(self, inbound_only=False):
        self.drained = {"inbound_only": inbound_only}


class FakeCluster:
    def __init__(self, proto):
        self.name = proto.name
        self.proto = proto
        self.hosts = [Host(("127.0.0.1", 8081), weight=3), Host(("127.0.0.1", 8082))]
        self.hosts[0].stats.rq_total = 12
        self.hosts[0].stats.cx_active = 2
        self.hosts[1].health_flags.add("/failed_eds_health")


class FakeClusterManager:
    def __init__(self, protos):
        self.clusters = {p.name: FakeCluster(p) for p in protos}


class FakeOptions:
    config_path = "/etc/bootstrap.yaml"
    config_yaml = ""
    concurrency = 1
    log_level = "info"
    service_node = ""
    service_cluster = ""
    drain_time_s = 5
    parent_shutdown_time_s = 900
    mode = "serve"


class FakeServer:
    def __init__(self):
        self.bootstrap = json_format.ParseDict(BOOTSTRAP, bootstrap_pb2.Bootstrap())
        self.stats = Store()
        self.state = State.LIVE
        self.healthcheck_failed = False
        self.options = FakeOptions()
        self.start_time = time.time() - 42
        self.listener_manager = FakeListenerManager(self.bootstrap.static_resources.listeners)
        self.cluster_manager = FakeClusterManager(self.bootstrap.static_resources.clusters)
        self.shutdowns = []
        self.drains = []

    def uptime(self):
        return time.time() - self.start_time

    def shutdown(self, drain=True):
        self.shutdowns.append(drain)

    def start_drain(self, inbound_only=False):
        self.drains.append(inbound_only)
        self.listener_manager.start_drain(inbound_only)
