"""The whole-mesh topology (pure): start order, addresses, what each process is told, the registry YAML
pilot gets, and the state file that `isthmus down`/`status` read."""

from __future__ import annotations

import os

import pytest
import yaml

from isthmus.commands import status
from isthmus.launcher import state
from isthmus.launcher.local import DATA, shared_samples
from isthmus.launcher.topology import MeshOptions, local_addressing, mesh, mesh_services_yaml
from pilot.config.parse import load_paths

APPS = ("productpage", "details", "reviews-v1", "reviews-v2", "reviews-v3", "ratings")


def topo(**kw):
    return mesh(MeshOptions(state_dir="/s", **kw))


def test_start_order_control_plane_then_sidecars_then_apps_then_gateway():
    order = [w.name for w in topo().start_order()]
    assert order[:3] == ["citadel", "pilot", "mixer"]
    for app in APPS:
        assert order.index(f"{app}-sidecar") < order.index(app)  # holdApplicationUntilProxyStarts
    assert order[-1] == "istio-ingressgateway"
    assert max(order.index(a) for a in APPS) < order.index("istio-ingressgateway")


def test_apps_talk_through_their_own_sidecar_by_service_name():
    t = topo(address_base="127.0.0.30")
    pp = t.get("productpage")
    # behind its sidecar: the app listens on its private address, the sidecar owns 127.0.0.30:9080
    assert pp.address == "127.0.1.30" and pp.env["LISTEN_ADDRESS"] == "127.0.1.30"
    assert pp.env["HTTP_PROXY"] == "http://127.0.0.30:15001"
    assert (pp.env["DETAILS_HOSTNAME"], pp.env["REVIEWS_HOSTNAME"]) == ("details", "reviews")
    r3 = t.get("reviews-v3")
    assert r3.env["HTTP_PROXY"] == "http://127.0.0.34:15001" and r3.env["RATINGS_HOSTNAME"] == "ratings"
    sidecar = t.get("reviews-v3-sidecar")
    assert sidecar.ready_url == "http://127.0.0.34:15021/healthz/ready"
    argv = sidecar.argv("python")
    assert argv[:3] == ["python", "-m", "proxy.agent"]
    flag = dict(zip(argv[3::1], argv[4::1], strict=False))
    assert flag["--ip"] == "127.0.0.34" and flag["--interception-mode"] == "NONE"
    assert flag["--app-address"] == "127.0.1.34" == t.get("reviews-v3").env["LISTEN_ADDRESS"]
    assert (
        flag["--service-account"] == "bookinfo-reviews" and flag["--discovery-address"] == "127.0.0.1:15010"
    )
    assert "app=reviews" in argv and "version=v3" in argv
    assert sidecar.token == ("default", "bookinfo-reviews", "/s/proxies/reviews-v3/token")


def test_control_plane_and_gateway_on_the_control_address_with_the_standard_ports():
    t = topo(control_address="127.0.0.99", redis_url="redis://127.0.0.1:6379/0")
    assert t.get("pilot").ready_url == "http://127.0.0.99:15014/ready"
    assert "--config-dir" in t.get("pilot").args and "/s/config" in t.get("pilot").args
    mixer = t.get("mixer").args
    assert mixer[mixer.index("--http-addr") + 1] == "127.0.0.99:20001"
    assert mixer[mixer.index("--redis-url") + 1] == "redis://127.0.0.1:6379/0"
    gw = t.get("istio-ingressgateway")
    assert ("--type", "router") == gw.args[gw.args.index("--type") : gw.args.index("--type") + 2]
    assert "istio=ingressgateway" in gw.args
    assert t.entry_url == gw.ready_url == "http://127.0.0.99:8080/productpage"
    assert "http://127.0.0.99:20001/" in t.banner and "--pilot http://127.0.0.99:15014" in t.banner


