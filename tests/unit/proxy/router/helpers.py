from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from proxy.core.headers import Headers
from proxy.router import compile_route_configuration


def table(cfg: dict):
    return compile_route_configuration(
        json_format.ParseDict(cfg, route_pb2.RouteConfiguration()), "route_config"
    )


def req(path="/", authority="example.com", method="GET", scheme="http", **extra):
    h = Headers([(":method", method), (":path", path), (":authority", authority), (":scheme", scheme)])
    for k, v in extra.items():
        h.add(k.replace("_", "-"), v)
    return h


def one_vhost(routes, domains=("*",), **vh_extra):
    return {"virtual_hosts": [{"name": "vh", "domains": list(domains), "routes": routes, **vh_extra}]}


def route(match, **action):
    action = action or {"route": {"cluster": "c"}}
    return {"match": match, **action}
