"""Auto-registration: a workload registers itself through its proxy's xDS ``Node`` metadata.

Istio's metadata keys are read as Istio writes them:

====================  ======================================================================
``NAMESPACE``         the workload's namespace (else the node id's)
``LABELS``            a map; ``app`` and ``version`` (and any other label) go on the endpoints,
                      so DestinationRule subsets select them
``SERVICE_ACCOUNT``   the service account (``default`` when absent)
``INSTANCE_IPS``      comma-separated workload IPs (else the node id's IP); the first is used
``WORKLOAD_NAME``     the workload name (else the pod name from the node id)
====================  ======================================================================

Isthmus adds two keys (Istio learns these from Kubernetes Services, which we do not have):

``ISTHMUS_SERVICE``
    The service name(s) the workload serves, comma-separated: ``"reviews"``. A short name resolves
    in the workload's namespace (``reviews.default.svc.cluster.local``); a dotted name is taken as is.
    When absent, the ``app`` label is the service name (Istio's canonical service). Without either,
    the proxy registers nothing.
``ISTHMUS_SERVICE_PORTS``
    The service ports, comma-separated ``name:port`` or ``name:port:targetPort``:
    ``"http:9080"`` or ``"http:9080,grpc-api:7070:17070"``. The protocol follows Istio's port-name
    convention (``http``, ``http2``, ``grpc``, ``tcp``, ``tls``, ... up to the first ``-``).
    Required when ``ISTHMUS_SERVICE`` names a service; with only an ``app`` label and no ports the
    workload is a client that serves nothing, and registers nothing (as a pod no Service selects).

A workload is one proxy id. ``register(proxy)`` (on connect) adds or replaces it;
``unregister(proxy, grace_seconds)`` (on disconnect) removes it once ``grace_seconds`` have passed
without the same proxy connecting again. Timers come from an injectable ``scheduler(delay, fn)``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pilot.model.proxy import Proxy
from pilot.model.service import Endpoint, Port, RegistrySnapshot, Service
from pilot.serviceregistry.names import protocol_from_port_name, resolve_short_name

SOURCE = "workload"
SERVICE_KEY = "ISTHMUS_SERVICE"
SERVICE_PORTS_KEY = "ISTHMUS_SERVICE_PORTS"


class MetadataError(ValueError):
    """The node metadata cannot describe a workload (names the key and the value)."""


def parse_service_ports(value: str) -> tuple[Port, ...]:
    ports = []
    for item in (p.strip() for p in str(value).split(",")):
        if not item:
            continue
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise MetadataError(f"{SERVICE_PORTS_KEY}: '{item}' is not name:port or name:port:targetPort")
        try:
            numbers = [int(x) for x in parts[1:]]
        except ValueError:
            raise MetadataError(f"{SERVICE_PORTS_KEY}: '{item}' has a port that is not a number") from None
        if not all(0 < n < 65536 for n in numbers):
            raise MetadataError(f"{SERVICE_PORTS_KEY}: '{item}' has a port outside 1..65535")
        ports.append(
            Port(
                parts[0],
                numbers[0],
                protocol_from_port_name(parts[0]),
                numbers[1] if len(numbers) > 1 else None,
            )
        )
    return tuple(ports)


@dataclass(frozen=True)
class Workload:
    services: tuple[Service, ...]
    endpoints: tuple[Endpoint, ...]


def workload_from_proxy(proxy: Proxy, domain: str = "cluster.local") -> Workload:
    """The Services and Endpoints a proxy's metadata describes (pure). Raises MetadataError."""
    md: dict[str, Any] = proxy.metadata
    labels = {str(k): str(v) for k, v in (md.get("LABELS") or {}).items()}
    names = [n.strip() for n in str(md.get(SERVICE_KEY) or labels.get("app") or "").split(",") if n.strip()]
    if not names:
        return Workload((), ())
    raw_ports = md.get(SERVICE_PORTS_KEY)
    if not raw_ports and not md.get(SERVICE_KEY):
        # Only an app label and no ports: a client-only workload (in Kubernetes, a pod no Service selects).
        return Workload((), ())
    if not raw_ports:
        raise MetadataError(f"{SERVICE_PORTS_KEY} is required when the workload serves {', '.join(names)}")
    ports = parse_service_ports(str(raw_ports))
    if not ports:
        raise MetadataError(f"{SERVICE_PORTS_KEY} names no port")
    if not proxy.ip_addresses:
        raise MetadataError("the workload has no IP (INSTANCE_IPS or the node id)")
    address = proxy.ip_addresses[0]
    sa = proxy.service_account
    services = []
    endpoints = []
    for name in names:
        host = resolve_short_name(name, proxy.namespace, domain)
        services.append(Service(host, proxy.namespace, ports, "STATIC", False, (), {}, ("*",), SOURCE))
        for port in ports:
            endpoints.append(
                Endpoint(
                    service=host,
                    service_port=port.number,
                    address=address,
                    port=port.target_port or port.number,
                    labels=labels,
                    service_account=sa,
                    workload_name=proxy.workload_name,
                    namespace=proxy.namespace,
                    locality=str(md.get("ISTIO_LOCALITY") or ""),
                    tls_mode="istio",
                )
            )
    return Workload(tuple(services), tuple(endpoints))


