"""docker-compose.yml must run the same workloads as `isthmus up`: commands, environment, ports, order."""

import pytest
import yaml

from isthmus.launcher.topology import bookinfo, compose_addressing
from tests.support.processes import REPO

TOPOLOGY = bookinfo(compose_addressing())
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_same_services():
    assert set(SERVICES) == {w.name for w in TOPOLOGY.workloads}


@pytest.mark.parametrize("workload", TOPOLOGY.workloads, ids=lambda w: w.name)
def test_service_matches_workload(workload):
    service = SERVICES[workload.name]
    assert service["command"] == workload.argv("python")
    assert {k: str(v) for k, v in service["environment"].items()} == dict(workload.env)
    assert str(workload.port) in [str(p) for p in service["expose"]]
    assert set(service.get("depends_on", {})) == set(workload.depends_on)
    assert all(dep["condition"] == "service_healthy" for dep in service.get("depends_on", {}).values())
    health = " ".join(service["healthcheck"]["test"])
    assert f"http://127.0.0.1:{workload.port}{workload.ready_path}" in health


def test_every_service_uses_the_one_base_image():
    assert {(s["build"], s["image"]) for s in SERVICES.values()} == {(".", "isthmus:dev")}
    assert (REPO / "Dockerfile").exists()


def test_only_the_entry_is_published_on_the_host():
    published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
    entry = TOPOLOGY.get(TOPOLOGY.entry)
    assert published == {entry.name: [f"127.0.0.1:{entry.port}:{entry.port}"]}
