"""HttpConnectionManager config: Envoy defaults, and every unsupported field rejected by path."""

from __future__ import annotations

import pytest
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers the Any type)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import load_builtin_extensions
from proxy.filters.network.http_connection_manager import build_config
from proxy.stats.store import Store

ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
ROUTES = {
    "virtual_hosts": [
        {"name": "vh", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}
    ]
}


def build(**fields):
    load_builtin_extensions()
    d = {"stat_prefix": "ing", "route_config": ROUTES, "http_filters": [ROUTER], **fields}
    msg = json_format.ParseDict(d, hcm_pb2.HttpConnectionManager())
    return build_config(msg, FactoryContext(stats=Store()), "hcm")


def test_envoy_defaults():
    cfg = build()
    assert cfg.max_header_bytes == 60 * 1024 and cfg.stream_idle_timeout == 300.0
    assert cfg.request_timeout is None and cfg.request_headers_timeout is None
    assert cfg.idle_timeout == 3600.0 and cfg.server_name == "envoy" and cfg.generate_request_id
    assert not cfg.use_remote_address and not cfg.accept_http_10
    assert cfg.route_provider.current() is not None


def test_configured_values():
    cfg = build(
        max_request_headers_kb=8,
        request_timeout="2s",
        request_headers_timeout="0.5s",
        stream_idle_timeout="0s",
        server_name="isthmus",
        use_remote_address=True,
        common_http_protocol_options={"idle_timeout": "10s"},
        upgrade_configs=[{"upgrade_type": "WebSocket"}, {"upgrade_type": "h2c", "enabled": False}],
    )
    assert cfg.max_header_bytes == 8192 and cfg.request_timeout == 2.0 and cfg.request_headers_timeout == 0.5
    assert cfg.stream_idle_timeout is None  # 0 disables, as in Envoy
    assert cfg.idle_timeout == 10.0 and cfg.server_name == "isthmus" and cfg.use_remote_address
    assert cfg.upgrade_types == frozenset({"websocket"})


@pytest.mark.parametrize(
    "fields,path",
    [
        ({"strip_matching_host_port": True}, "hcm.strip_matching_host_port"),
        (
            {"common_http_protocol_options": {"max_stream_duration": "1s"}},
            "hcm.common_http_protocol_options.max_stream_duration",
        ),
        ({"codec_type": "HTTP2"}, "hcm.codec_type"),
        ({"proxy_100_continue": True}, "hcm.proxy_100_continue"),
        (
            {
                "http_filters": [
                    {
                        "name": "envoy.filters.http.fault",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
                        },
                    }
                ]
            },
            "hcm.http_filters[0]",
        ),
        ({"http_filters": [ROUTER, ROUTER]}, "hcm.http_filters[0]"),
    ],
)
def test_unsupported_or_invalid_fields_are_rejected_by_path(fields, path):
    with pytest.raises(ConfigError) as e:
        build(**fields)
    assert e.value.path == path


def test_rds_is_rejected_until_xds_supplies_it():
    with pytest.raises(ConfigError) as e:
        load_builtin_extensions()
        msg = json_format.ParseDict(
            {
                "stat_prefix": "x",
                "rds": {"route_config_name": "r", "config_source": {"ads": {}}},
                "http_filters": [ROUTER],
            },
            hcm_pb2.HttpConnectionManager(),
        )
        build_config(msg, FactoryContext(stats=Store()), "hcm")
    assert e.value.path == "hcm.rds" and "xDS" in e.value.message
