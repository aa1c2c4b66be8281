"""ServiceEntry and WorkloadEntry → Services and Endpoints, as Istio's serviceentry controller does it.

* Every host of a ServiceEntry is one Service (short names resolve in the entry's namespace).
* ``location: MESH_EXTERNAL`` marks the service external; ``MESH_INTERNAL`` (the default) internal.
* ``resolution``: ``NONE`` (no endpoints: the proxy forwards to the original destination),
  ``STATIC`` (the listed endpoints / selected WorkloadEntries), ``DNS`` / ``DNS_ROUND_ROBIN`` (endpoints
  are host names the proxy resolves; without ``endpoints`` the host itself is the endpoint).
* An endpoint's port for a service port is ``endpoint.ports[<port name>]``, else the port's
  ``targetPort``, else the port number itself (Istio's rule).
* ``workloadSelector.labels`` selects the WorkloadEntries of the ServiceEntry's namespace whose labels
  contain all selector labels; each becomes an endpoint of every service port.

``build(config, domain)`` is pure; ``ServiceEntryRegistry`` keeps the last result for the aggregate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pilot.model.config import Config, ConfigSnapshot
from pilot.model.service import Endpoint, Port, RegistrySnapshot, Service
from pilot.serviceregistry.names import resolve_short_name

SOURCE = "serviceentry"


def _ports(spec: dict[str, Any]) -> tuple[Port, ...]:
    out = []
    for p in spec.get("ports") or []:
        number = int(p["number"])
        out.append(
            Port(
                name=str(p.get("name") or f"port-{number}"),
                number=number,
                protocol=str(p.get("protocol") or "TCP").upper(),
                target_port=int(p["targetPort"]) if p.get("targetPort") else None,
            )
        )
    return tuple(out)


def _locality(value: str | None) -> str:
    return str(value or "")


def _endpoint(
    host: str,
    port: Port,
    address: str,
    ports: dict[str, Any] | None,
    labels: dict[str, str],
    namespace: str,
    *,
    service_account: str = "",
    locality: str = "",
    weight: int = 1,
    workload_name: str = "",
) -> Endpoint:
    target = (ports or {}).get(port.name)
    number = int(target) if target else (port.target_port or port.number)
    return Endpoint(
        service=host,
        service_port=port.number,
        address=address,
        port=number,
        labels=dict(labels),
        service_account=service_account,
        workload_name=workload_name,
        namespace=namespace,
        locality=locality,
        weight=int(weight or 1),
        # A WorkloadEntry or endpoint of a mesh-internal service is assumed to run a sidecar.
        tls_mode=str(labels.get("security.istio.io/tlsMode") or "istio"),
    )


def _selected(workload_entries: list[Config], namespace: str, selector: dict[str, str]) -> list[Config]:
    return [
        we
        for we in workload_entries
        if we.namespace == namespace
        and all((we.spec.get("labels") or {}).get(k) == v for k, v in selector.items())
    ]


def services_of(
    se: Config, workload_entries: list[Config], domain: str
) -> tuple[list[Service], list[Endpoint]]:
    spec = se.spec
    ports = _ports(spec)
    resolution = str(spec.get("resolution") or "NONE").upper()
    external = str(spec.get("location") or "MESH_INTERNAL").upper() == "MESH_EXTERNAL"
    export_to = tuple(spec.get("exportTo") or ("*",))
    services: list[Service] = []
    endpoints: list[Endpoint] = []
    for raw_host in spec.get("hosts") or []:
        host = resolve_short_name(str(raw_host), se.namespace, domain)
        services.append(
            Service(
                hostname=host,
                namespace=se.namespace,
                ports=ports,
                resolution=resolution,
                mesh_external=external,
                addresses=tuple(spec.get("addresses") or ()),
                labels=dict(se.labels),
                export_to=export_to,
                source=SOURCE,
            )
        )
        if resolution == "NONE":
            continue
        for port in ports:
            listed = spec.get("endpoints") or []
            for ep in listed:
                endpoints.append(
                    _endpoint(
                        host,
                        port,
                        str(ep["address"]),
                        ep.get("ports"),
                        ep.get("labels") or {},
                        se.namespace,
                        service_account=str(ep.get("serviceAccount") or ""),
                        locality=_locality(ep.get("locality")),
                        weight=int(ep.get("weight") or 1),
                    )
                )
            selector = (spec.get("workloadSelector") or {}).get("labels")
            if selector is not None:
                for we in _selected(workload_entries, se.namespace, selector):
                    w = we.spec
                    endpoints.append(
                        _endpoint(
                            host,
                            port,
                            str(w["address"]),
                            w.get("ports"),
                            w.get("labels") or {},
                            we.namespace,
                            service_account=str(w.get("serviceAccount") or ""),
                            locality=_locality(w.get("locality")),
                            weight=int(w.get("weight") or 1),
                            workload_name=we.name,
                        )
                    )
            if not listed and selector is None and resolution in ("DNS", "DNS_ROUND_ROBIN"):
                # Istio: a DNS ServiceEntry without endpoints resolves its own host name.
                endpoints.append(
                    Endpoint(
                        host,
                        port.number,
                        host,
                        port.target_port or port.number,
                        namespace=se.namespace,
                        tls_mode="disabled",
                    )
                )
    return services, endpoints


def build(
    config: ConfigSnapshot, domain: str = "cluster.local"
) -> tuple[tuple[Service, ...], tuple[Endpoint, ...]]:
    """All Services and Endpoints defined by the snapshot's ServiceEntries (and the WorkloadEntries
    they select). Pure."""
    workload_entries = config.list("WorkloadEntry")
    services: list[Service] = []
    endpoints: list[Endpoint] = []
    seen: set[str] = set()
    for se in config.list("ServiceEntry"):
        svcs, eps = services_of(se, workload_entries, domain)
        for s in svcs:
            # Two ServiceEntries for one host: Istio keeps the oldest; we keep the first by name.
            if s.hostname in seen:
                continue
            seen.add(s.hostname)
            services.append(s)
        endpoints.extend(e for e in eps if any(s.hostname == e.service for s in svcs))
    return tuple(services), tuple(endpoints)


class ServiceEntryRegistry:
    """The ServiceEntry/WorkloadEntry registry. ``update(config)`` recomputes it from a new config
    snapshot and notifies listeners when the result changed."""

    name = SOURCE

    def __init__(self, domain: str = "cluster.local") -> None:
        self.domain = domain
        self._services: tuple[Service, ...] = ()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def services(self) -> tuple[Service, ...]:
        return self._services

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def snapshot(self) -> RegistrySnapshot:
        return RegistrySnapshot(self._services, self._endpoints)

    def update(self, config: ConfigSnapshot) -> bool:
        services, endpoints = build(config, self.domain)
        if services == self._services and _same_endpoints(endpoints, self._endpoints):
            return False
        self._services, self._endpoints = services, endpoints
        for cb in list(self._listeners):
            cb()
        return True


def _same_endpoints(a: tuple[Endpoint, ...], b: tuple[Endpoint, ...]) -> bool:
    # Endpoint equality ignores labels (unhashable dicts); labels decide subsets, so compare them too.
    return a == b and all(x.labels == y.labels for x, y in zip(a, b, strict=True))
