"""Upstream hosts and their per-host stats (what admin /clusters prints for each host)."""

from __future__ import annotations

from typing import Any

# Envoy's health flag strings (admin /clusters); a host with none of them prints "healthy".
FAILED_EDS_HEALTH = "/failed_eds_health"
DEGRADED_EDS_HEALTH = "/degraded_eds_health"
PENDING_DYNAMIC_REMOVAL = "/pending_dynamic_removal"


class HostStats:
    """Per-host counters and gauges, kept on the host (not in the store), like Envoy's HostStats."""

    __slots__ = (
        "cx_total",
        "cx_active",
        "cx_connect_fail",
        "rq_total",
        "rq_active",
        "rq_success",
        "rq_error",
        "rq_timeout",
    )

    def __init__(self) -> None:
        self.cx_total = 0
        self.cx_active = 0
        self.cx_connect_fail = 0
        self.rq_total = 0
        self.rq_active = 0
        self.rq_success = 0
        self.rq_error = 0
        self.rq_timeout = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def format_address(address: tuple[str, int]) -> str:
    ip, port = address[0], address[1]
    if port == 0:  # a pipe (Unix socket) endpoint: Envoy prints its path
        return ip
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class Host:
    """One upstream endpoint. `address` may change for a LOGICAL_DNS host (new connections follow)."""

    __slots__ = (
        "address",
        "address_str",
        "hostname",
        "weight",
        "locality",
        "priority",
        "health_flags",
        "stats",
        "metadata",
        "cluster_name",
        "used",
        "_pool",
        "__weakref__",
    )

    def __init__(
        self,
        address: tuple[str, int],
        *,
        weight: int = 1,
        locality: Any = None,
        priority: int = 0,
        hostname: str = "",
        health_flags: frozenset[str] = frozenset(),
        metadata: Any = None,
        cluster_name: str = "",
    ) -> None:
        self.address = address
        self.address_str = format_address(address)
        self.hostname = hostname
        self.weight = max(1, weight)
        self.locality = locality  # envoy.config.core.v3.Locality or None
        self.priority = priority
        self.health_flags = set(health_flags)
        self.stats = HostStats()
        self.metadata = metadata
        self.cluster_name = cluster_name
        self.used = True  # ORIGINAL_DST cleanup: set on every pick, cleared by each sweep
        self._pool = None

    @property
    def healthy(self) -> bool:
        return not self.health_flags

    def health_flags_str(self) -> str:
        """Envoy's admin format: ``healthy`` or the flags concatenated (``/failed_eds_health``)."""
        return "".join(sorted(self.health_flags)) if self.health_flags else "healthy"

    def set_address(self, address: tuple[str, int]) -> None:
        self.address = address
        self.address_str = format_address(address)

    def __repr__(self) -> str:
        return f"Host({self.address_str}, w={self.weight}, p={self.priority})"
