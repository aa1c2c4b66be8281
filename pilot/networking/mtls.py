"""Peer authentication and auto mTLS, as Istio decides them (pure; results memoised per push).

**PeerAuthentication** (Istio's precedence): the workload-level policy (a ``selector`` matching the
workload's labels, in the workload's namespace) over the namespace-level one (no selector) over the
mesh-level one (no selector, in the root namespace). ``UNSET`` (or no ``mtls``) inherits from the
level above; with no policy at all the mode is PERMISSIVE. ``portLevelMtls`` counts only on a
workload-level policy (Istio ignores it elsewhere; we report it) and is keyed by the workload's port;
a port's ``UNSET`` inherits the workload's mode. When several policies compete at one level, the
first by name wins (Istio: the oldest) and the others are reported.

**Auto mTLS** (client side, per outbound cluster): a DestinationRule ``tls`` decides when it is set
(DISABLE: plaintext; SIMPLE/MUTUAL: files; ISTIO_MUTUAL). Otherwise a mesh-internal cluster speaks
ISTIO_MUTUAL when the endpoints it reaches (the subset's, when it has one) carry a sidecar
(``Endpoint.tls_mode == "istio"``) and their PeerAuthentication is not DISABLE on their port.

Istio decides per endpoint with ``transport_socket_matches`` on the ``tlsMode`` label; Isthmus decides
per cluster (the proxy takes one ``transport_socket`` per cluster): TLS when *every* endpoint has a
sidecar, plaintext when none has or the cluster has no endpoints yet. A cluster whose endpoints are
mixed gets ISTIO_MUTUAL and a translation warning (the sidecar-less endpoints then fail), since
sending plaintext to a STRICT workload would fail too and would expose the traffic.
The SANs are the SPIFFE IDs of the endpoints' service accounts (Istio's ``ServiceAccounts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pilot.model.config import Config
from pilot.model.service import Endpoint, Service
from pilot.networking import tls
from pilot.networking.index import Index, labels_match
from pilot.networking.traffic_policy import subset_labels

STRICT = "STRICT"
PERMISSIVE = "PERMISSIVE"
DISABLE = "DISABLE"
UNSET = "UNSET"
DEFAULT_MODE = PERMISSIVE


@dataclass(frozen=True)
class MtlsPolicy:
    """The effective PeerAuthentication of one workload."""

    mode: str = DEFAULT_MODE
    port_modes: dict[int, str] = field(default_factory=dict, hash=False)

    def mode_for(self, port: int) -> str:
        return self.port_modes.get(port, self.mode)


def _mode(spec_mtls: dict[str, Any] | None) -> str:
    return str((spec_mtls or {}).get("mode") or UNSET).upper()


def _selector(pa: Config) -> dict[str, str] | None:
    return (pa.spec.get("selector") or {}).get("matchLabels") or None


def _level(candidates: list[Config]) -> Config | None:
    return candidates[0] if candidates else None


def effective_mtls(idx: Index, namespace: str, labels: dict[str, str]) -> MtlsPolicy:
    key = ("mtls", namespace, tuple(sorted(labels.items())))
    cached = idx.cache.get(key)
    if cached is not None:
        return cached
    own = idx.peer_authentications.get(namespace, [])
    mesh = _level([pa for pa in idx.peer_authentications.get(idx.root_namespace, []) if not _selector(pa)])
    ns = _level([pa for pa in own if not _selector(pa)]) if namespace != idx.root_namespace else None
    workload = _level([pa for pa in own if _selector(pa) and labels_match(_selector(pa), labels)])
    mode = DEFAULT_MODE
    for pa in (mesh, ns, workload):
        if pa is not None and _mode(pa.spec.get("mtls")) != UNSET:
            mode = _mode(pa.spec.get("mtls"))
    port_modes: dict[int, str] = {}
    if workload is not None:
        for port, m in (workload.spec.get("portLevelMtls") or {}).items():
            pm = _mode(m)
            port_modes[int(port)] = mode if pm == UNSET else pm
    result = MtlsPolicy(mode, port_modes)
    idx.cache[key] = result
    return result


def peer_authentication_warnings(pa: Config, idx: Index) -> list[str]:
    where = f"PeerAuthentication/{pa.namespace}/{pa.name}"
    out = []
    selector = _selector(pa)
    if pa.spec.get("portLevelMtls") and not selector:
        out.append(
            f"{where}: spec.portLevelMtls: ignored on a policy without a selector (as Istio: port-level "
            "mTLS needs a workload selector)"
        )
    peers = idx.peer_authentications.get(pa.namespace, [])
    if not selector:
        first = next(p for p in peers if not _selector(p))
        if first.key != pa.key:
            out.append(
                f"{where}: ignored: PeerAuthentication/{first.namespace}/{first.name} is already the "
                f"{'mesh' if pa.namespace == idx.root_namespace else 'namespace'}-wide policy (first by name wins)"
            )
    return out


# ---------------------------------------------------------------------------------------- auto mTLS


def cluster_endpoints(idx: Index, dr_spec: dict[str, Any] | None, svc: Service, port: int, subset: str):
    eps = idx.endpoints.get((svc.hostname, port), [])
    if subset:
        labels = subset_labels(dr_spec, subset) or {}
        eps = [e for e in eps if labels_match(labels, e.labels)]
    return eps


def service_identities(idx: Index, endpoints: list[Endpoint]) -> list[str]:
    ids = {tls.identity_of(e.service_account, e.namespace, idx.trust_domain) for e in endpoints}
    return sorted(i for i in ids if i)


def _server_mode(idx: Index, e: Endpoint) -> str:
    return effective_mtls(idx, e.namespace, e.labels).mode_for(e.port)


def auto_mtls(idx: Index, svc: Service, endpoints: list[Endpoint]) -> bool:
    """Whether a cluster without a DestinationRule ``tls`` speaks ISTIO_MUTUAL."""
    if svc.mesh_external or not endpoints:
        return False
    with_sidecar = [e for e in endpoints if e.tls_mode == "istio"]
    if not with_sidecar:
        return False
    return not all(_server_mode(idx, e) == DISABLE for e in with_sidecar)


def cluster_transport_socket(
    idx: Index,
    svc: Service,
    port: int,
    subset: str,
    policy: dict[str, Any],
    dr_spec: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The ``transport_socket`` of ``outbound|port|subset|host`` (None: plaintext)."""
    settings = policy.get("tls")
    mode = str((settings or {}).get("mode") or "").upper() if settings is not None else ""
    sni = tls.sni(port, subset, svc.hostname)
    if mode == "DISABLE":
        return None
    if mode in ("SIMPLE", "MUTUAL"):
        return tls.file_upstream(settings, None)
    endpoints = cluster_endpoints(idx, dr_spec, svc, port, subset)
    if mode == "ISTIO_MUTUAL" or auto_mtls(idx, svc, endpoints):
        sans = [str(s) for s in (settings or {}).get("subjectAltNames") or []] or service_identities(
            idx, endpoints
        )
        return tls.istio_mutual_upstream(str((settings or {}).get("sni") or sni), sans)
    return None


def mixed_endpoint_warnings(idx: Index) -> list[str]:
    out = []
    for (host, port), eps in sorted(idx.endpoints.items()):
        modes = {e.tls_mode == "istio" for e in eps}
        svc = idx.services.get(host)
        if len(modes) == 2 and svc is not None and not svc.mesh_external:
            out.append(
                f"service {host}:{port}: some endpoints have a sidecar and some do not; auto mTLS decides "
                "per cluster in Isthmus, so the cluster uses ISTIO_MUTUAL and the sidecar-less endpoints "
                "fail (set a DestinationRule tls mode, or a subset per kind)"
            )
    return out
