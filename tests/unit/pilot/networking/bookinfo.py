"""A Bookinfo mesh for builder tests: the registry built directly (namespace ``default``, the local
addresses of ``isthmus up``), and Istio's own sample files loaded through pilot's config parser."""

from __future__ import annotations

from pilot.config.parse import load_paths
from pilot.model.config import Config, ConfigSnapshot
from pilot.model.proxy import parse_node
from pilot.model.push_context import MeshConfig, PushContext
from pilot.model.service import Endpoint, Port, RegistrySnapshot, Service
from tests.support.processes import REPO

SAMPLES = REPO.parent / "shared" / "istio-samples" / "bookinfo" / "networking"
NS = "default"
DOMAIN = "cluster.local"

WORKLOADS = [
    # (service, version, ip)
    ("productpage", "v1", "127.0.0.10"),
    ("details", "v1", "127.0.0.11"),
    ("reviews", "v1", "127.0.0.12"),
    ("reviews", "v2", "127.0.0.13"),
    ("reviews", "v3", "127.0.0.14"),
    ("ratings", "v1", "127.0.0.15"),
]


def fqdn(name: str) -> str:
    return f"{name}.{NS}.svc.{DOMAIN}"


def registry() -> RegistrySnapshot:
    http = (Port("http", 9080, "HTTP"),)
    services = tuple(Service(fqdn(n), NS, http) for n in sorted({w[0] for w in WORKLOADS}))
    endpoints = tuple(
        Endpoint(
            fqdn(name),
            9080,
            ip,
            9080,
            labels={"app": name, "version": version},
            service_account=f"bookinfo-{name}",
            workload_name=f"{name}-{version}",
            namespace=NS,
        )
        for name, version, ip in WORKLOADS
    )
    return RegistrySnapshot(services, endpoints, 1)


def load(*files: str) -> list[Config]:
    result = load_paths([SAMPLES / f for f in files], default_namespace=NS)
    assert result.ok, result.problems
    return result.configs


def push(*files: str, configs: list[Config] = (), mesh: MeshConfig | None = None, reg=None) -> PushContext:
    all_configs = [*load(*files), *configs] if files else list(configs)
    snap = ConfigSnapshot({c.key: c for c in all_configs}, 1)
    return PushContext(snap, reg or registry(), mesh or MeshConfig(), "1")


def sidecar(name="productpage", version="v1", ip="127.0.0.10", **metadata):
    md = {"NAMESPACE": NS, "LABELS": {"app": name, "version": version}, **metadata}
    return parse_node(f"sidecar~{ip}~{name}-{version}.{NS}~{NS}.svc.{DOMAIN}", md)


def router(ip="127.0.0.1"):
    md = {"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway", "app": "istio-ingressgateway"}}
    return parse_node(f"router~{ip}~istio-ingressgateway-1.istio-system~istio-system.svc.{DOMAIN}", md)


def grpc_client(ns=NS):
    return parse_node("grpc-client-1", {"GENERATOR": "grpc", "NAMESPACE": ns})


def config(
    kind: str, name: str, spec: dict, namespace: str = NS, group: str = "networking.istio.io"
) -> Config:
    return Config(kind, group, "v1", namespace, name, spec)
