"""Local mode (``INTERCEPTION_MODE: NONE``): the app reaches its sidecar through HTTP_PROXY on
``<ip>:15001``, so pilot gives the sidecar Istio's HTTP_PROXY egress listener there, with RDS
``http_proxy`` holding every visible service's virtual hosts under the ``host:port`` names that an
absolute-form request carries. The real proxy compiles it and routes an absolute-form request by it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pilot.networking import LISTENER_TYPE, ROUTE_TYPE, generate
from pilot.networking.protos import to_dict
from pilot.networking.routes import HTTP_PROXY_ROUTE
from proxy.core.http1 import RequestParser
from proxy.router import compile_route_configuration
from tests.unit.pilot.networking.bookinfo import fqdn, push, sidecar
from tests.unit.pilot.networking.test_proxy_accepts import check_all

GOLDEN = Path(__file__).parent / "golden" / "http-proxy-local-mode.json"


def local(name="productpage", version="v1", ip="127.0.0.10"):
    return sidecar(name, version, ip, INTERCEPTION_MODE="NONE")


def listeners(proxy, p) -> dict[str, dict]:
    return {lst.name: to_dict(lst) for lst in generate(LISTENER_TYPE, proxy, p)}


def test_local_mode_sidecar_has_an_http_proxy_listener_on_its_ip_15001():
    got = listeners(local(), push("destination-rule-all.yaml"))
    lst = got["127.0.0.10_15001"]
    assert lst["address"]["socket_address"] == {"address": "127.0.0.10", "port_value": 15001}
    assert lst.get("bind_to_port", True) is True
    (chain,) = lst["filter_chains"]
    (hcm,) = chain["filters"]
    assert hcm["typed_config"]["rds"]["route_config_name"] == HTTP_PROXY_ROUTE
    # virtualOutbound stays (same name as with capture) but does not take the port
    assert got["virtualOutbound"]["bind_to_port"] is False


def test_captured_sidecar_has_no_http_proxy_listener_or_route():
    p = push("destination-rule-all.yaml")
    proxy = sidecar()
    names = set(listeners(proxy, p))
    assert not any(n.endswith("_15001") for n in names)
    assert "bind_to_port" not in listeners(proxy, p)["virtualOutbound"]
    assert HTTP_PROXY_ROUTE not in {rc.name for rc in generate(ROUTE_TYPE, proxy, p)}


def test_http_proxy_route_has_every_service_with_port_qualified_domains():
    p = push("destination-rule-all.yaml", "virtual-service-reviews-v3.yaml")
    (rc,) = generate(ROUTE_TYPE, local(), p, {HTTP_PROXY_ROUTE})
    vhosts = {vh.name: list(vh.domains) for vh in rc.virtual_hosts}
    for svc in ("details", "productpage", "ratings", "reviews"):
        domains = vhosts[f"{fqdn(svc)}:9080"]
        assert f"{svc}:9080" in domains and f"{fqdn(svc)}:9080" in domains
        assert svc not in domains  # 9080 is always in an absolute URL's authority
    assert list(vhosts)[-1] == "allow_any"
    # the task's VirtualService applies here as on the port route
    reviews = next(vh for vh in rc.virtual_hosts if vh.name == f"{fqdn('reviews')}:9080")
    assert reviews.routes[0].route.cluster == f"outbound|9080|v3|{fqdn('reviews')}"


def test_http_proxy_route_config_matches_golden():
    p = push("destination-rule-all.yaml", "virtual-service-reviews-jason-v2-v3.yaml")
    proxy = local()
    got = {
        "listener": listeners(proxy, p)["127.0.0.10_15001"],
        "route_configuration": to_dict(generate(ROUTE_TYPE, proxy, p, {HTTP_PROXY_ROUTE})[0]),
    }
    text = json.dumps(got, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), "no golden: run with UPDATE_GOLDEN=1 and review it"
    assert json.loads(GOLDEN.read_text()) == got


def test_the_proxy_accepts_local_mode_config_and_routes_absolute_form_authorities():
    p = push("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    check_all(local(), p)
    check_all(local("reviews", "v2", "127.0.0.13"), p)
    (rc,) = generate(ROUTE_TYPE, local(), p, {HTTP_PROXY_ROUTE})
    table = compile_route_configuration(rc, "route[http_proxy]")
    # what productpage sends through HTTP_PROXY: the codec takes :authority from the absolute URL
    (head, _end) = RequestParser().feed(b"GET http://reviews:9080/reviews/0 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.headers.get(":path") == "/reviews/0"
    vh = table.find_virtual_host(head.headers.get(":authority"))
    assert vh.name == f"{fqdn('reviews')}:9080"
    assert table.find_virtual_host("example.com:80").name == "allow_any"
