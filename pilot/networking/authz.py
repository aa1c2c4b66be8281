"""AuthorizationPolicy → Envoy RBAC (``envoy.filters.http.rbac`` / ``envoy.filters.network.rbac``),
as Istio's ``pilot/pkg/security/authz`` translates it (pure).

Selection: a policy applies to a workload when it is in the root namespace without a selector
(mesh-wide), in the workload's namespace without a selector, or in its namespace with a ``selector``
matching its labels. Per action there is one RBAC filter, in Istio's order: CUSTOM (ext_authz to the
mesh extension provider, added by ``mixer``), DENY, ALLOW, AUDIT (RBAC ``LOG``). No ALLOW policy: no ALLOW
filter (default allow); an ALLOW policy without rules contributes no RBAC policy, so the ALLOW filter
with nothing in it denies everything, as in Istio.

Each rule becomes one RBAC policy named ``ns[<ns>]-policy[<name>]-rule[<i>]``: its permissions are one
``and_rules`` per ``to`` entry (plus the permission-type ``when`` conditions), its principals one
``and_ids`` per ``from`` entry (plus the principal-type ``when`` conditions); a list of values is an
``or``; ``notX`` is a ``not`` of the ``or``. Principals are matched on the peer certificate's URI SAN:
``cluster.local/ns/x/sa/y`` becomes ``spiffe://cluster.local/ns/x/sa/y`` (prefix ``*`` too, suffix
not), a namespace ``x`` is the regex ``.*/ns/x/.*``. Paths: exact, ``/admin*`` prefix, ``*.html``
suffix, ``*`` any. The HCM normalises paths before the RBAC filter sees them (``listeners``).

What cannot be translated fails closed, as Istio does for TCP: an ALLOW rule that needs something
unsupported (``requestPrincipals``, ``request.auth.*`` keys, or an HTTP-only field on a TCP port) is
dropped (it allows nothing); in a DENY rule only the unsupported field is dropped (it denies more).
Every such case is reported by ``authz_warnings``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pilot.model.config import Config
from pilot.networking.index import Index, labels_match
from pilot.networking.protos import HTTP_RBAC, NETWORK_RBAC, typed

HTTP_RBAC_FILTER = "envoy.filters.http.rbac"
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
ACTIONS_IN_ORDER = ("DENY", "ALLOW", "AUDIT")
RBAC_ACTION = {"DENY": "DENY", "ALLOW": "ALLOW", "AUDIT": "LOG"}

# Istio keys that only make sense on HTTP.
HTTP_ONLY_OPERATION = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")
UNSUPPORTED_SOURCE = ("requestPrincipals", "notRequestPrincipals")
PRINCIPAL_KEYS = ("source.ip", "remote.ip", "source.namespace", "source.principal")
PERMISSION_KEYS = ("destination.ip", "destination.port", "connection.sni")
HEADER_KEY = re.compile(r"^request\.headers\[(.+)\]$")


class Unsupported(Exception):
    """A field or condition that cannot be translated (``reason`` says why)."""


# ------------------------------------------------------------------------------------ string matchers

_REGEX_SPECIAL = set(".^$*+?()[]{}|\\")


def _re_literal(s: str) -> str:
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in s)


def string_match(value: str, prefix: str = "") -> dict[str, Any]:
    """Istio's StringMatcherWithPrefix: ``*`` any non-empty, ``abc*`` prefix, ``*abc`` suffix, else exact;
    ``prefix`` is put before exact and prefix values (``spiffe://`` for principals)."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    if value.startswith("*"):
        return {"suffix": value[1:]}
    return {"exact": prefix + value}


def _or_ids(ids: list[dict[str, Any]]) -> dict[str, Any]:
    return {"or_ids": {"ids": ids}}


def _or_rules(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"or_rules": {"rules": rules}}


def _principal_name(matcher: dict[str, Any]) -> dict[str, Any]:
    return {"authenticated": {"principal_name": matcher}}


def principal_ids(values: list[str]) -> list[dict[str, Any]]:
    return [_principal_name(string_match(str(v), "spiffe://")) for v in values]


def namespace_ids(values: list[str]) -> list[dict[str, Any]]:
    out = []
    for v in values:
        v = str(v)
        if v == "*":
            pattern = ".+"
        elif v.endswith("*"):
            pattern = _re_literal(v[:-1]) + ".*"
        elif v.startswith("*"):
            pattern = ".*" + _re_literal(v[1:])
        else:
            pattern = _re_literal(v)
        out.append(_principal_name({"safe_regex": {"regex": f".*/ns/{pattern}/.*"}}))
    return out


def service_account_ids(values: list[str], trust_domain: str) -> list[dict[str, Any]]:
    out = []
    for v in values:
        ns, _, sa = str(v).rpartition("/")
        if not ns or not sa:
            raise Unsupported(f"service account {v!r} is not <namespace>/<name>")
        out.append(_principal_name({"exact": f"spiffe://{trust_domain}/ns/{ns}/sa/{sa}"}))
    return out


def _cidr(value: str) -> dict[str, Any]:
    ip, _, length = str(value).partition("/")
    if not length:
        length = "128" if ":" in ip else "32"
    return {"address_prefix": ip, "prefix_len": int(length)}


def header_match(name: str, value: str) -> dict[str, Any]:
    if value == "*":
        return {"header": {"name": name, "present_match": True}}
    return {"header": {"name": name, "string_match": string_match(value)}}


def host_match(value: str) -> dict[str, Any]:
    m = string_match(value)
    if "safe_regex" not in m:
        m["ignore_case"] = True
    return {"header": {"name": ":authority", "string_match": m}}


def path_match(value: str) -> dict[str, Any]:
    return {"url_path": {"path": string_match(value)}}


def _port(value: Any) -> int:
    port = int(str(value))
    if not 0 < port < 65536:
        raise Unsupported(f"port {value!r} is not 1-65535")
    return port


# --------------------------------------------------------------------------------------- one rule


@dataclass
class Translated:
    policy: dict[str, Any] | None  # None: the rule is dropped
    problems: list[str]


def _negated(ids_or_rules: dict[str, Any], principal: bool) -> dict[str, Any]:
    return {"not_id": ids_or_rules} if principal else {"not_rule": ids_or_rules}


def _source_ids(source: dict[str, Any], trust_domain: str) -> list[tuple[str, dict[str, Any]]]:
    """(field, principal) for each field of a ``from.source``."""
    out = []
    builders = {
        "principals": principal_ids,
        "namespaces": namespace_ids,
        "ipBlocks": lambda vs: [{"direct_remote_ip": _cidr(v)} for v in vs],
        "remoteIpBlocks": lambda vs: [{"remote_ip": _cidr(v)} for v in vs],
        "serviceAccounts": lambda vs: service_account_ids(vs, trust_domain),
    }
    for key, build in builders.items():
        for negate, field in ((False, key), (True, "not" + key[0].upper() + key[1:])):
            values = source.get(field)
            if values:
                ids = _or_ids(build([str(v) for v in values]))
                out.append((field, _negated(ids, True) if negate else ids))
    for field in UNSUPPORTED_SOURCE:
        if source.get(field):
            raise Unsupported(f"{field} needs RequestAuthentication (JWT), not translated yet")
    return out


def _operation_rules(op: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    builders = {
        "hosts": lambda vs: [host_match(v) for v in vs],
        "ports": lambda vs: [{"destination_port": _port(v)} for v in vs],
        "methods": lambda vs: [header_match(":method", v) for v in vs],
        "paths": lambda vs: [path_match(v) for v in vs],
    }
    for key, build in builders.items():
        for negate, field in ((False, key), (True, "not" + key[0].upper() + key[1:])):
            values = op.get(field)
            if values:
                rules = _or_rules(build([str(v) for v in values]))
                out.append((field, _negated(rules, False) if negate else rules))
    return out


def _condition(cond: dict[str, Any], trust_domain: str) -> tuple[str, bool, dict[str, Any]]:
    """(key, is_principal, rule) of a ``when`` condition."""
    key = str(cond.get("key") or "")
    values = [str(v) for v in cond.get("values") or []]
    not_values = [str(v) for v in cond.get("notValues") or []]
    header = HEADER_KEY.match(key)
    principal = True
    if header:

        def build(vs):
            return [header_match(header.group(1), v) for v in vs]

    elif key == "source.ip":

        def build(vs):
            return [{"direct_remote_ip": _cidr(v)} for v in vs]

    elif key == "remote.ip":

        def build(vs):
            return [{"remote_ip": _cidr(v)} for v in vs]

    elif key == "source.principal":
        build = principal_ids
    elif key == "source.namespace":
        build = namespace_ids
    elif key == "destination.port":
        principal = False

        def build(vs):
            return [{"destination_port": _port(v)} for v in vs]

    elif key == "destination.ip":
        principal = False

        def build(vs):
            return [{"destination_ip": _cidr(v)} for v in vs]

    elif key == "connection.sni":
        principal = False

        def build(vs):
            return [{"requested_server_name": string_match(v)} for v in vs]

    elif key.startswith("request.auth."):
        raise Unsupported(f"when key {key!r} needs RequestAuthentication (JWT), not translated yet")
    else:
        raise Unsupported(f"when key {key!r} is not supported")
    if not values and not not_values:
        raise Unsupported(f"when key {key!r} has neither values nor notValues")
    parts = []
    wrap = _or_ids if principal else _or_rules
    if values:
        parts.append(wrap(build(values)))
    if not_values:
        parts.append(_negated(wrap(build(not_values)), principal))
    rule = (
        parts[0]
        if len(parts) == 1
        else ({"and_ids": {"ids": parts}} if principal else {"and_rules": {"rules": parts}})
    )
    return key, principal, rule


def _and(items: list[dict[str, Any]], principal: bool) -> dict[str, Any]:
    if not items:
        return {"any": True}
    return {"and_ids": {"ids": items}} if principal else {"and_rules": {"rules": items}}


def translate_rule(rule: dict[str, Any], action: str, *, tcp: bool, trust_domain: str) -> Translated:
    """One AuthorizationPolicy rule → one RBAC policy (dict), or None when it must be dropped."""
    strict = action == "DENY"  # drop a field (deny more) rather than the rule (allow less)
    problems: list[str] = []

    def unsupported(what: str, why: str) -> bool:
        """Record the problem; True when the whole rule is dropped."""
        problems.append(
            f"{what}: {why}; "
            + ("the field is ignored (denies more)" if strict else "the rule is dropped (allows less)")
        )
        return not strict

    when_principals: list[dict[str, Any]] = []
    when_permissions: list[dict[str, Any]] = []
    for j, cond in enumerate(rule.get("when") or []):
        try:
            key, is_principal, r = _condition(cond, trust_domain)
        except (Unsupported, ValueError) as e:
            if unsupported(f"when[{j}]", str(e)):
                return Translated(None, problems)
            continue
        if tcp and HEADER_KEY.match(key):
            if unsupported(f"when[{j}]", f"{key} is HTTP-only and this port is TCP"):
                return Translated(None, problems)
            continue
        (when_principals if is_principal else when_permissions).append(r)

    principals = []
    for j, f in enumerate(rule.get("from") or [{}]):
        try:
            ids = [p for _, p in _source_ids(f.get("source") or {}, trust_domain)]
        except (Unsupported, ValueError) as e:
            if unsupported(f"from[{j}].source", str(e)):
                return Translated(None, problems)
            ids = []
        principals.append(_and(ids + when_principals, True))

    permissions = []
    for j, t in enumerate(rule.get("to") or [{}]):
        op = t.get("operation") or {}
        rules = []
        try:
            parts = _operation_rules(op)
        except (Unsupported, ValueError) as e:
            if unsupported(f"to[{j}].operation", str(e)):
                return Translated(None, problems)
            parts = []
        for field, r in parts:
            if tcp and field in HTTP_ONLY_OPERATION:
                if unsupported(f"to[{j}].operation.{field}", "HTTP-only and this port is TCP"):
                    return Translated(None, problems)
                continue
            rules.append(r)
        permissions.append(_and(rules + when_permissions, False))
    return Translated({"permissions": permissions, "principals": principals}, problems)


# ------------------------------------------------------------------------------------- per workload


def policy_name(ap: Config, i: int) -> str:
    return f"ns[{ap.namespace}]-policy[{ap.name}]-rule[{i}]"


def _selector(ap: Config) -> dict[str, str] | None:
    return (ap.spec.get("selector") or {}).get("matchLabels") or None


def _uses_target_ref(ap: Config) -> bool:
    return bool(ap.spec.get("targetRef") or ap.spec.get("targetRefs"))


def policies_for(idx: Index, namespace: str, labels: dict[str, str]) -> list[Config]:
    """The AuthorizationPolicies that select a workload (root namespace first, then its own)."""
    out = []
    for ns in dict.fromkeys((idx.root_namespace, namespace)):
        for ap in idx.authorization_policies.get(ns, []):
            if _uses_target_ref(ap):
                continue  # targetRef is for gateways/waypoints (reported)
            sel = _selector(ap)
            if sel is None:
                if ns == idx.root_namespace or ns == namespace:
                    out.append(ap)
            elif ns == namespace and labels_match(sel, labels):
                out.append(ap)
    return out


def _action(ap: Config) -> str:
    return str(ap.spec.get("action") or "ALLOW").upper()


def rbac_configs(idx: Index, namespace: str, labels: dict[str, str], *, tcp: bool) -> list[tuple[str, dict]]:
    """(action, ``envoy.config.rbac.v3.RBAC`` dict) per action present, in evaluation order."""
    key = ("rbac", namespace, tuple(sorted(labels.items())), tcp)
    cached = idx.cache.get(key)
    if cached is not None:
        return cached
    selected = policies_for(idx, namespace, labels)
    out = []
    for action in ACTIONS_IN_ORDER:
        aps = [ap for ap in selected if _action(ap) == action]
        if not aps:
            continue
        policies: dict[str, Any] = {}
        for ap in aps:
            for i, rule in enumerate(ap.spec.get("rules") or []):
                t = translate_rule(rule, action, tcp=tcp, trust_domain=idx.trust_domain)
                if t.policy is not None:
                    policies[policy_name(ap, i)] = t.policy
        out.append((action, {"action": RBAC_ACTION[action], "policies": policies}))
    idx.cache[key] = out
    return out


def http_rbac_filters(idx: Index, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"name": HTTP_RBAC_FILTER, "typed_config": typed(HTTP_RBAC, {"rules": rules})}
        for _, rules in rbac_configs(idx, namespace, labels, tcp=False)
    ]


def network_rbac_filters(idx: Index, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "name": NETWORK_RBAC_FILTER,
            "typed_config": typed(NETWORK_RBAC, {"stat_prefix": "tcp.", "rules": rules}),
        }
        for _, rules in rbac_configs(idx, namespace, labels, tcp=True)
    ]


def authz_warnings(ap: Config, idx: Index) -> list[str]:
    """What of this AuthorizationPolicy is not (fully) enforced."""
    where = f"AuthorizationPolicy/{ap.namespace}/{ap.name}"
    action = _action(ap)
    out = []
    if action == "CUSTOM":
        return out  # ext_authz to the mesh provider: reported by mixer.mixer_warnings
    if _uses_target_ref(ap):
        out.append(
            f"{where}: spec.targetRef(s): not supported (sidecars are selected by spec.selector); ignored"
        )
    for i, rule in enumerate(ap.spec.get("rules") or []):
        for tcp in (False, True):
            t = translate_rule(rule, action, tcp=tcp, trust_domain=idx.trust_domain)
            for p in t.problems:
                if tcp and "HTTP-only" not in p:
                    continue  # already reported for HTTP
                out.append(f"{where}: spec.rules[{i}].{p}" + (" (on TCP ports)" if tcp else ""))
    return out
