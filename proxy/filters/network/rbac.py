"""``envoy.filters.network.rbac``: connection-level role-based access control (Envoy's network RBAC).

A non-terminal network filter (see ``proxy.filters.network.read_filters``): it decides once per
connection, from what the connection knows (destination ip/port, SNI, source addresses, the peer's
SPIFFE ID after the TLS handshake), and closes a denied connection at once. The engine is the HTTP
filter's (``proxy.filters.http.rbac.engine``); header and url_path rules never match here.

Stats (Envoy's names, ``stat_prefix`` joined with ``rbac.`` as Envoy's statPrefixJoin does, so
Istio's ``tcp.`` gives ``tcp.rbac.allowed``): ``allowed``, ``denied``, ``shadow_allowed``,
``shadow_denied`` (the latter two under ``shadow_rules_stat_prefix``).

Not implemented, rejected by path: ``matcher`` / ``shadow_matcher``, ``enforcement_type: CONTINUOUS``
(only ONE_TIME_ON_FIRST_BYTE), ``delay_deny``.
"""

from __future__ import annotations

import logging

from envoy.extensions.filters.network.rbac.v3 import rbac_pb2

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import NETWORK_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.filters.http.rbac.engine import LOG, CheckContext, RbacEngine, peer_identity

FILTER_NAME = "envoy.filters.network.rbac"
log = logging.getLogger("proxy.rbac")

NETWORK_RBAC_SPEC = {
    "stat_prefix": True,
    "rules": True,  # checked by RbacEngine
    "shadow_rules": True,
    "shadow_rules_stat_prefix": True,
    "enforcement_type": True,  # ONE_TIME_ON_FIRST_BYTE only (checked below)
}


def stat_prefix_join(prefix: str, name: str) -> str:
    return f"{prefix}{name}" if not prefix or prefix.endswith(".") else f"{prefix}.{name}"


def connection_context(conn) -> CheckContext:
    remote = (getattr(conn, "remote_address", None) or ("", 0))[0]
    local = getattr(conn, "original_dst", None) or getattr(conn, "local_address", None) or ("", 0)
    return CheckContext(
        direct_remote_ip=remote,
        remote_ip=remote,
        local_ip=local[0],
        local_port=local[1],
        requested_server_name=getattr(conn, "requested_server_name", "") or "",
        peer=peer_identity(conn),
        headers=None,
    )


class NetworkRbacFactory:
    """Compiled once per config; ``check(conn)`` is the listener's allow/deny hook."""

    terminal = False

    def __init__(self, msg: rbac_pb2.RBAC, ctx: FactoryContext, path: str) -> None:
        reject_unsupported(msg, NETWORK_RBAC_SPEC, path)
        if not msg.stat_prefix:
            raise ConfigError(f"{path}.stat_prefix", "stat_prefix is required")
        if msg.enforcement_type != rbac_pb2.RBAC.ONE_TIME_ON_FIRST_BYTE:
            raise ConfigError(
                f"{path}.enforcement_type",
                "only ONE_TIME_ON_FIRST_BYTE enforcement is supported by Isthmus yet",
            )
        self.engine = RbacEngine(msg.rules, f"{path}.rules") if msg.HasField("rules") else None
        self.shadow = (
            RbacEngine(msg.shadow_rules, f"{path}.shadow_rules") if msg.HasField("shadow_rules") else None
        )
        scope = ctx.stats.scope(stat_prefix_join(msg.stat_prefix, "rbac."))
        self.allowed = scope.counter("allowed")
        self.denied = scope.counter("denied")
        self.logged = scope.counter("logged")
        self.not_logged = scope.counter("not_logged")
        shadow = msg.shadow_rules_stat_prefix
        self.shadow_allowed = scope.counter(f"{shadow}shadow_allowed")
        self.shadow_denied = scope.counter(f"{shadow}shadow_denied")

    def check(self, conn) -> bool:
        if self.engine is None and self.shadow is None:
            return True
        ctx = connection_context(conn)
        if self.shadow is not None:
            (self.shadow_allowed if self.shadow.evaluate(ctx).allowed else self.shadow_denied).inc()
        engine = self.engine
        if engine is None:
            return True
        decision = engine.evaluate(ctx)
        if engine.action == LOG:
            (self.logged if decision.policy is not None else self.not_logged).inc()
            return True
        if decision.allowed:
            self.allowed.inc()
            return True
        self.denied.inc()
        log.debug(
            "rbac: connection from %s:%s denied (policy %s)",
            *(getattr(conn, "remote_address", None) or ("", 0)),
            decision.policy or "none",
        )
        return False


@NETWORK_FILTERS.register(FILTER_NAME, rbac_pb2.RBAC)
def make_network_rbac(msg: rbac_pb2.RBAC, ctx: FactoryContext, path: str) -> NetworkRbacFactory:
    return NetworkRbacFactory(msg, ctx, path)
