"""The aggregate registry: merges every registry into one immutable RegistrySnapshot.

A registry is any object with ``name``, ``services()``, ``endpoints()`` and ``on_change(callback)``
(ServiceEntryRegistry, AutoRegistry, DockerRegistry). Registries are consulted in the order given;
when two define one host name, the first one's Service wins (Istio: Kubernetes before ServiceEntry),
and endpoints of that host from every registry are kept.

``subscribe(callback(snapshot, endpoints_only))``: called after every change. ``endpoints_only`` is
True when the set of services (host names, ports, resolution, ...) is unchanged and only endpoints
moved, so the xDS server can push EDS alone (Istio's incremental EDS).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pilot.model.service import Endpoint, RegistrySnapshot, Service

Subscriber = Callable[[RegistrySnapshot, bool], None]


class AggregateRegistry:
    def __init__(self, registries: list[Any] | None = None) -> None:
        self._registries: list[Any] = []
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._snapshot = RegistrySnapshot()
        for r in registries or []:
            self.add(r)

    def add(self, registry: Any) -> None:
        self._registries.append(registry)
        registry.on_change(self._on_registry_change)
        self._rebuild()

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def snapshot(self) -> RegistrySnapshot:
        return self._snapshot

    def _on_registry_change(self) -> None:
        self._rebuild()

    def _rebuild(self) -> None:
        with self._lock:
            services: dict[str, Service] = {}
            endpoints: list[Endpoint] = []
            for r in self._registries:
                for s in r.services():
                    services.setdefault(s.hostname, s)
                endpoints.extend(r.endpoints())
            new_services = tuple(services[h] for h in sorted(services))
            new_endpoints = tuple(endpoints)
            old = self._snapshot
            if new_services == old.services and _same(new_endpoints, old.endpoints):
                return
            endpoints_only = new_services == old.services
            snap = RegistrySnapshot(new_services, new_endpoints, old.version + 1)
            self._snapshot = snap
        for cb in list(self._subscribers):
            cb(snap, endpoints_only)


def _same(a: tuple[Endpoint, ...], b: tuple[Endpoint, ...]) -> bool:
    return a == b and all(x.labels == y.labels for x, y in zip(a, b, strict=True))