def test_defaults_face_the_user_on_127_0_0_1():
    t = topo()
    assert t.entry_url == "http://127.0.0.1:8080/productpage"
    assert "http://127.0.0.1:20001/" in t.banner
    assert (
        "isthmus apply -f ../shared/istio-samples/bookinfo/networking/virtual-service-reviews-v3.yaml\n"
        in t.banner
    )


@pytest.mark.parametrize("bad", ["10.0.0.1", "nope"])
def test_bad_control_address_is_refused(bad):
    with pytest.raises(ValueError, match="--control-address"):
        topo(control_address=bad)


def test_registry_yaml_is_valid_istio_config_naming_every_workload(tmp_path):
    text = mesh_services_yaml(local_addressing("127.0.0.40"))
    f = tmp_path / "services.yaml"
    f.write_text(text)
    result = load_paths([f], default_namespace="default")
    assert result.ok, result.problems
    docs = list(yaml.safe_load_all(text))
    entries = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "WorkloadEntry"}
    assert set(entries) == set(APPS)
    assert entries["reviews-v2"]["address"] == "127.0.0.43"
    assert entries["reviews-v2"]["labels"]["version"] == "v2"
    hosts = {d["spec"]["hosts"][0] for d in docs if d["kind"] == "ServiceEntry"}
    assert hosts == {
        f"{s}.default.svc.cluster.local" for s in ("productpage", "details", "reviews", "ratings")
    }


def test_data_copies_match_istio_samples_unchanged():
    samples = shared_samples()
    if not samples.is_dir():
        pytest.skip(f"no {samples}")
    for name in ("bookinfo-gateway.yaml", "destination-rule-all.yaml"):
        assert (DATA / name).read_bytes() == (samples / name).read_bytes()


def test_state_file_round_trip_and_only_its_writer_removes_it(tmp_path):
    st = state.UpState(supervisor_pid=os.getpid(), children={"pilot": 1}, gateway_url="http://x/")
    state.write(tmp_path, st)
    assert state.read(tmp_path) == st
    state.remove(tmp_path, os.getpid() + 1)
    assert state.read(tmp_path) == st
    state.remove(tmp_path, os.getpid())
    assert state.read(tmp_path) is None


def test_damaged_state_file_is_reported(tmp_path):
    state.path(tmp_path).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        state.read(tmp_path)
    state.path(tmp_path).write_text('{"children": {}}')
    with pytest.raises(ValueError, match="not an isthmus state file"):
        state.read(tmp_path)


def test_status_shows_each_process_and_fails_when_one_is_gone():
    st = state.UpState(supervisor_pid=10, children={"pilot": 11, "ratings": 12}, gateway_url="http://g/")
    text, ok = status.render(st, lambda pid: pid != 12)
    assert not ok
    assert "ratings" in text and "GONE" in text and "http://g/" in text
    assert status.render(st, lambda pid: True)[1]


def test_stop_waves_gateway_then_apps_then_sidecars_then_control_plane():
    from isthmus.launcher.supervisor import Supervisor

    waves = [[w.name for w in wave] for wave in Supervisor(topo()).stop_waves()]
    assert waves[0] == ["istio-ingressgateway"]
    assert set(waves[1]) == set(APPS)
    assert set(waves[2]) == {f"{a}-sidecar" for a in APPS}  # drained together, after every app stopped
    assert waves[3] == ["mixer", "pilot", "citadel"]


def test_app_address_is_the_workload_ip_plus_256_inside_loopback():
    from isthmus.launcher.topology import app_address

    assert app_address("127.0.0.10") == "127.0.1.10"
    with pytest.raises(ValueError, match="127.0.0.0/8"):
        app_address("127.255.255.10")


def test_workload_entries_let_auto_mtls_apply():
    from isthmus.launcher.topology import local_addressing, mesh_services_yaml

    text = mesh_services_yaml(local_addressing("127.0.0.10"))
    assert "tlsMode" not in text  # endpoints are the sidecars: tls_mode istio
    assert "address: 127.0.0.10" in text  # productpage's sidecar, not the app's private address
