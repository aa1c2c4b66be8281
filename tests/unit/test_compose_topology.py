"""docker-compose.yml must run the same mesh as `isthmus up`: it is generated from the same topology
(`python -m isthmus.launcher.compose > docker-compose.yml`), and these checks say what that means."""

import pytest
import yaml

from isthmus.launcher import compose
from isthmus.launcher.netns import iptables_restore_text, istio_init_rules
from isthmus.launcher.topology import BOOKINFO_WORKLOADS
from tests.support.processes import REPO

TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(TEXT)
SERVICES = COMPOSE["services"]
LOCAL = compose.local_mesh()
APPS = list(BOOKINFO_WORKLOADS)


def test_file_is_what_the_generator_writes():
    assert TEXT == compose.render(), (
        "docker-compose.yml is stale: python -m isthmus.launcher.compose > docker-compose.yml"
    )


def test_same_processes_as_isthmus_up_plus_redis_tokens_and_init_steps():
    local = {w.name for w in LOCAL.workloads}
    extra = {"redis", "tokens", *(f"{a}-init" for a in APPS)}
    assert set(SERVICES) == local | extra


@pytest.mark.parametrize("app", APPS)
def test_app_matches_the_local_workload_and_shares_its_netns_with_sidecar_and_init(app):
    local = LOCAL.get(app)
    s = SERVICES[app]
    assert s["command"] == ["python", "-m", local.module]
    # same environment, except the address to bind and HTTP_PROXY: in Compose iptables capture replaces it
    expected = {k: v for k, v in local.env.items() if k not in ("LISTEN_ADDRESS", "HTTP_PROXY")}
    assert {k: str(v) for k, v in s["environment"].items()} == {"LISTEN_ADDRESS": "0.0.0.0", **expected}
    assert s["environment"].get("DETAILS_HOSTNAME", "details") == "details"  # service names, as in Kubernetes
    sidecar, init = SERVICES[f"{app}-sidecar"], SERVICES[f"{app}-init"]
    assert sidecar["network_mode"] == init["network_mode"] == f"service:{app}"
    assert "NET_ADMIN" in init["cap_add"]
    assert init["environment"]["ISTIO_INIT_RULES"] == iptables_restore_text(istio_init_rules("198.18.0.2"))
    assert "iptables-restore --noflush" in init["command"][-1]
    assert sidecar["depends_on"][f"{app}-init"]["condition"] == "service_completed_successfully"
    assert sidecar["user"].startswith("1337")  # the UID istio-init's rules exclude from capture
    script = sidecar["command"][-1]
    assert "python -m proxy.agent" in script and "--interception-mode REDIRECT" in script
    service, version = BOOKINFO_WORKLOADS[app]
    assert f"--service {service} " in script and f"--label version={version}" in script
    assert "15021/healthz/ready" in " ".join(sidecar["healthcheck"]["test"])


def test_reviews_versions_answer_to_the_service_name():
    for v in ("reviews-v1", "reviews-v2", "reviews-v3"):
        assert SERVICES[v]["networks"]["default"]["aliases"] == ["reviews"]


def test_control_plane_commands_and_redis_for_quotas():
    for name in ("citadel", "pilot"):
        assert SERVICES[name]["command"][:3] == ["python", "-m", LOCAL.get(name).module]
    assert "--redis-url" in SERVICES["mixer"]["command"]
    assert SERVICES["mixer"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert SERVICES["pilot"]["volumes"][0] == "./isthmus/launcher/data:/etc/isthmus/config:ro"


def test_applied_config_survives_a_pilot_restart_as_in_local_mode():
    """`isthmus up` gives pilot a --config-store; in compose it lives on a named volume."""
    local = LOCAL.get("pilot").argv()
    store = local[local.index("--config-store") + 1]
    assert store.endswith("pilot-store")
    cmd = SERVICES["pilot"]["command"]
    volume_path = cmd[cmd.index("--config-store") + 1]
    assert f"pilot-store:{volume_path}" in SERVICES["pilot"]["volumes"]
    assert "pilot-store" in COMPOSE["volumes"]


def test_gateway_is_a_router_after_every_sidecar():
    gw = SERVICES["istio-ingressgateway"]
    assert "--type router" in gw["command"][-1] and "--label istio=ingressgateway" in gw["command"][-1]
    assert {f"{a}-sidecar" for a in APPS} <= set(gw["depends_on"])


def test_only_the_gateway_and_the_dashboard_are_published():
    published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
    assert published == {"istio-ingressgateway": ["127.0.0.1:8080:8080"], "mixer": ["127.0.0.1:20001:20001"]}


def test_every_python_service_uses_the_one_base_image():
    images = {(s.get("build"), s["image"]) for n, s in SERVICES.items() if n != "redis"}
    assert images == {(".", "isthmus:dev")}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "iptables" in dockerfile and "1337" in dockerfile
