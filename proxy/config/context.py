"""What extension factories get to build their runtime objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.stats.store import Store


@dataclass
class FactoryContext:
    stats: Store
    cluster_manager: Any = None  # proxy.upstream.cluster_manager.ClusterManager
    server: Any = None  # proxy.server.Server: drain state, options, admin hooks
    listener_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
