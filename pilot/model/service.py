"""The service registry's model, shared by every registry (ServiceEntry/WorkloadEntry, auto-registered
workloads, Docker) and read by the networking builders."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Port:
    name: str
    number: int
    protocol: str  # Istio protocol names: HTTP, HTTP2, GRPC, TCP, TLS, HTTPS, MONGO, ...
    target_port: int | None = None


@dataclass(frozen=True)
class Service:
    hostname: str  # FQDN: "reviews.default.svc.cluster.local", or an external host
    namespace: str
    ports: tuple[Port, ...]
    resolution: str = "STATIC"  # NONE | STATIC | DNS | DNS_ROUND_ROBIN
    mesh_external: bool = False
    addresses: tuple[str, ...] = ()  # VIPs, when any
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    export_to: tuple[str, ...] = ("*",)
    source: str = ""  # which registry: "serviceentry", "workload", "docker", ...


@dataclass(frozen=True)
class Endpoint:
    """One workload instance of a service port (Istio's IstioEndpoint)."""

    service: str  # the Service hostname
    service_port: int  # the Service port number this endpoint serves
    address: str
    port: int  # the workload's port
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    service_account: str = ""  # "spiffe://cluster.local/ns/default/sa/bookinfo-reviews" or plain SA name
    workload_name: str = ""
    namespace: str = ""
    locality: str = ""  # "region/zone/subzone"
    weight: int = 1
    tls_mode: str = "istio"  # "istio" when the workload has a sidecar, "disabled" otherwise


@dataclass(frozen=True)
class RegistrySnapshot:
    """All services and endpoints at one moment (immutable)."""

    services: tuple[Service, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    version: int = 0

    def service(self, hostname: str) -> Service | None:
        for s in self.services:
            if s.hostname == hostname:
                return s
        return None

    def endpoints_of(self, hostname: str, port: int | None = None) -> list[Endpoint]:
        return [
            e for e in self.endpoints if e.service == hostname and (port is None or e.service_port == port)
        ]
