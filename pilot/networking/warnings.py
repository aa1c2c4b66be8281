"""Translation warnings: what the configuration asks for that the Isthmus proxy cannot do yet.

Such fields are never emitted (the proxy would NACK the whole batch); each warning names
``kind/namespace/name`` and the field path. Computed once per push (pure)."""

from __future__ import annotations

from pilot.model.push_context import PushContext
from pilot.networking.authz import authz_warnings
from pilot.networking.envoyfilter import envoyfilter_warnings
from pilot.networking.gateway import gateway_warnings
from pilot.networking.httproute import route_warnings
from pilot.networking.index import index_of
from pilot.networking.mixer import mixer_warnings
from pilot.networking.mtls import mixed_endpoint_warnings, peer_authentication_warnings
from pilot.networking.traffic_policy import policy_warnings

WARNINGS_KEY = "networking.warnings"


def translation_warnings(push: PushContext) -> list[str]:
    cached = push.indexes.get(WARNINGS_KEY)
    if cached is not None:
        return cached
    out: list[str] = []
    for dr in push.config.list("DestinationRule"):
        out += policy_warnings(f"DestinationRule/{dr.namespace}/{dr.name}", dr.spec)
    for vs in push.config.list("VirtualService"):
        out += route_warnings(vs)
    for gw in push.config.list("Gateway"):
        out += gateway_warnings(gw)
    idx = index_of(push)
    for pa in push.config.list("PeerAuthentication"):
        out += peer_authentication_warnings(pa, idx)
    for ap in push.config.list("AuthorizationPolicy"):
        out += authz_warnings(ap, idx)
    for ra in push.config.list("RequestAuthentication"):
        out.append(
            f"RequestAuthentication/{ra.namespace}/{ra.name}: not enforced yet (JWT validation is not "
            "implemented by the proxy)"
        )
    out += mixed_endpoint_warnings(idx)
    out += mixer_warnings(push)
    out += envoyfilter_warnings(push)
    push.indexes[WARNINGS_KEY] = out
    return out
