"""Envoy's RBAC engine (``envoy.config.rbac.v3.RBAC``), shared by the HTTP and the network RBAC filters.

Compiled once per config into predicates over a ``CheckContext`` (what is known about the connection
and, for HTTP, the request). ``RbacEngine.evaluate`` follows Envoy's ``RoleBasedAccessControlEngineImpl``:

* ALLOW: allowed when some policy matches; the first matching policy (by name) is reported.
* DENY: denied when some policy matches.
* LOG: always allowed; a matching policy only marks the request for logging.

A policy matches when one of its permissions and one of its principals match. Policies are tried in
name order (Envoy keeps them in a sorted map), so the reported policy is deterministic.

Peer identity: ``peer_identity(conn)`` reads the downstream TLS facts the TLS transport puts on the
connection as ``conn.ssl`` (``None`` for plaintext; otherwise the ``proxy.tls.transport.TlsTransport``
whose ``info`` is a ``TlsConnectionInfo``, or such an info object itself: ``peer_uri_sans`` and
optionally ``peer_sans.dns`` and ``peer_subject``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from envoy.config.rbac.v3 import rbac_pb2

from proxy.config.errors import ConfigError
from proxy.core.headers import Headers
from proxy.router.matchers import HeaderMatcher, compile_string_matcher

ALLOW = rbac_pb2.RBAC.ALLOW
DENY = rbac_pb2.RBAC.DENY
LOG = rbac_pb2.RBAC.LOG
ACTION_NAMES = {ALLOW: "ALLOW", DENY: "DENY", LOG: "LOG"}


@dataclass(frozen=True)
class PeerIdentity:
    """The downstream peer's certificate facts that principals match (``authenticated``)."""

    uri_sans: tuple[str, ...] = ()
    dns_sans: tuple[str, ...] = ()
    subject: str = ""


def peer_identity(conn) -> PeerIdentity | None:
    """The peer identity of a downstream connection, or None on plaintext (no ``conn.ssl``)."""
    ssl = getattr(conn, "ssl", None)
    if ssl is None:
        return None
    # The listener sets conn.ssl to the TlsTransport, whose ``info`` holds the handshake's facts.
    if hasattr(ssl, "info") and not hasattr(ssl, "peer_uri_sans"):
        ssl = ssl.info
        if ssl is None:  # handshake not finished: nothing is authenticated yet
            return None
    uris = getattr(ssl, "peer_uri_sans", None) or ()
    sans = getattr(ssl, "peer_sans", None)
    dns = getattr(sans, "dns", None) or ()
    subject = getattr(ssl, "peer_subject", "") or ""
    return PeerIdentity(tuple(uris), tuple(dns), subject if isinstance(subject, str) else "")


@dataclass
class CheckContext:
    """What a permission or principal can look at. ``headers`` is None for the network filter."""

    direct_remote_ip: str = ""
    remote_ip: str = ""  # the downstream client address (x-forwarded-for derived when trusted)
    local_ip: str = ""  # the destination (original destination when redirected)
    local_port: int = 0
    requested_server_name: str = ""
    peer: PeerIdentity | None = None
    headers: Headers | None = None
    _ip_cache: dict = field(default_factory=dict)

    def ip(self, text: str):
        v = self._ip_cache.get(text)
        if v is None and text not in self._ip_cache:
            try:
                v = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                v = None
            self._ip_cache[text] = v
        return v


Predicate = Callable[[CheckContext], bool]


def _any_of(preds: list[Predicate]) -> Predicate:
    return lambda c: any(p(c) for p in preds)


def _all_of(preds: list[Predicate]) -> Predicate:
    return lambda c: all(p(c) for p in preds)


def compile_cidr(msg, path: str):
    prefix_len = msg.prefix_len.value if msg.HasField("prefix_len") else 0
    try:
        return ipaddress.ip_network(f"{msg.address_prefix}/{prefix_len}", strict=False)
    except ValueError as e:
        raise ConfigError(path, f"invalid CIDR range '{msg.address_prefix}/{prefix_len}': {e}") from None


