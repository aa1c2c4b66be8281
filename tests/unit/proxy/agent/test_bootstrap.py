"""The agent's bootstrap generator: golden sidecar and router bootstraps, which parse into the real
envoy.config.bootstrap.v3.Bootstrap and pass `python -m proxy --mode validate`; bad options are refused by
name. ``UPDATE_GOLDEN=1`` rewrites the goldens; review the diff before committing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2

from pilot.model.proxy import parse_node
from pilot.networking import tls as pilot_tls
from pilot.serviceregistry.autoregister import parse_service_ports
from proxy.agent.bootstrap import (
    BootstrapError,
    BootstrapOptions,
    build_bootstrap,
    node_id,
    parse_labels,
)
from proxy.config.bootstrap import check_supported, parse_bootstrap_dict

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[4]

SIDECAR = BootstrapOptions(
    name="reviews-v1",
    ip="127.0.0.12",
    namespace="default",
    service_account="bookinfo-reviews",
    labels={"app": "reviews", "version": "v1"},
    service="reviews",
    service_ports="http:9080",
    discovery_address="127.0.0.1:15010",
    sds_socket="/var/run/isthmus/reviews-v1/SDS",
)
ROUTER = BootstrapOptions(
    name="istio-ingressgateway",
    ip="127.0.0.1",
    proxy_type="router",
    namespace="istio-system",
    service_account="istio-ingressgateway-service-account",
    labels={"istio": "ingressgateway", "app": "istio-ingressgateway"},
    discovery_address="pilot:15010",
    delta=True,
    sds_socket="/var/run/isthmus/gateway/SDS",
    interception_mode="NONE",
)
CASES = {"sidecar": SIDECAR, "router": ROUTER}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    got = build_bootstrap(CASES[case])
    path = GOLDEN / f"{case}_bootstrap.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(got, indent=2) + "\n")
    assert got == json.loads(path.read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_parses_into_envoy_bootstrap_and_proxy_accepts_it(case):
    msg = parse_bootstrap_dict(build_bootstrap(CASES[case]))
    assert isinstance(msg, bootstrap_pb2.Bootstrap)
    check_supported(msg)  # the proxy's own field-by-field support check
    assert msg.node.id == node_id(CASES[case])


@pytest.mark.parametrize("case", sorted(CASES))
def test_proxy_validate_mode_accepts_it(case, tmp_path):
    path = tmp_path / "envoy-rev.json"
    path.write_text(json.dumps(build_bootstrap(CASES[case])))
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "--mode", "validate", "-c", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


def test_pilot_reads_the_node_as_the_workload_we_described():
    b = build_bootstrap(SIDECAR)
    proxy = parse_node(b["node"]["id"], b["node"]["metadata"])
    assert (proxy.type, proxy.name, proxy.namespace) == ("sidecar", "reviews-v1", "default")
    assert proxy.ip_addresses == ["127.0.0.12"]
    assert proxy.labels == {"app": "reviews", "version": "v1"}
    assert proxy.service_account == "bookinfo-reviews"
    assert [
        (p.name, p.number, p.protocol)
        for p in parse_service_ports(b["node"]["metadata"]["ISTHMUS_SERVICE_PORTS"])
    ] == [("http", 9080, "HTTP")]
    router = build_bootstrap(ROUTER)
    assert parse_node(router["node"]["id"], router["node"]["metadata"]).type == "router"


def test_sds_cluster_is_the_one_pilot_points_tls_at():
    b = build_bootstrap(SIDECAR)
    clusters = {c["name"]: c for c in b["static_resources"]["clusters"]}
    sds_ref = pilot_tls.SDS_CONFIG["api_config_source"]["grpc_services"][0]["envoy_grpc"]["cluster_name"]
    assert sds_ref in clusters
    endpoint = clusters[sds_ref]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": SIDECAR.sds_socket}}


def test_xds_cluster_static_for_an_ip_strict_dns_for_a_name():
    def xds(opts):
        return next(
            c for c in build_bootstrap(opts)["static_resources"]["clusters"] if c["name"] == "xds-grpc"
        )

    assert xds(SIDECAR)["type"] == "STATIC"
    assert xds(ROUTER)["type"] == "STRICT_DNS"


def test_delta_and_sotw():
    assert build_bootstrap(SIDECAR)["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
    assert build_bootstrap(ROUTER)["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"


def test_no_prometheus_listener_with_stats_port_0():
    from dataclasses import replace

    b = build_bootstrap(replace(SIDECAR, stats_port=0))
    assert b["static_resources"]["listeners"] == []
    assert "prometheus_stats" not in [c["name"] for c in b["static_resources"]["clusters"]]


def test_app_address_becomes_node_metadata_only_when_given():
    from dataclasses import replace

    assert "ISTHMUS_APP_ADDRESS" not in build_bootstrap(SIDECAR)["node"]["metadata"]
    b = build_bootstrap(replace(SIDECAR, app_address="127.0.1.12"))
    assert b["node"]["metadata"]["ISTHMUS_APP_ADDRESS"] == "127.0.1.12"
    proxy = parse_node(b["node"]["id"], b["node"]["metadata"])
    assert proxy.metadata["ISTHMUS_APP_ADDRESS"] == "127.0.1.12"  # what pilot's ingress listeners read


@pytest.mark.parametrize(
    ("app_address", "message"),
    [("reviews", "--app-address 'reviews' is not an IP address"), ("127.0.0.12", "must differ from --ip")],
)
def test_bad_app_address_is_refused(app_address, message):
    from dataclasses import replace

    with pytest.raises(BootstrapError, match=message):
        build_bootstrap(replace(SIDECAR, app_address=app_address))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"proxy_type": "gateway"}, "--type 'gateway'"),
        ({"ip": "not-an-ip"}, "--ip 'not-an-ip'"),
        ({"name": "Reviews_V1"}, "--name 'Reviews_V1'"),
        ({"namespace": "a.b"}, "--namespace 'a.b'"),
        ({"labels": {"bad key!": "x"}}, "--label 'bad key!'"),
        ({"interception_mode": "TPROXY"}, "--interception-mode 'TPROXY'"),
        ({"service_ports": "http"}, "--service-ports: 'http'"),
        ({"service_ports": "http:99999"}, "--service-ports: 'http:99999'"),
        ({"service_ports": ""}, "--service needs --service-ports"),
        ({"discovery_address": "pilot"}, "--discovery-address 'pilot'"),
        ({"admin_port": 0}, "--proxy-admin-port 0"),
        ({"sds_socket": ""}, "--sds-socket"),
    ],
)
def test_bad_options_are_refused_by_name(change, message):
    from dataclasses import replace

    with pytest.raises(BootstrapError) as e:
        build_bootstrap(replace(SIDECAR, **change))
    assert message in str(e.value)


def test_parse_labels():
    assert parse_labels(["app=reviews", "version=v1", "empty="]) == {
        "app": "reviews",
        "version": "v1",
        "empty": "",
    }
    with pytest.raises(BootstrapError, match="expected KEY=VALUE"):
        parse_labels(["app"])
    with pytest.raises(BootstrapError, match="twice"):
        parse_labels(["app=a", "app=b"])
