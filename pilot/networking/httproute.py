"""VirtualService ``http`` routes → Envoy ``Route`` dicts, as Istio's route translation does it.

One Envoy route per ``match`` entry (a route without matches gets ``prefix: /``). A match entry that
does not apply to this proxy or listener is dropped: ``sourceLabels``/``sourceNamespace`` (the proxy's
labels/namespace), ``gateways`` (the gateway being built, ``mesh`` for sidecars) and ``port`` (the
listener port). A route all of whose matches were dropped is skipped.

Istio's defaults, as the Isthmus proxy can take them:

* route ``timeout`` is ``0s`` (disabled) unless the VirtualService sets one;
* the default retry policy is Istio's ``attempts: 2, retryOn: connect-failure,refused-stream,
  unavailable,cancelled,retriable-status-codes, retriable_status_codes: [503]``, emitted without the
  HTTP/2 and gRPC conditions (refused-stream, unavailable, cancelled) and without
  ``retry_host_predicate``/``host_selection_retry_max_attempts``, which the proxy does not implement;
  user ``retryOn`` tokens the proxy does not know are dropped and reported by ``route_warnings``;
* faults are per route: ``typed_per_filter_config["envoy.filters.http.fault"]`` with an ``HTTPFault``,
  the HCM carrying an empty fault filter before the router (Istio's layout);
* percentages become ``FractionalPercent`` with denominator ``MILLION`` (``value * 10000``).
"""

from __future__ import annotations

from typing import Any

from pilot.model.config import Config
from pilot.model.proxy import Proxy
from pilot.networking import traffic_policy as tp
from pilot.networking.durations import to_json
from pilot.networking.index import Index, destination_rule, gateway_key, labels_match
from pilot.networking.names import FAULT_FILTER, outbound_cluster
from pilot.networking.protos import FAULT, typed

SUPPORTED_RETRY_ON = (
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-4xx",
    "retriable-status-codes",
)
DEFAULT_RETRY = {
    "retry_on": "connect-failure,retriable-status-codes",
    "num_retries": 2,
    "retriable_status_codes": [503],
}
_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}


def fractional(percent: float | int | None) -> dict[str, Any]:
    value = 100.0 if percent is None else float(percent)
    return {"numerator": int(round(value * 10000)), "denominator": "MILLION"}


def _percentage(obj: dict[str, Any], legacy_key: str = "percent") -> dict[str, Any]:
    if obj.get("percentage") is not None:
        return fractional((obj["percentage"] or {}).get("value", 0))
    if obj.get(legacy_key) is not None:
        return fractional(obj[legacy_key])
    return fractional(100)


def string_match(m: dict[str, Any], ignore_case: bool = False) -> dict[str, Any] | None:
    if "exact" in m:
        out: dict[str, Any] = {"exact": str(m["exact"])}
    elif "prefix" in m:
        out = {"prefix": str(m["prefix"])}
    elif "regex" in m:
        return {"safe_regex": {"regex": str(m["regex"])}}
    else:
        return None
    if ignore_case:
        out["ignore_case"] = True
    return out


def _header_matcher(name: str, m: dict[str, Any] | None, invert: bool) -> dict[str, Any]:
    sm = string_match(m or {})
    if sm is None:
        # An empty match means "present" (Istio: withoutHeaders {x: {}} is "absent").
        out: dict[str, Any] = {"name": name, "present_match": True}
    else:
        out = {"name": name, "string_match": sm}
    if invert:
        out["invert_match"] = True
    return out


