"""Cross-resource (semantic) checks, run on the snapshot a change would produce.

Decisions (documented in pilot/config/__init__.py as well):

- a destination subset that no DestinationRule for that host defines: **error** (istioctl IST0101);
- route weights that do not sum to 100: **error** (a single destination without a weight is 100);
- an invalid or non-RE2 regex: **error** (structural check, see ``regex.py``);
- a destination host neither a ServiceEntry nor the service registry knows: **warning**. Config is often
  applied before the workloads register through their proxies, so refusing it would break the usual
  order; the route sends 503s until the host appears, as in Istio;
- a Gateway a VirtualService binds to that does not exist: **warning** (it may be applied next);
- two VirtualServices for the same host on the same gateway (or both on the mesh): **error**. istioctl
  analyze reports IST0109 as an error; Istio's behaviour then depends on creation order or merging, and
  Isthmus refuses ambiguous routing instead;
- a change that removes a subset still used by another VirtualService: **warning** on the change;
- two DestinationRules for one host in one namespace: **warning** (Istio merges them; Isthmus builders
  use the first by name);
- EnvoyFilter and RequestAuthentication: accepted with a **warning** that a later issue translates them.
  PeerAuthentication and AuthorizationPolicy are translated (pilot/networking ``mtls``, ``authz``);
  what of them is not enforced is a **warning** (CUSTOM, ``requestPrincipals``, ``request.auth.*``,
  ``targetRef``, ``portLevelMtls`` without a selector); an unknown ``when`` key or a bad IP block or
  port is an **error** (Istio rejects them too).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pilot.config import problems as P
from pilot.config.kinds import KINDS
from pilot.model.config import Config, ConfigKey, ConfigSnapshot

MESH = "mesh"
# kinds.py still marks these "translated later"; issue 6 translates them (pilot/networking mtls, authz).
TRANSLATED_SECURITY_KINDS = frozenset({"PeerAuthentication", "AuthorizationPolicy"})
# Istio's AuthorizationPolicy condition keys (request.headers[...] separately).
WHEN_SUPPORTED = frozenset(
    {
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)
WHEN_NOT_YET = (
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims[",
)


@dataclass
class Context:
    domain: str = "cluster.local"
    # Hosts the service registry knows (FQDNs); None: only ServiceEntries count.
    known_hosts: frozenset[str] | None = None
    lines: dict[tuple[str, str], int] = field(default_factory=dict)


def fqdn(host: str, namespace: str, domain: str) -> str:
    """Istio's short-name rule: a name without a dot is `<name>.<namespace>.svc.<domain>`."""
    if host == "*" or "." in host or host.startswith("*"):
        return host
    return f"{host}.{namespace}.svc.{domain}"


def host_matches(pattern: str, host: str) -> bool:
    if pattern == host or pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return False


def vs_gateways(vs: Config) -> list[str]:
    """The gateways a VirtualService binds to, as namespace/name, or "mesh"."""
    gws = vs.spec.get("gateways") or [MESH]
    return [g if g == MESH or "/" in g else f"{vs.namespace}/{g}" for g in gws]


def destinations(vs: Config):
    """(path, destination dict, weight-bearing route list path) for every destination in a VirtualService."""
    for proto in ("http", "tcp", "tls"):
        for i, route in enumerate(vs.spec.get(proto) or []):
            for j, rd in enumerate(route.get("route") or []):
                yield f"spec.{proto}[{i}].route[{j}].destination", rd.get("destination") or {}
            if proto == "http" and route.get("mirror"):
                yield f"spec.http[{i}].mirror", route["mirror"]


def _subsets(snapshot: ConfigSnapshot, host: str, domain: str) -> tuple[bool, set[str]]:
    """(whether any DestinationRule covers `host`, the union of subsets they define)."""
    found, names = False, set()
    for dr in snapshot.list("DestinationRule"):
        if host_matches(fqdn(dr.spec.get("host", ""), dr.namespace, domain), host):
            found = True
            names |= {s.get("name") for s in dr.spec.get("subsets") or []}
    return found, names


def _service_entry_hosts(snapshot: ConfigSnapshot, domain: str) -> list[str]:
    return [
        fqdn(h, se.namespace, domain)
        for se in snapshot.list("ServiceEntry")
        for h in se.spec.get("hosts") or []
    ]


class _Out:
    def __init__(self, ctx: Context) -> None:
        self.ctx, self.items = ctx, []

    def add(self, level: str, code: str, c: Config, path: str, msg: str) -> None:
        resource = str(c.key)
        line = self.ctx.lines.get((resource, path))
        probe = path
        while line is None and probe:
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
            line = self.ctx.lines.get((resource, probe))
        self.items.append(P.Problem(level, code, msg, file=c.source, resource=resource, path=path, line=line))


