"""A connected proxy, as Istio models it, parsed from its xDS ``Node``.

Node id: ``<type>~<ip>~<pod name>.<namespace>~<namespace>.svc.<domain>`` with type ``sidecar`` or
``router`` (gateways). A proxyless gRPC client has any node id and ``metadata.GENERATOR == "grpc"``.
Metadata keys follow Istio's (``NAMESPACE``, ``LABELS``, ``SERVICE_ACCOUNT``, ``INSTANCE_IPS``,
``WORKLOAD_NAME``, ``CLUSTER_ID``, ``GENERATOR``); anything Isthmus adds is documented where it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SIDECAR = "sidecar"
ROUTER = "router"
GRPC = "grpc"


class NodeIdError(ValueError):
    pass


@dataclass
class Proxy:
    id: str
    type: str  # SIDECAR, ROUTER or GRPC
    ip_addresses: list[str]
    name: str  # pod/workload name
    namespace: str
    dns_domain: str  # "<ns>.svc.cluster.local"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.metadata.get("LABELS") or {})

    @property
    def service_account(self) -> str:
        return str(self.metadata.get("SERVICE_ACCOUNT") or "default")

    @property
    def workload_name(self) -> str:
        return str(self.metadata.get("WORKLOAD_NAME") or self.name)


def parse_node(node_id: str, metadata: dict[str, Any] | None = None) -> Proxy:
    """Parse an Istio node id (and the node's metadata as a plain dict) into a Proxy."""
    metadata = dict(metadata or {})
    if metadata.get("GENERATOR") == "grpc":
        ns = str(metadata.get("NAMESPACE") or "default")
        ips = [ip for ip in str(metadata.get("INSTANCE_IPS") or "").split(",") if ip]
        return Proxy(node_id, GRPC, ips, node_id, ns, f"{ns}.svc.cluster.local", metadata)
    parts = node_id.split("~")
    if len(parts) != 4:
        raise NodeIdError(f"node id {node_id!r} is not <type>~<ip>~<name>.<namespace>~<domain>")
    kind, ip, pod, domain = parts
    if kind not in (SIDECAR, ROUTER):
        raise NodeIdError(f"node id {node_id!r}: type must be 'sidecar' or 'router', not {kind!r}")
    if not ip:
        raise NodeIdError(f"node id {node_id!r} has no IP")
    name, _, ns = pod.rpartition(".")
    if not name or not ns:
        raise NodeIdError(f"node id {node_id!r}: expected <name>.<namespace> in the third field")
    ns = str(metadata.get("NAMESPACE") or ns)
    ips = [i for i in str(metadata.get("INSTANCE_IPS") or "").split(",") if i] or [ip]
    return Proxy(node_id, kind, ips, name, ns, domain, metadata)
