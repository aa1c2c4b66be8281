"""Transparent mode's topology (pure): the same processes as local mode, each run inside its place's
network namespace, sidecars as the proxy's user with REDIRECT interception, apps by name with no proxy
settings, pilot's registry with pod IPs, the host forwards, and the refusals before anything is made."""

from __future__ import annotations

import argparse

import pytest
import yaml

from isthmus.launcher import local, transparent
from isthmus.launcher.portmap import Forward, check_forwards, parse_forward
from isthmus.launcher.topology import MeshOptions, mesh

APPS = ("productpage", "details", "reviews-v1", "reviews-v2", "reviews-v3", "ratings")
OPTS = MeshOptions(state_dir="/s", control_address="127.0.0.9", address_base="127.0.0.10")


@pytest.fixture
def net():
    return transparent.plan(run_id="abc123")


def flags(argv: list[str]) -> dict[str, str]:
    return dict(zip(argv, argv[1:], strict=False))


def test_same_processes_as_local_mode_plus_portmap_first(net):
    t = transparent.topology(OPTS, net)
    local_names = [w.name for w in mesh(OPTS).workloads]
    assert [w.name for w in t.workloads] == ["portmap", *local_names]
    order = [w.name for w in t.start_order()]
    assert order[0] == "portmap" and order[-1] == "istio-ingressgateway"
    assert all("portmap" in w.depends_on for w in t.workloads[1:])


def test_control_plane_runs_in_the_control_namespace_on_its_bridge_address(net):
    t = transparent.topology(OPTS, net)
    ctl = net.get("control")
    pilot = t.get("pilot").argv("python")
    assert pilot[:4] == ["ip", "netns", "exec", "isth-abc123-control"]
    assert flags(pilot)["--grpc-addr"] == f"{ctl.ip}:15010"
    assert flags(t.get("citadel").argv("python"))["--server-ips"] == ctl.ip
    # readiness and the user go through the host forwards on --control-address
    assert t.get("pilot").ready_url == "http://127.0.0.9:15014/ready"
    assert t.get("istio-ingressgateway").ready_url == "http://127.0.0.9:8080/productpage"


def test_sidecars_run_as_the_proxy_user_with_redirect_and_the_pod_ip(net):
    t = transparent.topology(OPTS, net)
    sidecar = t.get("reviews-v3-sidecar")
    argv = sidecar.argv("python")
    pod = net.get("reviews-v3")
    assert argv[:4] == ["ip", "netns", "exec", pod.netns]
    assert argv[4:7] == ["setpriv", "--reuid=1337", "--regid=1337"]
    assert "--ambient-caps=+dac_read_search" in argv
    f = flags(argv)
    assert f["--ip"] == pod.ip and f["--interception-mode"] == "REDIRECT"
    assert "--app-address" not in argv
    assert f["--discovery-address"] == f"{net.get('control').ip}:15010"
    assert sidecar.env["HOME"] == "/s/proxies/reviews-v3"
    assert sidecar.ready_url == "http://127.0.0.14:15021/healthz/ready"  # the workload's host address
    gw = t.get("istio-ingressgateway").argv("python")
    assert "setpriv" not in gw and flags(gw)["--interception-mode"] == "NONE"
    assert flags(gw)["--ip"] == net.get("istio-ingressgateway").ip


def test_apps_listen_everywhere_in_their_namespace_and_call_by_name_without_a_proxy(net):
    t = transparent.topology(OPTS, net)
    for name in APPS:
        app = t.get(name)
        assert app.argv("python")[:4] == ["ip", "netns", "exec", net.get(name).netns]
        assert "setpriv" not in app.argv("python")  # not the proxy's user: its traffic is captured
        assert app.env["LISTEN_ADDRESS"] == "0.0.0.0"
        assert not {k for k in app.env if k.lower().endswith("_proxy")}
        assert app.depends_on == ("portmap", f"{name}-sidecar")
    pp = t.get("productpage").env
    assert (pp["DETAILS_HOSTNAME"], pp["REVIEWS_HOSTNAME"], pp["RATINGS_HOSTNAME"]) == (
        "details",
        "reviews",
        "ratings",
    )
    hosts = net.hosts_file()
    assert f"{net.service_addresses['reviews']}\treviews reviews.default " in hosts


def test_pilot_registry_has_the_pod_ips(net):
    docs = [d for d in yaml.safe_load_all(transparent.services_yaml(OPTS, net)) if d]
    entries = {d["metadata"]["name"]: d["spec"]["address"] for d in docs if d["kind"] == "WorkloadEntry"}
    assert entries == {name: net.get(name).ip for name in APPS}


def test_forwards_reach_the_gateway_pilot_dashboard_and_each_workload(net):
    fw = {(f.host, f.port): (f.netns, f.target, f.target_port) for f in transparent.forwards(OPTS, net)}
    ctl, gw, pp = net.get("control"), net.get("istio-ingressgateway"), net.get("productpage")
    assert fw[("127.0.0.9", 8080)] == (gw.netns, gw.ip, 8080)
    assert fw[("127.0.0.9", 15014)] == (ctl.netns, ctl.ip, 15014)
    assert fw[("127.0.0.9", 20001)] == (ctl.netns, ctl.ip, 20001)
    for port in (9080, 15000, 15021):
        assert fw[("127.0.0.10", port)] == (pp.netns, pp.ip, port)
    check_forwards(transparent.forwards(OPTS, net))  # no host address:port twice


def test_portmap_forward_spec_round_trips_and_bad_ones_are_named():
    f = Forward("127.0.0.9", 8080, "isth-abc123-istio-ingressgateway", "198.18.0.3", 8080)
    assert parse_forward(f.spec()) == f
    for bad, why in (
        ("127.0.0.9:8080", "expected HOST:PORT=NETNS,IP:PORT"),
        ("127.0.0.9:8080=ns", "expected HOST:PORT=NETNS,IP:PORT"),
        ("127.0.0.9:0=ns,198.18.0.3:80", "port must be 1..65535"),
        ("localhost:80=ns,198.18.0.3:80", "is not an IPv4 address"),
        ("127.0.0.9:80=../x,198.18.0.3:80", "not a network namespace name"),
    ):
        with pytest.raises(ValueError, match=why.replace(".", r"\.").replace("(", r"\(")):
            parse_forward(bad)
    with pytest.raises(ValueError, match="forwarded twice"):
        check_forwards([f, f])


def test_transparent_refused_without_root_or_tools_before_anything_is_made():
    assert "needs root" in local.transparent_refusal(euid=1000)
    assert "setpriv" in local.transparent_refusal(euid=0, which=lambda t: None if t == "setpriv" else "/x")
    assert local.transparent_refusal(euid=0, which=lambda t: "/usr/bin/" + t) == ""


def test_cli_refuses_transparent_without_root(monkeypatch, capsys):
    from isthmus import cli

    monkeypatch.setattr(local.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as e:
        cli.main(["up", "--transparent", "--state-dir", "/nonexistent/never-written"])
    assert e.value.code == 2
    assert "--transparent needs root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["up", "--transparent", "--apps-only"])
    assert "no --transparent" in capsys.readouterr().err


def test_detached_transparent_up_keeps_the_flag():
    args = argparse.Namespace(
        address_base="127.0.0.10", port=9080, control_address="127.0.0.1", state_dir="/s",
        ready_timeout=60.0, drain="2s", redis=None, log_level=None, transparent=True,
    )  # fmt: skip
    assert "--transparent" in local.foreground_argv(args)
