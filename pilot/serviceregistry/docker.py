"""The Docker registry: running containers that carry Isthmus labels become services and endpoints.

Built on the ``docker`` package's low-level client (``docker.APIClient.containers()``, i.e. the Engine
API's ``GET /containers/json``). The client is injectable: tests point a real ``docker.APIClient`` at a
small HTTP server that replays recorded Engine API responses (no engine runs on our build machines).

Container labels (only containers with ``isthmus.io/service`` are read):

==============================  ===================================================================
``isthmus.io/service``          service name(s), comma-separated; short names resolve in the
                                namespace (``reviews`` -> ``reviews.default.svc.cluster.local``)
``isthmus.io/ports``            ``name:port[:targetPort]``, comma-separated (``http:9080``); the
                                protocol follows Istio's port-name convention. When absent, every
                                exposed TCP port (``Ports[].PrivatePort``) is a port named ``tcp-<n>``
``isthmus.io/namespace``        namespace (default ``default``)
``isthmus.io/service-account``  service account (default ``default``)
``isthmus.io/network``          which Docker network's IP to use (default: the first, by name)
``app``, ``version``, others    copied onto the endpoints, so DestinationRule subsets select them
==============================  ===================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pilot.model.service import Endpoint, Port, RegistrySnapshot, Service
from pilot.serviceregistry.autoregister import MetadataError, parse_service_ports
from pilot.serviceregistry.names import resolve_short_name

SOURCE = "docker"
SERVICE_LABEL = "isthmus.io/service"
PORTS_LABEL = "isthmus.io/ports"
NAMESPACE_LABEL = "isthmus.io/namespace"
SA_LABEL = "isthmus.io/service-account"
NETWORK_LABEL = "isthmus.io/network"

log = logging.getLogger(__name__)


def _address(container: dict[str, Any]) -> str | None:
    networks = ((container.get("NetworkSettings") or {}).get("Networks")) or {}
    wanted = (container.get("Labels") or {}).get(NETWORK_LABEL)
    if wanted:
        net = networks.get(wanted) or {}
        return net.get("IPAddress") or None
    for name in sorted(networks):
        ip = (networks[name] or {}).get("IPAddress")
        if ip:
            return ip
    return None


def translate(
    containers: list[dict[str, Any]], domain: str = "cluster.local"
) -> tuple[tuple[Service, ...], tuple[Endpoint, ...], list[str]]:
    """Services, endpoints and problems (one line per skipped container) from /containers/json. Pure."""
    services: dict[str, Service] = {}
    endpoints: list[Endpoint] = []
    problems: list[str] = []
    for c in sorted(containers, key=lambda c: c.get("Id", "")):
        labels = {str(k): str(v) for k, v in (c.get("Labels") or {}).items()}
        cname = ((c.get("Names") or [c.get("Id", "?")])[0]).lstrip("/")
        names = [n.strip() for n in labels.get(SERVICE_LABEL, "").split(",") if n.strip()]
        if not names:
            continue
        if c.get("State") not in (None, "running"):
            continue
        address = _address(c)
        if address is None:
            problems.append(f"container {cname}: no IP address on any network; skipped")
            continue
        try:
            if labels.get(PORTS_LABEL):
                ports = parse_service_ports(labels[PORTS_LABEL])
            else:
                ports = tuple(
                    Port(f"tcp-{p['PrivatePort']}", int(p["PrivatePort"]), "TCP")
                    for p in sorted(c.get("Ports") or [], key=lambda p: p.get("PrivatePort", 0))
                    if p.get("Type", "tcp") == "tcp"
                )
        except MetadataError as e:
            problems.append(f"container {cname}: label {PORTS_LABEL}: {e}; skipped")
            continue
        if not ports:
            problems.append(f"container {cname}: no ports ({PORTS_LABEL} or exposed ports); skipped")
            continue
        ns = labels.get(NAMESPACE_LABEL) or "default"
        endpoint_labels = {k: v for k, v in labels.items() if not k.startswith("isthmus.io/")}
        for name in names:
            host = resolve_short_name(name, ns, domain)
            services.setdefault(host, Service(host, ns, ports, "STATIC", False, (), {}, ("*",), SOURCE))
            for port in services[host].ports:
                endpoints.append(
                    Endpoint(
                        service=host,
                        service_port=port.number,
                        address=address,
                        port=port.target_port or port.number,
                        labels=endpoint_labels,
                        service_account=labels.get(SA_LABEL) or "default",
                        workload_name=cname,
                        namespace=ns,
                        tls_mode="istio",
                    )
                )
    return tuple(services[h] for h in sorted(services)), tuple(endpoints), problems


class DockerRegistry:
    """Polls the engine (``refresh()``) and notifies listeners when the result changes.

    ``client`` is a ``docker.APIClient`` (or a ``docker.DockerClient``, whose ``.api`` is used)."""

    name = SOURCE

    def __init__(self, client: Any, domain: str = "cluster.local") -> None:
        self.client = getattr(client, "api", client)
        self.domain = domain
        self._services: tuple[Service, ...] = ()
        self._endpoints: tuple[Endpoint, ...] = ()
        self.problems: list[str] = []
        self._listeners: list[Callable[[], None]] = []

    @classmethod
    def from_env(cls, domain: str = "cluster.local") -> DockerRegistry:
        import docker

        return cls(docker.APIClient(**docker.utils.kwargs_from_env()), domain)

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def refresh(self) -> bool:
        """Read the engine once. An engine error keeps the last good state (and is raised)."""
        containers = self.client.containers(filters={"label": SERVICE_LABEL})
        services, endpoints, problems = translate(containers, self.domain)
        for p in problems:
            if p not in self.problems:
                log.warning("docker registry: %s", p)
        self.problems = problems
        same = (
            services == self._services
            and endpoints == self._endpoints
            and all(a.labels == b.labels for a, b in zip(endpoints, self._endpoints, strict=True))
        )
        if same:
            return False
        self._services, self._endpoints = services, endpoints
        for cb in list(self._listeners):
            cb()
        return True

    def services(self) -> tuple[Service, ...]:
        return self._services

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def snapshot(self) -> RegistrySnapshot:
        return RegistrySnapshot(self._services, self._endpoints)