def _ip_in(net, which: str) -> Predicate:
    def pred(c: CheckContext) -> bool:
        ip = c.ip(getattr(c, which))
        return ip is not None and ip.version == net.version and ip in net

    return pred


def _header(msg, path: str) -> Predicate:
    hm = HeaderMatcher(msg, path)

    def pred(c: CheckContext) -> bool:
        # The network filter has no headers: a header rule never matches there (as Envoy).
        return c.headers is not None and hm.matches(c.headers)

    return pred


def _url_path(msg, path: str) -> Predicate:
    """PathMatcher: the ``:path`` without query and fragment, matched by a StringMatcher."""
    if msg.WhichOneof("rule") != "path":
        raise ConfigError(f"{path}.path", "a PathMatcher needs 'path' (a StringMatcher)")
    match = compile_string_matcher(msg.path, f"{path}.path")

    def pred(c: CheckContext) -> bool:
        if c.headers is None:
            return False
        target = c.headers.get(":path")
        if target is None:
            return False
        for sep in ("?", "#"):
            i = target.find(sep)
            if i >= 0:
                target = target[:i]
        return match(target)

    return pred


def _unsupported(kind: str, name: str, path: str, why: str = "") -> ConfigError:
    return ConfigError(
        f"{path}.{name}", why or f"{kind} rule '{name}' is not supported by Isthmus yet (RBAC)"
    )


def compile_permission(msg: rbac_pb2.Permission, path: str) -> Predicate:
    kind = msg.WhichOneof("rule")
    if kind is None:
        raise ConfigError(path, "a Permission needs one rule (any, header, url_path, destination_ip, ...)")
    here = f"{path}.{kind}"
    if kind == "any":
        if not msg.any:
            raise ConfigError(here, "any must be true")
        return lambda c: True
    if kind in ("and_rules", "or_rules"):
        rules = getattr(msg, kind).rules
        if not rules:
            raise ConfigError(f"{here}.rules", f"{kind} needs at least one rule")
        preds = [compile_permission(r, f"{here}.rules[{i}]") for i, r in enumerate(rules)]
        return _all_of(preds) if kind == "and_rules" else _any_of(preds)
    if kind == "not_rule":
        inner = compile_permission(msg.not_rule, here)
        return lambda c: not inner(c)
    if kind == "header":
        return _header(msg.header, here)
    if kind == "url_path":
        return _url_path(msg.url_path, here)
    if kind == "destination_ip":
        return _ip_in(compile_cidr(msg.destination_ip, here), "local_ip")
    if kind == "destination_port":
        port = msg.destination_port
        if port > 65535:
            raise ConfigError(here, f"destination_port {port} is out of range")
        return lambda c: c.local_port == port
    if kind == "destination_port_range":
        lo, hi = msg.destination_port_range.start, msg.destination_port_range.end
        if lo >= hi:
            raise ConfigError(here, "destination_port_range needs start < end (end is exclusive)")
        return lambda c: lo <= c.local_port < hi
    if kind == "requested_server_name":
        match = compile_string_matcher(msg.requested_server_name, here)
        return lambda c: match(c.requested_server_name)
    if kind == "metadata":
        raise _unsupported(
            "permission",
            kind,
            path,
            "metadata permissions are not supported by Isthmus yet (no dynamic metadata to match; "
            "express the rule with header, url_path, destination_ip/port or requested_server_name)",
        )
    raise _unsupported("permission", kind, path)


