"""Istio's EnvoyFilter: patches applied to the generated resources, last (pure).

Selection: an EnvoyFilter in the root namespace applies to every proxy, one in another namespace to
the proxies of that namespace; ``workloadSelector.labels`` narrows to the matching workloads. Order:
``priority``, then namespace/name. ``match.context``: ``SIDECAR_INBOUND`` (the ``virtualInbound``
listener and its inline route configs), ``SIDECAR_OUTBOUND`` (every other sidecar listener, RDS route
config and cluster), ``GATEWAY`` (routers), ``ANY``.

Supported patches:

| applyTo | operations | match |
|---|---|---|
| ``HTTP_FILTER`` | ``INSERT_BEFORE``, ``INSERT_AFTER``, ``INSERT_FIRST``, ``ADD``, ``REMOVE``, ``MERGE`` | ``listener.portNumber``, ``listener.name``, ``filterChain.name``, ``filterChain.filter.name`` (the HCM), ``filter.subFilter.name`` |
| ``CLUSTER`` | ``ADD``, ``MERGE``, ``REMOVE`` | ``cluster.service``, ``portNumber``, ``subset``, ``name`` |
| ``ROUTE_CONFIGURATION`` | ``MERGE`` | ``routeConfiguration.portNumber``, ``name`` |
| ``VIRTUAL_HOST`` | ``ADD``, ``MERGE``, ``REMOVE`` | ``routeConfiguration.vhost.name`` (empty: any), ``vhost.route.action`` ``ANY`` |

``MERGE`` is proto merge on the JSON form: mappings merge recursively, lists are appended, scalars
replaced; a ``typed_config`` of another ``@type`` is replaced. Every patch value is checked against the
Envoy message it becomes (``Cluster``, ``HttpFilter``, ``VirtualHost``, ``RouteConfiguration``); a value
that does not parse, an ``applyTo``/operation/match field not supported, is reported by
``envoyfilter_warnings`` with its path and the patch is skipped (never half-applied).
``http2_protocol_options`` on an added cluster is removed and reported: such clusters serve gRPC
clients (rate limit, ext_authz, access logs), which speak HTTP/2 on their own; the proxy's HTTP pool
does not do upstream HTTP/2.
"""

from __future__ import annotations

import copy
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2  # noqa: F401  (Any payload)
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2  # noqa: F401  (Any payload)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from pilot.model.config import Config
from pilot.model.proxy import GRPC, ROUTER, Proxy
from pilot.model.push_context import PushContext
from pilot.networking.filters import HCM_NAME
from pilot.networking.index import labels_match
from pilot.networking.names import parse_cluster_name

