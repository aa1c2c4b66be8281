"""The immutable input of one push: configuration and registry at one moment.

Builders (``pilot.networking``) are pure functions of ``(proxy, PushContext)``; the xDS server makes
one PushContext per debounced change and every proxy's push in that round reads the same one.
Indexes that builders need (VirtualServices by host and gateway, DestinationRules by host, ...) are
computed here once per context, not per proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pilot.model.config import ConfigSnapshot
from pilot.model.mesh import MeshConfig  # noqa: F401  (re-exported: MeshConfig lives in mesh.py)
from pilot.model.service import RegistrySnapshot


@dataclass(frozen=True)
class PushContext:
    config: ConfigSnapshot
    registry: RegistrySnapshot
    mesh: MeshConfig = MeshConfig()
    version: str = "0"
    indexes: dict[str, Any] = field(default_factory=dict, compare=False)