def compile_principal(msg: rbac_pb2.Principal, path: str) -> Predicate:
    kind = msg.WhichOneof("identifier")
    if kind is None:
        raise ConfigError(path, "a Principal needs one identifier (any, authenticated, remote_ip, ...)")
    here = f"{path}.{kind}"
    if kind == "any":
        if not msg.any:
            raise ConfigError(here, "any must be true")
        return lambda c: True
    if kind in ("and_ids", "or_ids"):
        ids = getattr(msg, kind).ids
        if not ids:
            raise ConfigError(f"{here}.ids", f"{kind} needs at least one id")
        preds = [compile_principal(p, f"{here}.ids[{i}]") for i, p in enumerate(ids)]
        return _all_of(preds) if kind == "and_ids" else _any_of(preds)
    if kind == "not_id":
        inner = compile_principal(msg.not_id, here)
        return lambda c: not inner(c)
    if kind == "authenticated":
        return _authenticated(msg.authenticated, here)
    if kind in ("direct_remote_ip", "source_ip"):
        return _ip_in(compile_cidr(getattr(msg, kind), here), "direct_remote_ip")
    if kind == "remote_ip":
        return _ip_in(compile_cidr(msg.remote_ip, here), "remote_ip")
    if kind == "header":
        return _header(msg.header, here)
    if kind == "url_path":
        return _url_path(msg.url_path, here)
    raise _unsupported("principal", kind, path)


def _authenticated(msg, path: str) -> Predicate:
    """Envoy's AuthenticatedMatcher: TLS required; principal_name against URI SANs, DNS SANs, subject."""
    if not msg.HasField("principal_name"):
        return lambda c: c.peer is not None
    match = compile_string_matcher(msg.principal_name, f"{path}.principal_name")

    def pred(c: CheckContext) -> bool:
        peer = c.peer
        if peer is None:
            return False
        if peer.uri_sans:
            return any(match(u) for u in peer.uri_sans)
        if peer.dns_sans:
            return any(match(d) for d in peer.dns_sans)
        return match(peer.subject)

    return pred


POLICY_SPEC_FIELDS = ("permissions", "principals")


@dataclass(frozen=True)
class Policy:
    name: str
    permission: Predicate
    principal: Predicate

    def matches(self, c: CheckContext) -> bool:
        return self.permission(c) and self.principal(c)


def compile_policy(name: str, msg: rbac_pb2.Policy, path: str) -> Policy:
    for f, _ in msg.ListFields():
        if f.name not in POLICY_SPEC_FIELDS:
            raise ConfigError(
                f"{path}.{f.name}",
                f"field '{f.name}' of Policy is not supported by Isthmus yet (CEL conditions are not "
                "implemented)",
            )
    if not msg.permissions:
        raise ConfigError(f"{path}.permissions", "a policy needs at least one permission")
    if not msg.principals:
        raise ConfigError(f"{path}.principals", "a policy needs at least one principal")
    perms = [compile_permission(p, f"{path}.permissions[{i}]") for i, p in enumerate(msg.permissions)]
    princs = [compile_principal(p, f"{path}.principals[{i}]") for i, p in enumerate(msg.principals)]
    return Policy(name, _any_of(perms), _any_of(princs))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    policy: str | None  # the first matching policy's name, or None when none matched


class RbacEngine:
    """A compiled ``envoy.config.rbac.v3.RBAC``: ``evaluate(ctx)`` -> Decision."""

    __slots__ = ("action", "policies")

    def __init__(self, msg: rbac_pb2.RBAC, path: str) -> None:
        for f, _ in msg.ListFields():
            if f.name not in ("action", "policies"):
                raise ConfigError(
                    f"{path}.{f.name}", f"field '{f.name}' of RBAC is not supported by Isthmus yet"
                )
        if msg.action not in ACTION_NAMES:
            raise ConfigError(f"{path}.action", f"unknown RBAC action {msg.action}")
        self.action = msg.action
        self.policies = tuple(
            compile_policy(name, msg.policies[name], f"{path}.policies[{name}]")
            for name in sorted(msg.policies)
        )

    def matching_policy(self, c: CheckContext) -> str | None:
        for p in self.policies:
            if p.matches(c):
                return p.name
        return None

    def evaluate(self, c: CheckContext) -> Decision:
        name = self.matching_policy(c)
        if self.action == ALLOW:
            return Decision(name is not None, name)
        if self.action == DENY:
            return Decision(name is None, name)
        return Decision(True, name)  # LOG
