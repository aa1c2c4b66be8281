"""``envoy.filters.http.rbac``: role-based access control per request (Envoy's HTTP RBAC filter).

``rules`` (an ``envoy.config.rbac.v3.RBAC``) is enforced: a denied request gets 403 with the body
``RBAC: access denied`` and the response code details ``rbac_access_denied_matched_policy[<name>]``
(``[none]`` when an ALLOW policy set matched nothing). Without ``rules`` every request passes.
``shadow_rules`` are evaluated and counted only; the result is also kept in
``stream_info.filter_state["envoy.filters.http.rbac"]`` (``shadow_effective_policy_id``,
``shadow_engine_result``), Envoy's dynamic-metadata keys.

Stats (Envoy's names): ``http.<hcm stat_prefix>.rbac.<rules_stat_prefix>allowed`` / ``denied``
(``logged`` / ``not_logged`` for a LOG action) and
``http.<hcm stat_prefix>.rbac.<shadow_rules_stat_prefix>shadow_allowed`` / ``shadow_denied``.

Paths: RBAC sees the request after the connection manager's path normalization (``normalize_path``,
``merge_slashes``; see ``proxy.core.path``), as in Envoy, so ``/%61dmin`` is matched as ``/admin``.

The per-route override ``RBACPerRoute`` is rejected (not implemented); so are ``matcher`` /
``shadow_matcher`` (the unified matcher API) and ``track_per_rule_stats``.
"""

from __future__ import annotations

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import HTTP_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.filters.http.base import CONTINUE, STOP, FilterStatus, HttpFilter
from proxy.filters.http.rbac.engine import DENY, LOG, CheckContext, RbacEngine, peer_identity
from proxy.router.per_filter import register_per_route

FILTER_NAME = "envoy.filters.http.rbac"
DENIED_BODY = "RBAC: access denied"

RBAC_SPEC = {
    "rules": True,  # checked by RbacEngine
    "rules_stat_prefix": True,
    "shadow_rules": True,
    "shadow_rules_stat_prefix": True,
}


class RbacStats:
    __slots__ = ("allowed", "denied", "logged", "not_logged", "shadow_allowed", "shadow_denied")

    def __init__(self, scope, rules_prefix: str, shadow_prefix: str) -> None:
        c = scope.counter
        self.allowed = c(f"{rules_prefix}allowed")
        self.denied = c(f"{rules_prefix}denied")
        self.logged = c(f"{rules_prefix}logged")
        self.not_logged = c(f"{rules_prefix}not_logged")
        self.shadow_allowed = c(f"{shadow_prefix}shadow_allowed")
        self.shadow_denied = c(f"{shadow_prefix}shadow_denied")


class RbacConfig:
    """The compiled filter config; stats are created per connection manager stat prefix."""

    def __init__(self, msg: rbac_pb2.RBAC, ctx: FactoryContext | None, path: str) -> None:
        reject_unsupported(msg, RBAC_SPEC, path)
        self.ctx = ctx
        self.engine = RbacEngine(msg.rules, f"{path}.rules") if msg.HasField("rules") else None
        self.shadow = (
            RbacEngine(msg.shadow_rules, f"{path}.shadow_rules") if msg.HasField("shadow_rules") else None
        )
        self.rules_prefix = msg.rules_stat_prefix
        self.shadow_prefix = msg.shadow_rules_stat_prefix
        self._stats: dict[str, RbacStats] = {}

    def stats(self, stream) -> RbacStats:
        prefix = getattr(stream.config, "stat_prefix", "") or ""
        s = self._stats.get(prefix)
        if s is None:
            scope = self.ctx.stats.scope(f"http.{prefix}.rbac.")
            s = self._stats[prefix] = RbacStats(scope, self.rules_prefix, self.shadow_prefix)
        return s


def check_context(stream) -> CheckContext:
    """What RBAC matches for one request: addresses, SNI, peer identity and the request headers."""
    conn = stream.connection
    direct = (getattr(conn, "remote_address", None) or ("", 0))[0]
    remote = stream.stream_info.downstream_remote_address
    local = getattr(conn, "original_dst", None) or getattr(conn, "local_address", None) or ("", 0)
    return CheckContext(
        direct_remote_ip=direct,
        remote_ip=remote[0] if remote else direct,
        local_ip=local[0],
        local_port=local[1],
        requested_server_name=getattr(conn, "requested_server_name", "") or "",
        peer=peer_identity(conn),
        headers=stream.request_headers,
    )


class RbacFilter(HttpFilter):
    __slots__ = ("config",)

    def __init__(self, config: RbacConfig) -> None:
        self.config = config

    async def on_request_headers(self, stream, end_stream: bool) -> FilterStatus:
        cfg = self.config
        if cfg.engine is None and cfg.shadow is None:
            return CONTINUE
        stats = cfg.stats(stream)
        ctx = check_context(stream)
        if cfg.shadow is not None:
            shadow = cfg.shadow.evaluate(ctx)
            (stats.shadow_allowed if shadow.allowed else stats.shadow_denied).inc()
            meta = {"shadow_engine_result": "allowed" if shadow.allowed else "denied"}
            if shadow.policy is not None:
                meta["shadow_effective_policy_id"] = shadow.policy
            stream.stream_info.filter_state[FILTER_NAME] = meta
        engine = cfg.engine
        if engine is None:
            return CONTINUE
        decision = engine.evaluate(ctx)
        if engine.action == LOG:
            (stats.logged if decision.policy is not None else stats.not_logged).inc()
            return CONTINUE
        if decision.allowed:
            stats.allowed.inc()
            return CONTINUE
        stats.denied.inc()
        policy = decision.policy if engine.action == DENY else None
        await stream.send_local_reply(
            403, DENIED_BODY, details=f"rbac_access_denied_matched_policy[{policy or 'none'}]"
        )
        return STOP


class RbacFilterFactory:
    __slots__ = ("config",)

    def __init__(self, config: RbacConfig) -> None:
        self.config = config

    def create(self) -> RbacFilter:
        return RbacFilter(self.config)


@HTTP_FILTERS.register(FILTER_NAME, rbac_pb2.RBAC)
def make_rbac(msg: rbac_pb2.RBAC, ctx: FactoryContext, path: str) -> RbacFilterFactory:
    return RbacFilterFactory(RbacConfig(msg, ctx, path))


def _reject_per_route(msg: rbac_pb2.RBACPerRoute, path: str):
    raise ConfigError(
        path,
        "per-route RBAC (RBACPerRoute) is not supported by Isthmus yet; configure RBAC on the "
        "listener's HTTP filter chain",
    )


register_per_route(FILTER_NAME, rbac_pb2.RBACPerRoute, _reject_per_route)
