"""Route and virtual-host rate_limits: compiled by the route table, descriptors per Envoy's rules."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from proxy.config.errors import ConfigError
from proxy.core.headers import Headers
from proxy.router import compile_route_configuration
from proxy.router.rate_limits import DescriptorContext, descriptors_for


def table(vhost_limits=None, route_limits=None, include_vh=None):
    route = {"cluster": "productpage"}
    if route_limits is not None:
        route["rate_limits"] = route_limits
    if include_vh is not None:
        route["include_vh_rate_limits"] = include_vh
    vh = {"name": "vh", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}
    if vhost_limits is not None:
        vh["rate_limits"] = vhost_limits
    rc = json_format.ParseDict({"name": "rc", "virtual_hosts": [vh]}, route_pb2.RouteConfiguration())
    return compile_route_configuration(rc, "rc")


def headers(**extra) -> Headers:
    h = Headers([(":method", "GET"), (":path", "/productpage"), (":authority", "bookinfo")])
    for k, v in extra.items():
        h.add(k.replace("_", "-"), v)
    return h


def ctx(h, remote="10.1.2.3") -> DescriptorContext:
    return DescriptorContext(
        h, local_cluster="productpage.default", route_cluster="productpage", remote_address=remote
    )


def test_every_supported_action_produces_its_entry():
    t = table(
        route_limits=[
            {
                "actions": [
                    {"source_cluster": {}},
                    {"destination_cluster": {}},
                    {"request_headers": {"header_name": "x-user", "descriptor_key": "user"}},
                    {"remote_address": {}},
                    {"generic_key": {"descriptor_value": "productpage"}},
                    {
                        "header_value_match": {
                            "descriptor_value": "get",
                            "headers": [{"name": ":method", "exact_match": "GET"}],
                        }
                    },
                ]
            }
        ]
    )
    h = headers(x_user="jason")
    route = t.match(h)
    assert descriptors_for(route.rate_limits, 0, ctx(h)) == [
        (
            ("source_cluster", "productpage.default"),
            ("destination_cluster", "productpage"),
            ("user", "jason"),
            ("remote_address", "10.1.2.3"),
            ("generic_key", "productpage"),
            ("header_match", "get"),
        )
    ]


def test_missing_header_drops_the_descriptor_unless_skip_if_absent():
    t = table(
        route_limits=[
            {
                "actions": [
                    {"generic_key": {"descriptor_value": "a"}},
                    {"request_headers": {"header_name": "x-user", "descriptor_key": "user"}},
                ]
            },
            {
                "actions": [
                    {"generic_key": {"descriptor_value": "b", "descriptor_key": "k"}},
                    {
                        "request_headers": {
                            "header_name": "x-user",
                            "descriptor_key": "user",
                            "skip_if_absent": True,
                        }
                    },
                ]
            },
        ]
    )
    h = headers()
    assert descriptors_for(t.match(h).rate_limits, 0, ctx(h)) == [(("k", "b"),)]


def test_header_value_match_expect_match_false_and_stage_selection():
    t = table(
        route_limits=[
            {
                "stage": 1,
                "actions": [
                    {
                        "header_value_match": {
                            "descriptor_key": "anon",
                            "descriptor_value": "yes",
                            "expect_match": False,
                            "headers": [{"name": "end-user", "present_match": True}],
                        }
                    }
                ],
            }
        ]
    )
    anon = headers()
    jason = headers(end_user="jason")
    limits = t.match(anon).rate_limits
    assert descriptors_for(limits, 0, ctx(anon)) == []
    assert descriptors_for(limits, 1, ctx(anon)) == [(("anon", "yes"),)]
    assert descriptors_for(limits, 1, ctx(jason)) == []


def test_virtual_host_rate_limits_and_include_flag_are_compiled():
    vh_limit = [{"actions": [{"generic_key": {"descriptor_value": "vh"}}]}]
    t = table(vhost_limits=vh_limit, route_limits=[{"actions": [{"remote_address": {}}]}], include_vh=True)
    route = t.match(headers())
    assert route.include_vh_rate_limits
    assert len(route.virtual_host.rate_limits) == 1 and len(route.rate_limits) == 1


@pytest.mark.parametrize(
    "limits, where",
    [
        (
            [{"actions": [{"query_parameters": {"query_parameter_name": "q", "descriptor_key": "q"}}]}],
            "query_parameters",
        ),
        ([{"actions": [{"generic_key": {"descriptor_value": "x"}}], "limit": {}}], "limit"),
        ([{"actions": []}], "actions"),
        ([{"actions": [{"request_headers": {"header_name": "x"}}]}], "request_headers"),
        (
            [{"actions": [{"generic_key": {"descriptor_value": "x"}}], "hits_addend": {"number": 2}}],
            "hits_addend",
        ),
    ],
)
def test_unsupported_or_invalid_rate_limits_are_config_errors_naming_the_field(limits, where):
    with pytest.raises(ConfigError) as e:
        table(route_limits=limits)
    assert "rate_limits[0]" in e.value.path and where in str(e.value)
