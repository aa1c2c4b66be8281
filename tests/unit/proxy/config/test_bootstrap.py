"""Bootstrap loading: YAML/JSON, --config-yaml merge, and rejection with field paths."""

from __future__ import annotations

import json

import pytest
import yaml

from proxy.config.bootstrap import load_bootstrap
from proxy.config.errors import ConfigError
from proxy.server import Server

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def tcp_listener(port=10000, **tcp_extra):
    return {
        "name": "tcp",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {"@type": TCP_PROXY, "stat_prefix": "t", "cluster": "c", **tcp_extra},
                    }
                ]
            }
        ],
    }


def write(tmp_path, data, name="b.yaml"):
    p = tmp_path / name
    p.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return str(p)


def test_yaml_and_json_give_the_same_bootstrap(tmp_path):
    data = {"node": {"id": "n1", "cluster": "c1"}, "static_resources": {"listeners": [tcp_listener()]}}
    a = load_bootstrap(write(tmp_path, data, "b.yaml"))
    b = load_bootstrap(write(tmp_path, data, "b.json"))
    assert a == b
    assert a.node.id == "n1"
    # The typed_config Any is resolved to the real TcpProxy type.
    assert a.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.type_url == TCP_PROXY


def test_config_yaml_merges_over_file_like_envoy(tmp_path):
    path = write(
        tmp_path,
        {
            "node": {"id": "from-file", "cluster": "keep"},
            "static_resources": {"listeners": [tcp_listener(10000)]},
        },
    )
    override = yaml.safe_dump(
        {
            "node": {"id": "from-flag"},
            "static_resources": {"listeners": [dict(tcp_listener(10001), name="second")]},
        }
    )
    b = load_bootstrap(path, override)
    assert b.node.id == "from-flag"  # scalars replaced
    assert b.node.cluster == "keep"  # messages merged
    assert [lst.name for lst in b.static_resources.listeners] == ["tcp", "second"]  # repeated appended


def test_config_yaml_alone_is_enough():
    b = load_bootstrap("", "node: {id: only-yaml}")
    assert b.node.id == "only-yaml"


def test_service_node_and_cluster_override(tmp_path):
    path = write(tmp_path, {"node": {"id": "a", "cluster": "b"}})
    b = load_bootstrap(path, service_node="sidecar~1", service_cluster="reviews")
    assert (b.node.id, b.node.cluster) == ("sidecar~1", "reviews")


@pytest.mark.parametrize(
    "data, path",
    [
        (
            {"static_resources": {"listeners": [dict(tcp_listener(), bogus=1)]}},
            "static_resources.listeners[0].bogus",
        ),
        ({"nodee": {}}, "nodee"),
        (
            {"static_resources": {"listeners": [tcp_listener(zzz=1)]}},
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.zzz",
        ),
        (
            {
                "static_resources": {"listeners": [tcp_listener()]},
                "admin": {"address": {"socket_address": {"port_value": "abc"}}},
            },
            "admin.address.socket_address.port_value",
        ),
    ],
)
def test_unknown_fields_are_rejected_with_their_path(tmp_path, data, path):
    with pytest.raises(ConfigError) as e:
        load_bootstrap(write(tmp_path, data))
    assert e.value.path == path


def test_unknown_typed_config_type_is_rejected_with_its_path(tmp_path):
    lst = tcp_listener()
    lst["filter_chains"][0]["filters"][0]["typed_config"] = {"@type": "type.googleapis.com/acme.Nope"}
    with pytest.raises(ConfigError) as e:
        load_bootstrap(write(tmp_path, {"static_resources": {"listeners": [lst]}}))
    assert e.value.path == "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
    assert "acme.Nope" in str(e.value)


def test_known_proto_but_unimplemented_extension_is_rejected(tmp_path):
    # A real Envoy type that Isthmus does not implement as a network filter.
    lst = tcp_listener()
    lst["filter_chains"][0]["filters"][0]["typed_config"] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    }
    b = load_bootstrap(write(tmp_path, {"static_resources": {"listeners": [lst]}}))
    with pytest.raises(ConfigError) as e:
        Server(b)
    assert e.value.path == "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"


def test_unknown_extension_name_without_typed_config(tmp_path):
    lst = tcp_listener()
    lst["filter_chains"][0]["filters"][0] = {"name": "envoy.filters.network.redis_proxy"}
    b = load_bootstrap(write(tmp_path, {"static_resources": {"listeners": [lst]}}))
    with pytest.raises(ConfigError) as e:
        Server(b)
    assert e.value.path == "static_resources.listeners[0].filter_chains[0].filters[0].name"


@pytest.mark.parametrize(
    "data, path",
    [
        ({"node": {"id": "x"}}, None),
        ({"layered_runtime": {"layers": [{"name": "x", "static_layer": {}}]}}, "layered_runtime"),
        ({"admin": {"profile_path": "/tmp/x"}}, "admin.profile_path"),
        (
            {"static_resources": {"listeners": [dict(tcp_listener(), transparent=True)]}},
            "static_resources.listeners[0].transparent",
        ),
        (
            {"static_resources": {"listeners": [tcp_listener(max_connect_attempts=2, on_demand={})]}},
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.on_demand",
        ),
    ],
)
def test_unsupported_fields_are_rejected_with_their_path(tmp_path, data, path):
    b = load_bootstrap(write(tmp_path, data)) if path is None or "listeners" in path else None
    if path is None:
        Server(b)
        return
    with pytest.raises(ConfigError) as e:
        Server(load_bootstrap(write(tmp_path, data)))
    assert e.value.path == path


def test_dynamic_resources_other_than_ads_are_rejected_by_path(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_bootstrap(write(tmp_path, {"dynamic_resources": {"ads_config": {"api_type": "REST"}}}))
    assert e.value.path == "dynamic_resources.ads_config.api_type"
    with pytest.raises(ConfigError) as e:
        load_bootstrap(
            write(tmp_path, {"dynamic_resources": {"lds_config": {"path_config_source": {"path": "/x"}}}})
        )
    assert e.value.path == "dynamic_resources.ads_config"


def test_unreadable_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_bootstrap(str(tmp_path / "missing.yaml"))
    p = tmp_path / "bad.yaml"
    p.write_text("static_resources: [unclosed")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_bootstrap(str(p))