def translate_match(m: dict[str, Any]) -> dict[str, Any]:
    ignore_case = bool(m.get("ignoreUriCase"))
    out: dict[str, Any] = {}
    uri = m.get("uri") or {}
    if "exact" in uri:
        out["path"] = str(uri["exact"])
    elif "prefix" in uri:
        out["prefix"] = str(uri["prefix"])
    elif "regex" in uri:
        out["safe_regex"] = {"regex": str(uri["regex"])}
    else:
        out["prefix"] = "/"
    if ignore_case:
        out["case_sensitive"] = False
    headers = []
    for name, hm in sorted((m.get("headers") or {}).items()):
        headers.append(_header_matcher(str(name).lower(), hm, False))
    for name, hm in sorted((m.get("withoutHeaders") or {}).items()):
        headers.append(_header_matcher(str(name).lower(), hm, True))
    for pseudo, key in ((":method", "method"), (":authority", "authority"), (":scheme", "scheme")):
        if m.get(key):
            headers.append(_header_matcher(pseudo, m[key], False))
    if headers:
        out["headers"] = headers
    qps = []
    for name, qm in sorted((m.get("queryParams") or {}).items()):
        sm = string_match(qm or {})
        qps.append({"name": str(name), **({"string_match": sm} if sm else {"present_match": True})})
    if qps:
        out["query_parameters"] = qps
    return out


def match_applies(m: dict[str, Any], proxy: Proxy, gateway: str, vs_namespace: str, port: int | None) -> bool:
    if m.get("sourceLabels") and not labels_match(m["sourceLabels"], proxy.labels):
        return False
    if m.get("sourceNamespace") and m["sourceNamespace"] != proxy.namespace:
        return False
    gws = m.get("gateways")
    if gws and gateway not in {gateway_key(str(g), vs_namespace) for g in gws}:
        return False
    if m.get("port") and port is not None and int(m["port"]) != port:
        return False
    return True