Scheduler = Callable[[float, Callable[[], None]], Any]  # returns a handle with .cancel()


def default_scheduler(delay: float, fn: Callable[[], None]) -> Any:
    try:
        return asyncio.get_running_loop().call_later(delay, fn)
    except RuntimeError:
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        timer.start()
        return timer


class AutoRegistry:
    """Workloads registered from node metadata. Services from several workloads with one host name
    are merged (the first registration's ports win, as two Kubernetes pods share one Service)."""

    name = SOURCE

    def __init__(self, domain: str = "cluster.local", scheduler: Scheduler = default_scheduler) -> None:
        self.domain = domain
        self._schedule = scheduler
        self._workloads: dict[str, Workload] = {}
        self._connections: dict[str, int] = {}
        self._pending: dict[str, Any] = {}
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def _notify(self) -> None:
        for cb in list(self._listeners):
            cb()

    def register(self, proxy: Proxy) -> Workload:
        """Add (or replace) the proxy's workload. Raises MetadataError and keeps the old state."""
        workload = workload_from_proxy(proxy, self.domain)
        with self._lock:
            pending = self._pending.pop(proxy.id, None)
            if pending is not None:
                pending.cancel()
            self._connections[proxy.id] = self._connections.get(proxy.id, 0) + 1
            changed = self._workloads.get(proxy.id) != workload
            self._workloads[proxy.id] = workload
        if changed:
            self._notify()
        return workload

    def unregister(self, proxy: Proxy, grace_seconds: float = 0.0) -> None:
        """The proxy disconnected: remove its workload after ``grace_seconds`` unless it reconnects."""
        with self._lock:
            count = self._connections.get(proxy.id, 0) - 1
            if count > 0:
                self._connections[proxy.id] = count
                return
            self._connections.pop(proxy.id, None)
            if proxy.id not in self._workloads:
                return
            if grace_seconds <= 0:
                self._workloads.pop(proxy.id, None)
            else:
                old = self._pending.pop(proxy.id, None)
                if old is not None:
                    old.cancel()
                self._pending[proxy.id] = self._schedule(grace_seconds, lambda: self._expire(proxy.id))
                return
        self._notify()

    def _expire(self, proxy_id: str) -> None:
        with self._lock:
            if self._pending.pop(proxy_id, None) is None or self._connections.get(proxy_id):
                return
            if self._workloads.pop(proxy_id, None) is None:
                return
        self._notify()

    def services(self) -> tuple[Service, ...]:
        by_host: dict[str, Service] = {}
        for wid in sorted(self._workloads):
            for s in self._workloads[wid].services:
                by_host.setdefault(s.hostname, s)
        return tuple(by_host[h] for h in sorted(by_host))

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for wid in sorted(self._workloads) for e in self._workloads[wid].endpoints)

    def snapshot(self) -> RegistrySnapshot:
        return RegistrySnapshot(self.services(), self.endpoints())