def check(
    snapshot: ConfigSnapshot, changed: Iterable[ConfigKey], ctx: Context | None = None
) -> list[P.Problem]:
    """Problems of the resources in `changed` (present in `snapshot`), plus warnings about other
    resources the change affects (e.g. a subset it removes that another VirtualService uses)."""
    ctx = ctx or Context()
    out = _Out(ctx)
    changed = set(changed)
    se_hosts = _service_entry_hosts(snapshot, ctx.domain)
    for key in sorted(changed):
        c = snapshot.get(key.kind, key.namespace, key.name)
        if c is None:
            continue
        kind = KINDS[c.kind]
        if not kind.translated and c.kind not in TRANSLATED_SECURITY_KINDS:
            out.add(
                P.WARNING, P.NOT_TRANSLATED, c, "", f"accepted and validated, not applied yet: {kind.later}"
            )
        if c.kind == "VirtualService":
            _check_vs(c, snapshot, se_hosts, out)
        elif c.kind == "DestinationRule":
            _check_dr(c, snapshot, out)
        elif c.kind == "ServiceEntry":
            _check_se(c, out)
        elif c.kind == "Sidecar":
            _check_sidecar(c, snapshot, out)
        elif c.kind == "AuthorizationPolicy":
            _check_authz(c, out)
        elif c.kind == "PeerAuthentication":
            _check_peer_authn(c, out)
    # Other VirtualServices whose subsets this change removed.
    if any(k.kind == "DestinationRule" for k in changed):
        for vs in snapshot.list("VirtualService"):
            if vs.key in changed:
                continue
            for path, dest in destinations(vs):
                subset = dest.get("subset")
                host = fqdn(dest.get("host", ""), vs.namespace, ctx.domain)
                if subset and subset not in _subsets(snapshot, host, ctx.domain)[1]:
                    out.add(
                        P.WARNING,
                        P.SUBSET_NOT_FOUND,
                        vs,
                        path + ".subset",
                        f"subset {subset!r} of {host} is no longer defined by any DestinationRule after this "
                        "change; requests to it fail with 503 until it is",
                    )
    return out.items


def _check_weights(c: Config, out: _Out) -> None:
    for proto in ("http", "tcp", "tls"):
        for i, route in enumerate(c.spec.get(proto) or []):
            dests = route.get("route") or []
            weights = [d.get("weight") for d in dests]
            if len(dests) <= 1 and all(w is None for w in weights):
                continue
            total = sum(w or 0 for w in weights)
            if total != 100:
                out.add(
                    P.ERROR,
                    P.WEIGHTS,
                    c,
                    f"spec.{proto}[{i}].route",
                    f"destination weights sum to {total}, they must sum to 100",
                )


def _check_vs(vs: Config, snapshot: ConfigSnapshot, se_hosts: list[str], out: _Out) -> None:
    ctx = out.ctx
    _check_weights(vs, out)
    for path, dest in destinations(vs):
        host = fqdn(dest.get("host", ""), vs.namespace, ctx.domain)
        subset = dest.get("subset")
        if subset:
            covered, names = _subsets(snapshot, host, ctx.domain)
            if subset not in names:
                why = (
                    f"the DestinationRule(s) for {host} define {', '.join(sorted(n for n in names if n)) or 'no subsets'}"
                    if covered
                    else f"no DestinationRule for {host} exists"
                )
                out.add(
                    P.ERROR,
                    P.SUBSET_NOT_FOUND,
                    vs,
                    path + ".subset",
                    f"subset {subset!r} is not defined: {why}",
                )
        known = any(host_matches(h, host) for h in se_hosts) or (
            ctx.known_hosts is not None and host in ctx.known_hosts
        )
        if not known:
            out.add(
                P.WARNING,
                P.UNKNOWN_HOST,
                vs,
                path + ".host",
                f"host {host} is not known to the service registry or any ServiceEntry (yet); "
                "requests routed to it fail with 503 until it is",
            )
    gateways = vs_gateways(vs)
    for i, gw in enumerate(gateways):
        if gw == MESH:
            continue
        ns, _, name = gw.partition("/")
        if snapshot.get("Gateway", ns, name) is None:
            path = f"spec.gateways[{i}]" if vs.spec.get("gateways") else "spec.gateways"
            out.add(P.WARNING, P.SUBSET_NOT_FOUND, vs, path, f"gateway {gw} does not exist (yet)")
    mine = {(g, fqdn(h, vs.namespace, ctx.domain)) for g in gateways for h in vs.spec.get("hosts") or []}
    for other in snapshot.list("VirtualService"):
        if other.key == vs.key:
            continue
        theirs = {
            (g, fqdn(h, other.namespace, ctx.domain))
            for g in vs_gateways(other)
            for h in other.spec.get("hosts") or []
        }
        for gw, host in sorted(mine & theirs):
            idx = next(
                (
                    i
                    for i, h in enumerate(vs.spec.get("hosts") or [])
                    if fqdn(h, vs.namespace, ctx.domain) == host
                ),
                0,
            )
            out.add(
                P.ERROR,
                P.CONFLICTING_HOSTS,
                vs,
                f"spec.hosts[{idx}]",
                f"host {host} on gateway {gw} is already routed by VirtualService/{other.namespace}/{other.name}; "
                "put the routes in one VirtualService (or delete the other first)",
            )