def _header_ops(ops: dict[str, Any] | None, direction: str) -> dict[str, Any]:
    part = (ops or {}).get(direction) or {}
    adds = []
    for k, v in sorted((part.get("set") or {}).items()):
        adds.append({"header": {"key": k, "value": str(v)}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
    for k, v in sorted((part.get("add") or {}).items()):
        adds.append({"header": {"key": k, "value": str(v)}, "append_action": "APPEND_IF_EXISTS_OR_ADD"})
    out: dict[str, Any] = {}
    if adds:
        out[f"{direction}_headers_to_add"] = adds
    if part.get("remove"):
        out[f"{direction}_headers_to_remove"] = [str(h) for h in part["remove"]]
    return out


def header_mutations(ops: dict[str, Any] | None) -> dict[str, Any]:
    return {**_header_ops(ops, "request"), **_header_ops(ops, "response")}


class RouteContext:
    """What route translation needs: the index, the proxy, the gateway and the listener port."""

    def __init__(self, idx: Index, proxy: Proxy, gateway: str, port: int | None) -> None:
        self.idx, self.proxy, self.gateway, self.port = idx, proxy, gateway, port

    def cluster_for(self, destination: dict[str, Any], vs_namespace: str) -> tuple[str, str, int]:
        host = self.idx.resolve(str(destination.get("host") or ""), vs_namespace)
        port = (destination.get("port") or {}).get("number")
        if not port:
            svc = self.idx.services.get(host)
            if svc is not None and len(svc.ports) == 1:
                port = svc.ports[0].number
            else:
                port = self.port or 80
        return outbound_cluster(int(port), str(destination.get("subset") or ""), host), host, int(port)

    def hash_policy_for(self, host: str, subset: str, port: int) -> list[dict[str, Any]]:
        dr = destination_rule(self.idx, self.proxy.namespace, host)
        if dr is None:
            return []
        return tp.hash_policy(tp.effective_policy(dr.spec, subset, port))


def _retry_policy(retries: dict[str, Any] | None) -> dict[str, Any] | None:
    if retries is None:
        return dict(DEFAULT_RETRY)
    attempts = int(retries.get("attempts") or 0)
    if attempts <= 0:
        return None
    out: dict[str, Any] = {"num_retries": attempts}
    tokens = []
    codes = []
    for token in str(retries.get("retryOn") or DEFAULT_RETRY["retry_on"]).split(","):
        token = token.strip()
        if token.isdigit():
            codes.append(int(token))
            if "retriable-status-codes" not in tokens:
                tokens.append("retriable-status-codes")
        elif token in SUPPORTED_RETRY_ON and token not in tokens:
            tokens.append(token)
    if retries.get("retryOn") is None:
        codes = [503]
    out["retry_on"] = ",".join(tokens)
    if codes:
        out["retriable_status_codes"] = codes
    if retries.get("perTryTimeout"):
        out["per_try_timeout"] = to_json(retries["perTryTimeout"])
    return out


def _fault(fault: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    delay = fault.get("delay")
    if delay:
        out["delay"] = {
            "fixed_delay": to_json(delay.get("fixedDelay") or "0s"),
            "percentage": _percentage(delay),
        }
    abort = fault.get("abort")
    if abort and abort.get("httpStatus") is not None:
        out["abort"] = {"http_status": int(abort["httpStatus"]), "percentage": _percentage(abort)}
    return out


def _mirrors(ctx: RouteContext, http: dict[str, Any], ns: str) -> list[dict[str, Any]]:
    entries = []
    if http.get("mirror"):
        pct = http.get("mirrorPercentage")
        value = (pct or {}).get("value") if pct is not None else http.get("mirrorPercent")
        entries.append((http["mirror"], value))
    for m in http.get("mirrors") or []:
        entries.append((m.get("destination") or {}, (m.get("percentage") or {}).get("value")))
    out = []
    for dest, value in entries:
        cluster, _, _ = ctx.cluster_for(dest, ns)
        mirror: dict[str, Any] = {"cluster": cluster}
        if value is not None and float(value) < 100:
            mirror["runtime_fraction"] = {"default_value": fractional(value)}
        out.append(mirror)
    return out


def _route_action(ctx: RouteContext, http: dict[str, Any], ns: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(route action, route-level header mutations merged from a single destination)."""
    dests = http.get("route") or []
    action: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if len(dests) == 1:
        cluster, host, port = ctx.cluster_for(dests[0]["destination"], ns)
        action["cluster"] = cluster
        extra = header_mutations(dests[0].get("headers"))
        hp = ctx.hash_policy_for(host, str(dests[0]["destination"].get("subset") or ""), port)
    else:
        clusters = []
        hp = []
        for i, d in enumerate(dests):
            cluster, host, port = ctx.cluster_for(d["destination"], ns)
            entry: dict[str, Any] = {"name": cluster, "weight": int(d.get("weight") or 0)}
            entry.update(header_mutations(d.get("headers")))
            clusters.append(entry)
            if i == 0:
                hp = ctx.hash_policy_for(host, str(d["destination"].get("subset") or ""), port)
        action["weighted_clusters"] = {"clusters": [c for c in clusters if c["weight"] > 0] or clusters}
    if hp:
        action["hash_policy"] = hp
    action["timeout"] = to_json(http["timeout"]) if http.get("timeout") else "0s"
    retry = _retry_policy(http.get("retries"))
    if retry:
        action["retry_policy"] = retry
    mirrors = _mirrors(ctx, http, ns)
    if mirrors:
        action["request_mirror_policies"] = mirrors
    rewrite = http.get("rewrite") or {}
    if rewrite.get("uri"):
        action["prefix_rewrite"] = str(rewrite["uri"])
    elif rewrite.get("uriRegexRewrite"):
        rr = rewrite["uriRegexRewrite"]
        action["regex_rewrite"] = {
            "pattern": {"regex": str(rr.get("match") or "")},
            "substitution": str(rr.get("rewrite") or ""),
        }
    if rewrite.get("authority"):
        action["host_rewrite_literal"] = str(rewrite["authority"])
    return action, extra


def _redirect(redirect: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if redirect.get("uri"):
        out["path_redirect"] = str(redirect["uri"])
    if redirect.get("authority"):
        out["host_redirect"] = str(redirect["authority"])
    if redirect.get("port"):
        out["port_redirect"] = int(redirect["port"])
    if redirect.get("scheme"):
        out["scheme_redirect"] = str(redirect["scheme"])
    code = int(redirect.get("redirectCode") or 301)
    if code != 301:
        out["response_code"] = _REDIRECT_CODES.get(code, "MOVED_PERMANENTLY")
    return out


def translate_http(ctx: RouteContext, vs: Config) -> list[dict[str, Any]]:
    """Envoy routes for one VirtualService's ``http`` section, in order."""
    routes: list[dict[str, Any]] = []
    ns = vs.namespace
    for http in vs.spec.get("http") or []:
        matches = http.get("match") or [None]
        applicable = [
            m for m in matches if m is None or match_applies(m, ctx.proxy, ctx.gateway, ns, ctx.port)
        ]
        if not applicable:
            continue
        body: dict[str, Any] = {}
        if http.get("redirect"):
            body["redirect"] = _redirect(http["redirect"])
        elif http.get("directResponse"):
            dr = http["directResponse"]
            body["direct_response"] = {"status": int(dr.get("status") or 200)}
            b = dr.get("body") or {}
            if b.get("string") is not None:
                body["direct_response"]["body"] = {"inline_string": str(b["string"])}
        else:
            action, extra = _route_action(ctx, http, ns)
            body["route"] = action
            body.update(extra)
        body.update(_merge_mutations(body, header_mutations(http.get("headers"))))
        if http.get("fault"):
            body["typed_per_filter_config"] = {FAULT_FILTER: typed(FAULT, _fault(http["fault"]))}
        body["metadata"] = {
            "filter_metadata": {
                "istio": {"config": f"/apis/networking.istio.io/v1/namespaces/{ns}/virtual-service/{vs.name}"}
            }
        }
        for m in applicable:
            route = {"match": translate_match(m or {}), **body}
            regex = ((m or {}).get("uri") or {}).get("regex")
            if regex is not None and "prefix_rewrite" in route.get("route", {}):
                # Envoy refuses prefix_rewrite on a regex match; Istio rewrites the whole matched path.
                action = dict(route["route"])
                action["regex_rewrite"] = {
                    "pattern": {"regex": str(regex)},
                    "substitution": action.pop("prefix_rewrite"),
                }
                route["route"] = action
            name = (m or {}).get("name") or http.get("name")
            if name:
                route = {"name": str(name), **route}
            routes.append(route)
    return routes


def _merge_mutations(body: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in more.items():
        out[k] = list(body.get(k) or []) + list(v)
    return out


def default_route(ctx: RouteContext, host: str, port: int) -> dict[str, Any]:
    """Istio's route for a service without a VirtualService."""
    action: dict[str, Any] = {"cluster": outbound_cluster(port, "", host)}
    hp = ctx.hash_policy_for(host, "", port)
    if hp:
        action["hash_policy"] = hp
    action["timeout"] = "0s"
    action["retry_policy"] = dict(DEFAULT_RETRY)
    return {"name": "default", "match": {"prefix": "/"}, "route": action}


def route_warnings(vs: Config) -> list[str]:
    """What this VirtualService asks for that the proxy cannot do yet (never emitted)."""
    out = []
    key = f"VirtualService/{vs.namespace}/{vs.name}"
    for i, http in enumerate(vs.spec.get("http") or []):
        where = f"{key}: http[{i}]"
        retry_on = (http.get("retries") or {}).get("retryOn")
        if retry_on:
            for token in str(retry_on).split(","):
                token = token.strip()
                if token and not token.isdigit() and token not in SUPPORTED_RETRY_ON:
                    out.append(f"{where}.retries.retryOn: '{token}' is not supported by the proxy; dropped")
        for f in ("retryRemoteLocalities",):
            if (http.get("retries") or {}).get(f) is not None:
                out.append(f"{where}.retries.{f}: not supported by the proxy; ignored")
        if (http.get("fault") or {}).get("abort", {}).get("grpcStatus") is not None:
            out.append(f"{where}.fault.abort.grpcStatus: not supported by the proxy; not emitted")
        for f in ("corsPolicy",):
            if http.get(f) is not None:
                out.append(f"{where}.{f}: the proxy has no CORS filter yet; ignored")
    return out
