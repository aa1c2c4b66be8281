"""What runs on the builders' dicts before they become protos: the mesh extension providers
(``mixer``: telemetry loggers, metadata exchange, CUSTOM ext_authz, provider clusters), then the
EnvoyFilter patches (``envoyfilter``), last, as Istio applies them. Both are no-ops (the same list)
when the mesh has no providers and no EnvoyFilter selects the proxy. A patched resource that no longer
parses keeps its generated form (every patch that cannot apply is reported by ``envoyfilter_warnings``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import json_format

from pilot.model.proxy import Proxy
from pilot.model.push_context import PushContext
from pilot.networking import envoyfilter, mixer, protos


def _keep_parsable(new: list[dict], old: list[dict], parse: Callable) -> list[dict]:
    """Patched resources that parse; one that does not is replaced by its generated form."""
    by_name = {d.get("name"): d for d in old}
    out = []
    for d in new:
        if d is by_name.get(d.get("name")):
            out.append(d)
            continue
        try:
            parse(d)
        except (json_format.ParseError, TypeError, ValueError, KeyError):
            d = by_name.get(d.get("name"))
            if d is None:
                continue
        out.append(d)
    return out


def finish_listeners(dicts: list[dict[str, Any]], proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    patches = envoyfilter.patches_for(proxy, push)
    wired = mixer.wire_listeners(dicts, proxy, push) if push.mesh.extension_providers else dicts
    if not patches:
        return wired
    return _keep_parsable(envoyfilter.patch_listeners(wired, proxy, patches), wired, protos.listener)


def finish_clusters(dicts: list[dict[str, Any]], proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    patches = envoyfilter.patches_for(proxy, push)
    wired = mixer.wire_clusters(dicts, proxy, push) if push.mesh.extension_providers else dicts
    if not patches:
        return wired
    return _keep_parsable(envoyfilter.patch_clusters(wired, proxy, patches), wired, protos.cluster)


def finish_routes(dicts: list[dict[str, Any]], proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    patches = envoyfilter.patches_for(proxy, push)
    if not patches:
        return dicts
    return _keep_parsable(envoyfilter.patch_routes(dicts, proxy, patches), dicts, protos.route_configuration)
