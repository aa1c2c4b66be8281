"""Istio configuration as pilot holds it: validated resources, keyed by kind/namespace/name.

``spec`` keeps the user's YAML shape (camelCase keys, as in Istio's docs) after validation by
``pilot.config``, so builders read it exactly as users wrote it. A ``ConfigSnapshot`` is immutable;
every change makes a new snapshot, and a push reads one snapshot from start to end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, order=True)
class ConfigKey:
    kind: str  # "VirtualService"
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Config:
    kind: str
    group: str  # "networking.istio.io"
    version: str  # "v1", "v1beta1", "v1alpha3"
    namespace: str
    name: str
    spec: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    resource_version: int = 0
    source: str = ""  # file path, or "api"

    @property
    def key(self) -> ConfigKey:
        return ConfigKey(self.kind, self.namespace, self.name)


class ConfigSnapshot:
    """An immutable view of all accepted configuration."""

    __slots__ = ("_by_key", "version")

    def __init__(self, configs: dict[ConfigKey, Config] | None = None, version: int = 0) -> None:
        self._by_key = MappingProxyType(dict(configs or {}))
        self.version = version

    def get(self, kind: str, namespace: str, name: str) -> Config | None:
        return self._by_key.get(ConfigKey(kind, namespace, name))

    def list(self, kind: str, namespace: str | None = None) -> list[Config]:
        return sorted(
            (
                c
                for k, c in self._by_key.items()
                if k.kind == kind and (namespace is None or k.namespace == namespace)
            ),
            key=lambda c: (c.namespace, c.name),
        )

    def all(self) -> list[Config]:
        return [self._by_key[k] for k in sorted(self._by_key)]

    def with_changes(self, upserts: list[Config], deletes: list[ConfigKey]) -> ConfigSnapshot:
        by_key = dict(self._by_key)
        for key in deletes:
            by_key.pop(key, None)
        for c in upserts:
            by_key[c.key] = c
        return ConfigSnapshot(by_key, self.version + 1)