def _check_dr(dr: Config, snapshot: ConfigSnapshot, out: _Out) -> None:
    seen: set[str] = set()
    for i, s in enumerate(dr.spec.get("subsets") or []):
        name = s.get("name")
        if name in seen:
            out.add(P.ERROR, P.DUPLICATE, dr, f"spec.subsets[{i}].name", f"subset {name!r} is defined twice")
        seen.add(name)
    host = fqdn(dr.spec.get("host", ""), dr.namespace, out.ctx.domain)
    for other in snapshot.list("DestinationRule", dr.namespace):
        if other.key != dr.key and fqdn(other.spec.get("host", ""), other.namespace, out.ctx.domain) == host:
            out.add(
                P.WARNING,
                P.DUPLICATE,
                dr,
                "spec.host",
                f"DestinationRule/{other.namespace}/{other.name} is also for {host}; "
                "Isthmus uses the first by name for its traffic policy",
            )


def _check_se(se: Config, out: _Out) -> None:
    spec = se.spec
    resolution = spec.get("resolution", "NONE")
    port_names = {p.get("name") for p in spec.get("ports") or []}
    numbers: set[int] = set()
    for i, p in enumerate(spec.get("ports") or []):
        if p.get("number") in numbers:
            out.add(
                P.ERROR, P.DUPLICATE, se, f"spec.ports[{i}].number", f"port {p.get('number')} is listed twice"
            )
        numbers.add(p.get("number"))
    if resolution in ("DNS", "DNS_ROUND_ROBIN"):
        for i, h in enumerate(spec.get("hosts") or []):
            if h.startswith("*") and not spec.get("endpoints"):
                out.add(
                    P.ERROR,
                    P.SCHEMA,
                    se,
                    f"spec.hosts[{i}]",
                    f"wildcard host {h} cannot be resolved with {resolution}",
                )
    for i, ep in enumerate(spec.get("endpoints") or []):
        addr = ep.get("address", "")
        if resolution == "STATIC" and addr and not _is_ip(addr) and not addr.startswith("unix://"):
            out.add(
                P.ERROR,
                P.SCHEMA,
                se,
                f"spec.endpoints[{i}].address",
                f"{addr!r} must be an IP with resolution STATIC",
            )
        for name in ep.get("ports") or {}:
            if name not in port_names:
                out.add(
                    P.ERROR,
                    P.SCHEMA,
                    se,
                    f"spec.endpoints[{i}].ports[{name!r}]",
                    f"port name {name!r} is not one of the ServiceEntry's ports ({', '.join(sorted(map(str, port_names)))})",
                )
    if resolution == "NONE" and spec.get("endpoints"):
        out.add(P.ERROR, P.SCHEMA, se, "spec.endpoints", "endpoints need resolution STATIC or DNS, not NONE")


def _check_sidecar(sc: Config, snapshot: ConfigSnapshot, out: _Out) -> None:
    if sc.spec.get("workloadSelector"):
        return
    for other in snapshot.list("Sidecar", sc.namespace):
        if other.key != sc.key and not other.spec.get("workloadSelector"):
            out.add(
                P.ERROR,
                P.DUPLICATE,
                sc,
                "spec.workloadSelector",
                f"Sidecar/{other.namespace}/{other.name} already applies to every workload in {sc.namespace} "
                "(only one Sidecar without workloadSelector per namespace)",
            )


def _check_cidrs(c: Config, path: str, values, out: _Out) -> None:
    import ipaddress

    for k, v in enumerate(values or []):
        try:
            ipaddress.ip_network(str(v), strict=False)
        except ValueError:
            out.add(P.ERROR, P.SCHEMA, c, f"{path}[{k}]", f"{v!r} is not an IP address or CIDR block")


