"""Local mode with ``ISTHMUS_APP_ADDRESS`` (Istio's Sidecar ingress listener, port + defaultEndpoint):
the sidecar binds ``<ip>:<workload port>`` with an INBOUND listener whose chains follow the port's
PeerAuthentication mode, and ``inbound|<port>||`` forwards to the app's private address. The real
proxy accepts the whole config."""

from __future__ import annotations

import pytest

from pilot.networking import CLUSTER_TYPE, LISTENER_TYPE, generate
from pilot.networking.protos import to_dict
from tests.unit.pilot.networking.bookinfo import config, push, sidecar
from tests.unit.pilot.networking.test_proxy_accepts import check_all


def behind(**extra):
    return sidecar(INTERCEPTION_MODE="NONE", ISTHMUS_APP_ADDRESS="127.0.1.10", **extra)


def listeners(proxy, p) -> dict[str, dict]:
    return {lst.name: to_dict(lst) for lst in generate(LISTENER_TYPE, proxy, p)}


def pa(mode: str):
    return config(
        "PeerAuthentication", "default", {"mtls": {"mode": mode}}, "istio-system", "security.istio.io"
    )


def test_sidecar_binds_the_workload_port_inbound_permissive_by_default():
    got = listeners(behind(), push("destination-rule-all.yaml"))
    lst = got["127.0.0.10_9080"]
    assert lst["address"]["socket_address"] == {"address": "127.0.0.10", "port_value": 9080}
    assert lst.get("bind_to_port", True) is True and lst["traffic_direction"] == "INBOUND"
    protocols = [c["filter_chain_match"]["transport_protocol"] for c in lst["filter_chains"]]
    assert protocols == ["tls", "raw_buffer"]  # PERMISSIVE: mTLS and plaintext callers
    assert "transport_socket" in lst["filter_chains"][0] and "transport_socket" not in lst["filter_chains"][1]
    assert any(f["name"].endswith("tls_inspector") for f in lst["listener_filters"])
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert route["cluster"] == "inbound|9080||"
    assert hcm["forward_client_cert_details"]  # XFCC reaches the app, as on virtualInbound


@pytest.mark.parametrize("mode,chains", [("STRICT", 1), ("DISABLE", 1)])
def test_chains_follow_peer_authentication(mode, chains):
    lst = listeners(behind(), push("destination-rule-all.yaml", configs=[pa(mode)]))["127.0.0.10_9080"]
    assert len(lst["filter_chains"]) == chains
    assert ("transport_socket" in lst["filter_chains"][0]) == (mode == "STRICT")


def test_inbound_cluster_points_at_the_app_private_address():
    clusters = {c.name: to_dict(c) for c in generate(CLUSTER_TYPE, behind(), push())}
    ep = clusters["inbound|9080||"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert ep["address"]["socket_address"] == {"address": "127.0.1.10", "port_value": 9080}
    assert "upstream_bind_config" not in clusters["inbound|9080||"]


@pytest.mark.parametrize(
    "proxy",
    [sidecar(INTERCEPTION_MODE="NONE"), sidecar(ISTHMUS_APP_ADDRESS="127.0.1.10")],
    ids=["no-app-address", "captured"],
)
def test_without_app_address_or_with_capture_nothing_binds_the_workload_port(proxy):
    lst = listeners(proxy, push()).get(f"{proxy.ip_addresses[0]}_9080") or listeners(proxy, push()).get(
        "0.0.0.0_9080"
    )
    assert lst is None or lst.get("bind_to_port") is False


def test_real_proxy_accepts_the_config():
    check_all(behind(), push("destination-rule-all.yaml"))
    check_all(behind(), push("destination-rule-all.yaml", configs=[pa("STRICT")]))
