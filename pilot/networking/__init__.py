"""Pure xDS builders: Istio configuration and the service registry in, Envoy v3 resources out.

The single entry point is ``generate(type_url, proxy, push, names)``; it dispatches to the per-type
builders (``listeners``, ``clusters``, ``routes``, ``endpoints``), which dispatch on the proxy type
(sidecar, router, proxyless gRPC). Every builder is a pure function of ``(proxy, push)``; per-push
indexes are computed once and kept in ``push.indexes`` (``index``). ``names`` narrows the result to
the requested resource names (None: everything the proxy should have). ``translation_warnings(push)``
lists what the configuration asks for that the Isthmus proxy cannot do yet (never emitted).

After the builders, ``mixer`` wires the mesh extension providers (telemetry loggers, metadata exchange,
CUSTOM ext_authz, provider clusters) and ``envoyfilter`` applies the EnvoyFilter patches, last, as
Istio does (``postprocess``, called by each builder on its dicts before they become protos).
"""

from __future__ import annotations

from google.protobuf.message import Message

from pilot.model.proxy import Proxy
from pilot.model.push_context import PushContext
from pilot.networking.clusters import build_clusters
from pilot.networking.endpoints import build_endpoints
from pilot.networking.listeners import build_listeners
from pilot.networking.protos import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.networking.routes import build_routes
from pilot.networking.warnings import translation_warnings

BUILDERS = {
    LISTENER_TYPE: build_listeners,
    CLUSTER_TYPE: build_clusters,
    ROUTE_TYPE: build_routes,
    ENDPOINT_TYPE: build_endpoints,
}


class UnknownTypeError(ValueError):
    pass


def generate(type_url: str, proxy: Proxy, push: PushContext, names: set[str] | None = None) -> list[Message]:
    names = set(names) if names is not None else None
    builder = BUILDERS.get(type_url)
    if builder is None:
        raise UnknownTypeError(f"pilot does not generate {type_url}")
    return builder(proxy, push, names)


__all__ = [
    "BUILDERS",
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "build_clusters",
    "build_endpoints",
    "build_listeners",
    "build_routes",
    "generate",
    "translation_warnings",
]
