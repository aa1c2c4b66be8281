import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

from proxy.config.errors import ConfigError
from proxy.xds import api
from proxy.xds.config import ads_config_from_bootstrap


def bootstrap(ads=None, cluster_type="STATIC", address="127.0.0.1", extra_dyn=None):
    ads = ads or {
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
    }
    doc = {
        "node": {"id": "n", "cluster": "c"},
        "dynamic_resources": {
            "ads_config": ads,
            "lds_config": {"ads": {}, "initial_fetch_timeout": "2.5s"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            **(extra_dyn or {}),
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": cluster_type,
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": address, "port_value": 15010}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }
    return json_format.ParseDict(doc, bootstrap_pb2.Bootstrap())


def test_sotw_ads_to_a_static_cluster():
    cfg = ads_config_from_bootstrap(bootstrap())
    assert (cfg.delta, cfg.cluster_name, cfg.target, cfg.lds, cfg.cds) == (
        False,
        "xds-grpc",
        "127.0.0.1:15010",
        True,
        True,
    )
    assert cfg.initial_fetch_timeout(api.LISTENER) == 2.5
    assert cfg.initial_fetch_timeout(api.CLUSTER) == 15.0
    assert cfg.initial_fetch_timeout(api.ENDPOINT) == 15.0


def test_delta_to_a_dns_cluster_keeps_the_hostname_for_grpc_to_resolve():
    ads = {
        "api_type": "DELTA_GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
    }
    cfg = ads_config_from_bootstrap(bootstrap(ads, cluster_type="STRICT_DNS", address="istiod.local"))
    assert cfg.delta and cfg.target == "istiod.local:15010"


def test_no_dynamic_resources_means_no_client():
    assert ads_config_from_bootstrap(bootstrap_pb2.Bootstrap()) is None


@pytest.mark.parametrize(
    "ads, path",
    [
        ({"api_type": "REST", "transport_api_version": "V3"}, "ads_config.api_type"),
        (
            {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
            "ads_config.transport_api_version",
        ),
        ({"api_type": "GRPC", "transport_api_version": "V3"}, "ads_config.grpc_services"),
        (
            {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "nope"}}],
            },
            "envoy_grpc.cluster_name",
        ),
        (
            {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                "refresh_delay": "1s",
            },
            "ads_config.refresh_delay",
        ),
    ],
)
def test_unsupported_or_wrong_ads_config_is_reported_with_its_field(ads, path):
    with pytest.raises(ConfigError) as e:
        ads_config_from_bootstrap(bootstrap(ads))
    assert path in e.value.path


def test_lds_from_a_file_is_not_supported_and_says_so():
    b = bootstrap(extra_dyn={"lds_config": {"path_config_source": {"path": "/tmp/lds.yaml"}}})
    with pytest.raises(ConfigError) as e:
        ads_config_from_bootstrap(b)
    assert "lds_config" in e.value.path