def _check_ports(c: Config, path: str, values, out: _Out) -> None:
    for k, v in enumerate(values or []):
        if not str(v).isdigit() or not 0 < int(str(v)) < 65536:
            out.add(P.ERROR, P.SCHEMA, c, f"{path}[{k}]", f"{v!r} is not a port 1-65535")


def _check_authz(ap: Config, out: _Out) -> None:
    spec = ap.spec
    action = str(spec.get("action") or "ALLOW")
    if action == "CUSTOM":
        if not spec.get("provider"):
            out.add(P.ERROR, P.SCHEMA, ap, "spec.provider", "action CUSTOM needs a provider")
        out.add(
            P.WARNING, P.NOT_TRANSLATED, ap, "spec.action",
            "action CUSTOM becomes ext_authz to the mesh extension provider named in spec.provider.name "
            "(an envoyExtAuthzGrpc provider of the mesh config), on HTTP ports only; rules scope the check on "
            "sidecars when they use only to.operation.paths/methods, otherwise (and on gateways) every "
            "request is checked; without such a provider the policy is not enforced",
        )  # fmt: skip
    elif spec.get("provider"):
        out.add(
            P.ERROR,
            P.SCHEMA,
            ap,
            "spec.provider",
            f"provider is only allowed with action CUSTOM, not {action}",
        )
    for f in ("targetRef", "targetRefs"):
        if spec.get(f):
            out.add(
                P.WARNING,
                P.UNSUPPORTED,
                ap,
                f"spec.{f}",
                "not supported for sidecars (use selector); ignored",
            )
    for i, rule in enumerate(spec.get("rules") or []):
        base = f"spec.rules[{i}]"
        for j, fr in enumerate(rule.get("from") or []):
            src = fr.get("source") or {}
            spath = f"{base}.from[{j}].source"
            for f in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"):
                _check_cidrs(ap, f"{spath}.{f}", src.get(f), out)
            for f in ("requestPrincipals", "notRequestPrincipals"):
                if src.get(f):
                    out.add(
                        P.WARNING, P.UNSUPPORTED, ap, f"{spath}.{f}",
                        "needs RequestAuthentication (JWT), not enforced yet: an ALLOW rule using it allows "
                        "nothing, a DENY rule ignores it",
                    )  # fmt: skip
        for j, to in enumerate(rule.get("to") or []):
            op = to.get("operation") or {}
            for f in ("ports", "notPorts"):
                _check_ports(ap, f"{base}.to[{j}].operation.{f}", op.get(f), out)
        for j, cond in enumerate(rule.get("when") or []):
            key = str(cond.get("key") or "")
            cpath = f"{base}.when[{j}]"
            if not cond.get("values") and not cond.get("notValues"):
                out.add(P.ERROR, P.SCHEMA, ap, cpath, "a condition needs values or notValues")
            if (
                key.startswith("request.headers[")
                and key.endswith("]")
                and len(key) > len("request.headers[]")
            ):
                continue
            if key in WHEN_SUPPORTED:
                if key in ("source.ip", "remote.ip", "destination.ip"):
                    _check_cidrs(ap, f"{cpath}.values", cond.get("values"), out)
                    _check_cidrs(ap, f"{cpath}.notValues", cond.get("notValues"), out)
                if key == "destination.port":
                    _check_ports(ap, f"{cpath}.values", cond.get("values"), out)
                    _check_ports(ap, f"{cpath}.notValues", cond.get("notValues"), out)
                continue
            if key.startswith(WHEN_NOT_YET):
                out.add(
                    P.WARNING, P.UNSUPPORTED, ap, f"{cpath}.key",
                    f"{key} needs RequestAuthentication (JWT), not enforced yet: an ALLOW rule using it allows "
                    "nothing, a DENY rule ignores it",
                )  # fmt: skip
                continue
            out.add(P.ERROR, P.SCHEMA, ap, f"{cpath}.key", f"unknown condition key {key!r}")


def _check_peer_authn(pa: Config, out: _Out) -> None:
    if pa.spec.get("portLevelMtls") and not (pa.spec.get("selector") or {}).get("matchLabels"):
        out.add(
            P.WARNING, P.UNSUPPORTED, pa, "spec.portLevelMtls",
            "portLevelMtls needs a workload selector (as in Istio); ignored",
        )  # fmt: skip


def _is_ip(s: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


__all__ = ["Context", "check", "fqdn", "host_matches", "vs_gateways", "destinations"]
