"""Per-route fault configuration (typed_per_filter_config), the way Istio configures faults."""

import pytest
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import json_format

from proxy.config.errors import ConfigError
from proxy.core.headers import Headers
from proxy.filters.http.base import CONTINUE, STOP
from proxy.filters.http.fault import FaultFilter, make_fault
from proxy.router import compile_route_configuration
from tests.unit.proxy.filters.http.fakes import FakeStream, context, request

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def table(per_route: dict | None):
    route = {"match": {"prefix": "/abort"}, "route": {"cluster": "c"}}
    if per_route is not None:
        route["typed_per_filter_config"] = {"envoy.filters.http.fault": per_route}
    rc = {
        "name": "r",
        "virtual_hosts": [
            {
                "name": "vh",
                "domains": ["*"],
                "routes": [route, {"match": {"prefix": "/"}, "route": {"cluster": "c"}}],
            }
        ],
    }
    return compile_route_configuration(json_format.ParseDict(rc, route_pb2.RouteConfiguration()))


def match(t, path):
    return t.match(Headers([(":authority", "x"), (":path", path), (":method", "GET")]))


async def test_route_fault_overrides_an_empty_filter_config():
    t = table(
        {
            "@type": FAULT,
            "abort": {"http_status": 555, "percentage": {"numerator": 1000000, "denominator": "MILLION"}},
        }
    )
    ctx, _ = context()
    factory = make_fault(fault_pb2.HTTPFault(), ctx, "f")  # the HCM's filter: empty, as Istio emits it
    # A request on the faulted route is aborted with the route's status ...
    stream = FakeStream(request(path="/abort"), route=match(t, "/abort"))
    assert await FaultFilter(factory.config).on_request_headers(stream, True) is STOP
    assert stream.local_reply[0] == 555
    assert ctx.stats.counters["http.ingress.fault.aborts_injected"].value == 1
    # ... and one on another route passes untouched.
    stream = FakeStream(request(path="/"), route=match(t, "/"))
    assert await FaultFilter(factory.config).on_request_headers(stream, True) is CONTINUE


def test_per_route_config_is_validated_by_path():
    with pytest.raises(ConfigError) as e:
        table({"@type": FAULT, "abort": {"http_status": 99, "percentage": {"numerator": 100}}})
    assert "typed_per_filter_config[envoy.filters.http.fault].abort.http_status" in str(e.value)


def test_unknown_filter_name_is_rejected():
    rc = {
        "name": "r",
        "virtual_hosts": [
            {
                "name": "vh",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "route": {"cluster": "c"},
                        "typed_per_filter_config": {"envoy.filters.http.cors": {"@type": FAULT}},
                    }
                ],
            }
        ],
    }
    with pytest.raises(ConfigError) as e:
        compile_route_configuration(json_format.ParseDict(rc, route_pb2.RouteConfiguration()))
    assert "envoy.filters.http.cors" in str(e.value)