SUPPORTED = {
    "HTTP_FILTER": ("INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "ADD", "REMOVE", "MERGE"),
    "CLUSTER": ("ADD", "MERGE", "REMOVE"),
    "ROUTE_CONFIGURATION": ("MERGE",),
    "VIRTUAL_HOST": ("ADD", "MERGE", "REMOVE"),
}
VALUE_TYPE = {
    "HTTP_FILTER": hcm_pb2.HttpFilter,
    "CLUSTER": cluster_pb2.Cluster,
    "ROUTE_CONFIGURATION": route_pb2.RouteConfiguration,
    "VIRTUAL_HOST": route_components_pb2.VirtualHost,
}
MATCH_SUPPORTED = {
    "listener": {"portNumber", "name", "filterChain"},
    "filterChain": {"name", "filter"},
    "filter": {"name", "subFilter"},
    "subFilter": {"name"},
    "routeConfiguration": {"portNumber", "name", "vhost"},
    "vhost": {"name", "route"},
    "route": {"action"},
    "cluster": {"service", "portNumber", "subset", "name"},
}
WARNINGS_KEY = "envoyfilter.patches"


def _where(ef: Config) -> str:
    return f"EnvoyFilter/{ef.namespace}/{ef.name}"


def _unsupported_match(match: dict[str, Any], path: str) -> list[str]:
    out = []
    for key in ("listener", "routeConfiguration", "cluster"):
        sub = match.get(key)
        if not isinstance(sub, dict):
            continue
        stack = [(key, sub, f"{path}.{key}")]
        while stack:
            kind, d, p = stack.pop()
            for k, v in d.items():
                if k not in MATCH_SUPPORTED.get(kind, set()):
                    out.append(f"{p}.{k}: not supported by Isthmus yet")
                elif isinstance(v, dict):
                    stack.append((k, v, f"{p}.{k}"))
                elif kind == "route" and k == "action" and v != "ANY":
                    out.append(f"{p}.{k}: only ANY is supported by Isthmus yet")
    if match.get("proxy"):
        out.append(f"{path}.proxy: not supported by Isthmus yet")
    return out


def _check(ef: Config) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """(usable patches as (index, patch with a cleaned value), problems by path)."""
    where = _where(ef)
    problems: list[str] = []
    usable = []
    if ef.spec.get("targetRefs"):
        problems.append(
            f"{where}: spec.targetRefs: not supported (use workloadSelector); the EnvoyFilter is not applied"
        )
        return [], problems
    for i, cp in enumerate(ef.spec.get("configPatches") or []):
        path = f"{where}: spec.configPatches[{i}]"
        apply_to = cp.get("applyTo")
        op = (cp.get("patch") or {}).get("operation")
        if apply_to not in SUPPORTED:
            problems.append(f"{path}.applyTo: {apply_to} is not supported by Isthmus yet; patch not applied")
            continue
        if op not in SUPPORTED[apply_to]:
            problems.append(
                f"{path}.patch.operation: {op} on {apply_to} is not supported by Isthmus yet; patch not applied"
            )
            continue
        if (cp.get("patch") or {}).get("filterClass") not in (None, "UNSPECIFIED"):
            problems.append(f"{path}.patch.filterClass: not supported by Isthmus yet; patch not applied")
            continue
        bad = _unsupported_match(cp.get("match") or {}, f"{path}.match")
        if apply_to in ("ROUTE_CONFIGURATION", "VIRTUAL_HOST") and (cp.get("match") or {}).get("context") == (
            "SIDECAR_INBOUND"
        ):
            bad.append(
                f"{path}.match.context: SIDECAR_INBOUND route configs are inline in virtualInbound; not supported"
            )
        if bad:
            problems += [f"{b}; patch not applied" for b in bad]
            continue
        value = copy.deepcopy((cp.get("patch") or {}).get("value"))
        if op != "REMOVE":
            if not isinstance(value, dict):
                problems.append(f"{path}.patch.value: {op} needs a value; patch not applied")
                continue
            if apply_to == "CLUSTER" and "http2_protocol_options" in value:
                value.pop("http2_protocol_options")
                problems.append(
                    f"{path}.patch.value.http2_protocol_options: removed (gRPC clients of this cluster speak "
                    "HTTP/2 themselves; the proxy has no upstream HTTP/2 pool)"
                )
            try:
                json_format.ParseDict(value, VALUE_TYPE[apply_to]())
            except (json_format.ParseError, TypeError, ValueError) as e:
                problems.append(
                    f"{path}.patch.value: not a valid {VALUE_TYPE[apply_to].DESCRIPTOR.full_name}: {e}; patch not applied"
                )
                continue
            if apply_to == "CLUSTER" and op == "ADD" and not value.get("name"):
                problems.append(f"{path}.patch.value.name: an added cluster needs a name; patch not applied")
                continue
        usable.append((i, {**cp, "patch": {**cp["patch"], "value": value}}))
    return usable, problems


def _checked(push: PushContext) -> dict[tuple[str, str], tuple[list, list[str]]]:
    cached = push.indexes.get(WARNINGS_KEY)
    if cached is None:
        cached = push.indexes[WARNINGS_KEY] = {
            (ef.namespace, ef.name): _check(ef) for ef in push.config.list("EnvoyFilter")
        }
    return cached


def envoyfilter_warnings(push: PushContext) -> list[str]:
    return [p for _, problems in _checked(push).values() for p in problems]


def patches_for(proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    """The usable patches that apply to this proxy, in Istio's order."""
    if proxy.type == GRPC:
        return []
    checked = _checked(push)
    root = push.mesh.root_namespace
    chosen = []
    for ef in push.config.list("EnvoyFilter"):
        if ef.namespace not in (root, proxy.namespace):
            continue
        sel = (ef.spec.get("workloadSelector") or {}).get("labels")
        if sel and not labels_match(sel, proxy.labels):
            continue
        prio = int(ef.spec.get("priority") or 0)
        for i, cp in checked[(ef.namespace, ef.name)][0]:
            chosen.append(((prio, ef.namespace != root, ef.namespace, ef.name, i), cp))
    return [cp for _, cp in sorted(chosen, key=lambda x: x[0])]


def _context_ok(cp: dict[str, Any], proxy: Proxy, inbound: bool) -> bool:
    ctx = (cp.get("match") or {}).get("context") or "ANY"
    if ctx == "ANY":
        return True
    if ctx == "GATEWAY":
        return proxy.type == ROUTER
    if proxy.type == ROUTER:
        return False
    return inbound == (ctx == "SIDECAR_INBOUND")


def merge(dst: Any, src: Any) -> Any:
    """Proto merge on the JSON form (a new value)."""
    if isinstance(dst, dict) and isinstance(src, dict):
        if "@type" in src and dst.get("@type") != src.get("@type"):
            return copy.deepcopy(src)
        out = dict(dst)
        for k, v in src.items():
            out[k] = merge(dst[k], v) if k in dst else copy.deepcopy(v)
        return out
    if isinstance(dst, list) and isinstance(src, list):
        return [*dst, *copy.deepcopy(src)]
    return copy.deepcopy(src)


# ----------------------------------------------------------------------------- listeners


def _listener_port(lst: dict[str, Any], chain: dict[str, Any]) -> int | None:
    dp = (chain.get("filter_chain_match") or {}).get("destination_port")
    if dp:
        return int(dp)
    return ((lst.get("address") or {}).get("socket_address") or {}).get("port_value")


def _patch_http_filters(filters: list[dict[str, Any]], cp: dict[str, Any]) -> list[dict[str, Any]] | None:
    op = cp["patch"]["operation"]
    value = cp["patch"].get("value")
    sub = (
        (((cp.get("match") or {}).get("listener") or {}).get("filterChain") or {})
        .get("filter", {})
        .get("subFilter")
    )
    sub_name = (sub or {}).get("name")
    if op == "ADD":
        return [*filters, copy.deepcopy(value)]
    if op == "INSERT_FIRST":
        return [copy.deepcopy(value), *filters]
    at = [i for i, f in enumerate(filters) if sub_name is None or f.get("name") == sub_name]
    if not at:
        return None
    i = at[0]
    if op == "INSERT_BEFORE":
        return [*filters[:i], copy.deepcopy(value), *filters[i:]]
    if op == "INSERT_AFTER":
        return [*filters[: i + 1], copy.deepcopy(value), *filters[i + 1 :]]
    if op == "REMOVE":
        return [f for j, f in enumerate(filters) if j not in at] if sub_name else None
    if op == "MERGE":
        return [merge(f, value) if j in at else f for j, f in enumerate(filters)]
    return None


def patch_listeners(
    listeners: list[dict[str, Any]], proxy: Proxy, patches: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    patches = [cp for cp in patches if cp["applyTo"] == "HTTP_FILTER"]
    if not patches:
        return listeners
    out = []
    for lst in listeners:
        inbound = lst.get("traffic_direction") == "INBOUND"

        def chain(c: dict[str, Any], lst=lst, inbound=inbound) -> dict[str, Any]:
            new_filters = []
            for f in c.get("filters") or []:
                if f.get("name") == HCM_NAME:
                    for cp in patches:
                        m = (cp.get("match") or {}).get("listener") or {}
                        fc = m.get("filterChain") or {}
                        if not _context_ok(cp, proxy, inbound):
                            continue
                        if m.get("portNumber") and m["portNumber"] != _listener_port(lst, c):
                            continue
                        if m.get("name") and m["name"] != lst.get("name"):
                            continue
                        if fc.get("name") and fc["name"] != c.get("name"):
                            continue
                        if (fc.get("filter") or {}).get("name") not in (None, HCM_NAME):
                            continue
                        tc = f["typed_config"]
                        patched = _patch_http_filters(list(tc.get("http_filters") or []), cp)
                        if patched is not None:
                            f = {**f, "typed_config": {**tc, "http_filters": patched}}
                new_filters.append(f)
            return {**c, "filters": new_filters}

        new = {**lst, "filter_chains": [chain(c) for c in lst.get("filter_chains") or []]}
        if lst.get("default_filter_chain"):
            new["default_filter_chain"] = chain(lst["default_filter_chain"])
        out.append(new)
    return out


# ----------------------------------------------------------------------------- clusters


def _cluster_matches(c: dict[str, Any], m: dict[str, Any]) -> bool:
    if m.get("name") and m["name"] != c.get("name"):
        return False
    parsed = parse_cluster_name(c.get("name", ""))
    if m.get("service") or m.get("portNumber") or m.get("subset"):
        if parsed is None or parsed[0] != "outbound":
            return False
        _, port, subset, host = parsed
        if m.get("service") and m["service"] != host:
            return False
        if m.get("portNumber") and m["portNumber"] != port:
            return False
        if m.get("subset") and m["subset"] != subset:
            return False
    return True


def patch_clusters(
    clusters: list[dict[str, Any]], proxy: Proxy, patches: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = list(clusters)
    for cp in patches:
        if cp["applyTo"] != "CLUSTER" or not _context_ok(cp, proxy, inbound=False):
            continue
        op = cp["patch"]["operation"]
        m = (cp.get("match") or {}).get("cluster") or {}
        if op == "ADD":
            value = copy.deepcopy(cp["patch"]["value"])
            out = [c for c in out if c.get("name") != value["name"]] + [value]
        elif op == "REMOVE":
            out = [c for c in out if not _cluster_matches(c, m)]
        else:
            out = [merge(c, cp["patch"]["value"]) if _cluster_matches(c, m) else c for c in out]
    return out


# ----------------------------------------------------------------------------- routes


def _route_port(name: str) -> int | None:
    digits = name.rsplit(".", 1)[-1]
    return int(digits) if digits.isdigit() else None


def patch_routes(
    routes: list[dict[str, Any]], proxy: Proxy, patches: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    patches = [cp for cp in patches if cp["applyTo"] in ("ROUTE_CONFIGURATION", "VIRTUAL_HOST")]
    if not patches:
        return routes
    out = []
    for rc in routes:
        for cp in patches:
            if not _context_ok(cp, proxy, inbound=False):
                continue
            m = (cp.get("match") or {}).get("routeConfiguration") or {}
            if m.get("portNumber") and m["portNumber"] != _route_port(rc.get("name", "")):
                continue
            if m.get("name") and m["name"] != rc.get("name"):
                continue
            op, value = cp["patch"]["operation"], cp["patch"].get("value")
            if cp["applyTo"] == "ROUTE_CONFIGURATION":
                rc = merge(rc, value)
                continue
            vname = (m.get("vhost") or {}).get("name") or None
            vhosts = list(rc.get("virtual_hosts") or [])
            if op == "ADD":
                vhosts.append(copy.deepcopy(value))
            elif op == "REMOVE":
                vhosts = [v for v in vhosts if vname is not None and v.get("name") != vname]
            else:
                vhosts = [merge(v, value) if vname in (None, v.get("name")) else v for v in vhosts]
            rc = {**rc, "virtual_hosts": vhosts}
        out.append(rc)
    return out
