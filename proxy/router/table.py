"""The compiled RouteConfiguration: virtual host selection by domain and first-match route lookup."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.config.errors import ConfigError
from proxy.config.supported import reject_unsupported
from proxy.core.headers import Headers
from proxy.router import actions as A
from proxy.router.header_mutation import HeaderMutation, request_mutation, response_mutation
from proxy.router.matchers import (
    HeaderMatcher,
    QueryParameterMatcher,
    compile_regex,
    parse_query,
    strip_query,
)
from proxy.router.per_filter import compile_per_filter_config
from proxy.router.rate_limits import RateLimitEntry, compile_rate_limits

# --- what we implement, field by field (everything else is a ConfigError at its path) ----------

ROUTE_MATCH_SPEC = {
    "prefix": True,
    "path": True,
    "safe_regex": True,
    "path_separated_prefix": True,
    "case_sensitive": True,
    "headers": True,
    "query_parameters": True,
}
ROUTE_ACTION_SPEC = {
    "cluster": True,
    "cluster_header": True,
    "weighted_clusters": True,
    "cluster_not_found_response_code": True,
    "prefix_rewrite": True,
    "regex_rewrite": True,
    "host_rewrite_literal": True,
    "auto_host_rewrite": True,
    "append_x_forwarded_host": True,
    "timeout": True,
    "idle_timeout": True,
    "retry_policy": True,
    "request_mirror_policies": True,
    "hash_policy": True,
    "rate_limits": True,  # compiled by proxy.router.rate_limits
    "include_vh_rate_limits": True,
}
HEADER_MUTATION_FIELDS = {
    "request_headers_to_add": True,
    "request_headers_to_remove": True,
    "response_headers_to_add": True,
    "response_headers_to_remove": True,
}
# metadata and decorator carry no routing behaviour here (Isthmus has no tracing to decorate).
ROUTE_SPEC = {
    "name": True,
    "match": True,
    "route": True,
    "redirect": True,
    "direct_response": True,
    "metadata": True,
    "decorator": True,
    "typed_per_filter_config": True,  # compiled by proxy.router.per_filter
    **HEADER_MUTATION_FIELDS,
}
VHOST_SPEC = {
    "name": True,
    "domains": True,
    "routes": True,
    "retry_policy": True,
    "request_mirror_policies": True,
    "include_request_attempt_count": True,
    "include_attempt_count_in_response": True,
    "metadata": True,
    "rate_limits": True,  # compiled by proxy.router.rate_limits
    **HEADER_MUTATION_FIELDS,
}
ROUTE_CONFIG_SPEC = {
    "name": True,
    "virtual_hosts": True,
    "most_specific_header_mutations_wins": True,
    "validate_clusters": True,
    "max_direct_response_body_size_bytes": True,
    "request_mirror_policies": True,
    "ignore_port_in_host_matching": True,
    "metadata": True,
    **HEADER_MUTATION_FIELDS,
}

_CLUSTER_NOT_FOUND_CODES = {0: 503, 1: 404, 2: 500}

PREFIX, PATH, REGEX, SEPARATED = 0, 1, 2, 3


class RouteMatcher:
    """A compiled RouteMatch. ``matches`` takes the full :path, its path portion and a lazy query."""

    __slots__ = ("kind", "value", "case_sensitive", "regex", "headers", "query", "rewrite_len")

    def __init__(self, msg, path: str) -> None:
        reject_unsupported(msg, ROUTE_MATCH_SPEC, path)
        kind = msg.WhichOneof("path_specifier")
        self.case_sensitive = msg.case_sensitive.value if msg.HasField("case_sensitive") else True
        self.regex = None
        if kind == "prefix":
            self.kind, self.value = PREFIX, msg.prefix
        elif kind == "path":
            self.kind, self.value = PATH, msg.path
        elif kind == "safe_regex":
            self.kind, self.value = REGEX, ""
            self.regex = compile_regex(msg.safe_regex, f"{path}.safe_regex")
        elif kind == "path_separated_prefix":
            v = msg.path_separated_prefix
            if not v or "?" in v or "#" in v or v.endswith("/") or len(v) < 1:
                raise ConfigError(
                    f"{path}.path_separated_prefix",
                    "path_separated_prefix must not be empty, contain '?' or '#', or end with '/'",
                )
            self.kind, self.value = SEPARATED, v
        else:
            raise ConfigError(
                path, "route match needs one of prefix, path, safe_regex, path_separated_prefix"
            )
        if not self.case_sensitive and self.kind != REGEX:
            self.value = self.value.lower()
        self.rewrite_len = len(self.value) if self.kind != REGEX else 0
        self.headers = tuple(HeaderMatcher(h, f"{path}.headers[{i}]") for i, h in enumerate(msg.headers))
        self.query = tuple(
            QueryParameterMatcher(q, f"{path}.query_parameters[{i}]")
            for i, q in enumerate(msg.query_parameters)
        )

    def matches(self, full_path: str, path_only: str, headers: Headers, query_cache: list) -> bool:
        kind, value = self.kind, self.value
        if kind == PREFIX:
            if self.case_sensitive:
                if not full_path.startswith(value):
                    return False
            elif full_path[: len(value)].lower() != value:
                return False
        elif kind == PATH:
            if (path_only if self.case_sensitive else path_only.lower()) != value:
                return False
        elif kind == REGEX:
            if self.regex.fullmatch(path_only) is None:
                return False
        else:  # path_separated_prefix
            candidate = path_only if self.case_sensitive else path_only.lower()
            if not candidate.startswith(value):
                return False
            if len(candidate) > len(value) and candidate[len(value)] != "/":
                return False
        for hm in self.headers:
            if not hm.matches(headers):
                return False
        if self.query:
            if not query_cache:
                query_cache.append(parse_query(full_path))
            params = query_cache[0]
            for qm in self.query:
                if not qm.matches(params):
                    return False
        return True


@dataclass(eq=False)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: list[Route] = field(default_factory=list)
    include_request_attempt_count: bool = False
    include_attempt_count_in_response: bool = False
    rate_limits: tuple[RateLimitEntry, ...] = ()
    # The routes as ``match`` walks them, built once the routes are compiled (see _match_plan).
    match_plan: tuple = ()


def _match_plan(routes: list[Route]) -> tuple:
    """(prefix, matcher, route) per route, in order: ``prefix`` is set for a case-sensitive prefix match
    with no header or query matchers (decided by ``startswith`` on the :path, no matcher call); None
    sends the route through ``RouteMatcher.matches``."""
    plan = []
    for route in routes:
        m = route.matcher
        plain = m.kind == PREFIX and m.case_sensitive and not m.headers and not m.query
        plan.append((m.value if plain else None, m, route))
    return tuple(plan)


@dataclass(eq=False)
class Route:
    """One compiled route. Exactly one of ``action``, ``redirect`` and ``direct_response`` is set.
    ``request_mutations``/``response_mutations`` are the header mutations of the route, its virtual
    host and the route configuration, already in Envoy's order of application."""

    name: str
    virtual_host: VirtualHost
    matcher: RouteMatcher
    action: A.RouteAction | None = None
    redirect: A.Redirect | None = None
    direct_response: A.DirectResponse | None = None
    request_mutations: tuple[HeaderMutation, ...] = ()
    response_mutations: tuple[HeaderMutation, ...] = ()
    # Weighted-cluster mutations are the most specific level: applied first by default, last when
    # the route configuration sets most_specific_header_mutations_wins.
    most_specific_wins: bool = False
    # typed_per_filter_config, compiled by each filter's per-route parser (filter name -> object).
    per_filter_config: dict = field(default_factory=dict)
    # The route action's rate_limits; include_vh_rate_limits adds the virtual host's (Envoy).
    rate_limits: tuple[RateLimitEntry, ...] = ()
    include_vh_rate_limits: bool = False

    def rewrite_path(self, full_path: str) -> str | None:
        """The :path after prefix_rewrite/regex_rewrite, or None when the route does not rewrite."""
        action = self.action
        if action is None:
            return None
        if action.prefix_rewrite is not None:
            return action.prefix_rewrite + full_path[self.matcher.rewrite_len :]
        if action.regex_rewrite is not None:
            path_only, rest = A.split_path(full_path)
            pattern, repl = action.regex_rewrite
            return pattern.sub(repl, path_only) + rest

        return None

    def redirect_location(self, headers: Headers) -> str:
        return self.redirect.location(headers, self.matcher.rewrite_len)


class RouteTable:
    """A compiled RouteConfiguration. ``match`` is what the connection manager calls per request."""

    def __init__(
        self,
        proto,
        name: str,
        exact: dict[str, VirtualHost],
        suffixes: list[tuple[int, dict[str, VirtualHost]]],
        prefixes: list[tuple[int, dict[str, VirtualHost]]],
        default: VirtualHost | None,
        ignore_port: bool,
    ) -> None:
        self.proto = proto
        self.name = name
        self._exact = exact
        self._suffixes = suffixes
        self._prefixes = prefixes
        self._default = default
        self._ignore_port = ignore_port
        # :authority as received -> its virtual host (or None): the lookup below runs once per
        # authority, not per request. Bounded: past _VH_CACHE_MAX authorities it starts over, and an
        # authority longer than _VH_CACHE_KEY_MAX is looked up each time (never kept).
        self._vh_cache: dict[str, VirtualHost | None] = {}

    def find_virtual_host(self, authority: str) -> VirtualHost | None:
        """Envoy's order: exact domain, then the longest ``*suffix``, the longest ``prefix*``, then ``*``.
        A wildcard never matches an empty remainder."""
        host = authority.lower()
        if self._ignore_port:
            host = _strip_port(host)
        vh = self._exact.get(host)
        if vh is not None:
            return vh
        n = len(host)
        for length, table in self._suffixes:
            if length < n:
                vh = table.get(host[n - length :])
                if vh is not None:
                    return vh
        for length, table in self._prefixes:
            if length < n:
                vh = table.get(host[:length])
                if vh is not None:
                    return vh
        return self._default

    def match(self, headers: Headers, random_value: int = 0) -> Route | None:
        """The first route of the matching virtual host that matches the request, or None.
        (``random_value`` is accepted for the contract; weighted clusters are picked by the router.)"""
        authority = headers.get(":authority") or ""
        vh = self._vh_cache.get(authority, _MISS)
        if vh is _MISS:
            vh = self.find_virtual_host(authority)
            if len(authority) <= _VH_CACHE_KEY_MAX:
                if len(self._vh_cache) >= _VH_CACHE_MAX:
                    self._vh_cache.clear()
                self._vh_cache[authority] = vh
        if vh is None:
            return None
        full_path = headers.get(":path") or ""
        path_only = None  # the :path without query and fragment, made when a matcher needs it
        query_cache: list = []
        for prefix, matcher, route in vh.match_plan:
            if prefix is not None:
                if full_path.startswith(prefix):
                    return route
                continue
            if path_only is None:
                path_only = strip_query(full_path)
            if matcher.matches(full_path, path_only, headers, query_cache):
                return route
        return None

    @property
    def virtual_hosts(self) -> list[VirtualHost]:
        seen: dict[int, VirtualHost] = {}
        for vh in [
            *self._exact.values(),
            *(v for _, t in self._suffixes for v in t.values()),
            *(v for _, t in self._prefixes for v in t.values()),
            *([self._default] if self._default else []),
        ]:
            seen[id(vh)] = vh
        return list(seen.values())


_MISS = object()
_VH_CACHE_MAX = 1024
_VH_CACHE_KEY_MAX = 255  # a DNS name's length


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    h, sep, port = host.rpartition(":")
    return h if sep and port.isdigit() else host


def _compile_action(
    msg,
    path: str,
    vhost_retry: A.RetryPolicy | None,
    inherited_mirrors: tuple[A.MirrorPolicy, ...],
    matcher: RouteMatcher,
) -> A.RouteAction:
    reject_unsupported(msg, ROUTE_ACTION_SPEC, path)
    kind = msg.WhichOneof("cluster_specifier")
    cluster = cluster_header = ""
    weighted: tuple = ()
    total = 0
    if kind == "cluster":
        cluster = msg.cluster
    elif kind == "cluster_header":
        cluster_header = msg.cluster_header.lower()
        if cluster_header.startswith(":") or not cluster_header:
            raise ConfigError(f"{path}.cluster_header", "cluster_header must be a regular header name")
    elif kind == "weighted_clusters":
        weighted, total = A.compile_weighted(msg.weighted_clusters, f"{path}.weighted_clusters")
    else:
        raise ConfigError(path, "route action needs one of cluster, cluster_header, weighted_clusters")
    code = _CLUSTER_NOT_FOUND_CODES.get(msg.cluster_not_found_response_code)
    if code is None:
        raise ConfigError(f"{path}.cluster_not_found_response_code", "unknown code")
    prefix_rewrite = None
    regex_rewrite = None
    if msg.prefix_rewrite:
        if matcher.kind == REGEX:
            raise ConfigError(
                f"{path}.prefix_rewrite", "prefix_rewrite cannot be used with a safe_regex match"
            )
        prefix_rewrite = msg.prefix_rewrite
    if msg.HasField("regex_rewrite"):
        if prefix_rewrite is not None:
            raise ConfigError(
                f"{path}.regex_rewrite", "only one of prefix_rewrite and regex_rewrite may be set"
            )
        regex_rewrite = A.compile_regex_rewrite(msg.regex_rewrite, f"{path}.regex_rewrite")
    host_kind = msg.WhichOneof("host_rewrite_specifier")
    timeout: float | None = A.DEFAULT_ROUTE_TIMEOUT
    if msg.HasField("timeout"):
        timeout = A.duration_seconds(msg.timeout) or None
    idle = A.duration_seconds(msg.idle_timeout) if msg.HasField("idle_timeout") else None
    retry = (
        A.compile_retry_policy(msg.retry_policy, f"{path}.retry_policy")
        if msg.HasField("retry_policy")
        else vhost_retry
    )
    mirrors = (
        A.compile_mirrors(msg.request_mirror_policies, f"{path}.request_mirror_policies")
        if msg.request_mirror_policies
        else inherited_mirrors
    )
    return A.RouteAction(
        cluster=cluster,
        cluster_header=cluster_header,
        weighted_clusters=weighted,
        total_weight=total,
        cluster_not_found_code=code,
        prefix_rewrite=prefix_rewrite,
        regex_rewrite=regex_rewrite,
        host_rewrite_literal=msg.host_rewrite_literal if host_kind == "host_rewrite_literal" else "",
        auto_host_rewrite=host_kind == "auto_host_rewrite" and msg.auto_host_rewrite.value,
        append_x_forwarded_host=msg.append_x_forwarded_host,
        timeout=timeout,
        idle_timeout=idle,
        retry_policy=retry,
        mirrors=mirrors,
        hash_policies=A.compile_hash_policy(msg.hash_policy, f"{path}.hash_policy"),
    )


def compile_route_configuration(rc, path: str = "route_config") -> RouteTable:
    """Compile an ``envoy.config.route.v3.RouteConfiguration``; raises ConfigError naming the field."""
    reject_unsupported(rc, ROUTE_CONFIG_SPEC, path)
    if rc.HasField("validate_clusters") and rc.validate_clusters.value:
        raise ConfigError(
            f"{path}.validate_clusters", "validate_clusters: true is not supported by Isthmus yet"
        )
    max_body = (
        rc.max_direct_response_body_size_bytes.value
        if rc.HasField("max_direct_response_body_size_bytes")
        else A.MAX_DIRECT_RESPONSE_BODY
    )
    most_specific_wins = rc.most_specific_header_mutations_wins
    rc_req = request_mutation(rc, path)
    rc_resp = response_mutation(rc, path)
    rc_mirrors = A.compile_mirrors(rc.request_mirror_policies, f"{path}.request_mirror_policies")

    exact: dict[str, VirtualHost] = {}
    suffixes: dict[int, dict[str, VirtualHost]] = {}
    prefixes: dict[int, dict[str, VirtualHost]] = {}
    default: VirtualHost | None = None
    seen_domains: set[str] = set()
    vhost_names: set[str] = set()

    for vi, vmsg in enumerate(rc.virtual_hosts):
        vpath = f"{path}.virtual_hosts[{vi}]"
        reject_unsupported(vmsg, VHOST_SPEC, vpath)
        if not vmsg.name:
            raise ConfigError(f"{vpath}.name", "a virtual host needs a name")
        if vmsg.name in vhost_names:
            raise ConfigError(f"{vpath}.name", f"duplicate virtual host name '{vmsg.name}'")
        vhost_names.add(vmsg.name)
        if not vmsg.domains:
            raise ConfigError(f"{vpath}.domains", "a virtual host needs at least one domain")
        vh = VirtualHost(
            vmsg.name,
            tuple(d.lower() for d in vmsg.domains),
            include_request_attempt_count=vmsg.include_request_attempt_count,
            include_attempt_count_in_response=vmsg.include_attempt_count_in_response,
            rate_limits=compile_rate_limits(vmsg.rate_limits, f"{vpath}.rate_limits"),
        )
        for di, domain in enumerate(vh.domains):
            dpath = f"{vpath}.domains[{di}]"
            if not domain:
                raise ConfigError(dpath, "domain must not be empty")
            if domain in seen_domains:
                raise ConfigError(
                    dpath,
                    f"only unique values for domains are permitted; duplicate entry of domain "
                    f"{domain} in route {rc.name or path}",
                )
            seen_domains.add(domain)
            if domain == "*":
                default = vh
            elif domain.startswith("*"):
                suffixes.setdefault(len(domain) - 1, {})[domain[1:]] = vh
            elif domain.endswith("*"):
                prefixes.setdefault(len(domain) - 1, {})[domain[:-1]] = vh
            else:
                exact[domain] = vh
        vh_req = request_mutation(vmsg, vpath)
        vh_resp = response_mutation(vmsg, vpath)
        vh_retry = (
            A.compile_retry_policy(vmsg.retry_policy, f"{vpath}.retry_policy")
            if vmsg.HasField("retry_policy")
            else None
        )
        vh_mirrors = (
            A.compile_mirrors(vmsg.request_mirror_policies, f"{vpath}.request_mirror_policies")
            if vmsg.request_mirror_policies
            else rc_mirrors
        )
        for ri, rmsg in enumerate(vmsg.routes):
            rpath = f"{vpath}.routes[{ri}]"
            reject_unsupported(rmsg, ROUTE_SPEC, rpath)
            if not rmsg.HasField("match"):
                raise ConfigError(f"{rpath}.match", "a route needs a match")
            matcher = RouteMatcher(rmsg.match, f"{rpath}.match")
            route = Route(rmsg.name, vh, matcher, most_specific_wins=most_specific_wins)
            route.per_filter_config = compile_per_filter_config(
                rmsg.typed_per_filter_config, f"{rpath}.typed_per_filter_config"
            )
            kind = rmsg.WhichOneof("action")
            if kind == "route":
                route.action = _compile_action(rmsg.route, f"{rpath}.route", vh_retry, vh_mirrors, matcher)
                route.rate_limits = compile_rate_limits(rmsg.route.rate_limits, f"{rpath}.route.rate_limits")
                route.include_vh_rate_limits = rmsg.route.include_vh_rate_limits.value
            elif kind == "redirect":
                route.redirect = A.compile_redirect(rmsg.redirect, f"{rpath}.redirect")
                if route.redirect.prefix_rewrite is not None and matcher.kind == REGEX:
                    raise ConfigError(
                        f"{rpath}.redirect.prefix_rewrite",
                        "prefix_rewrite cannot be used with a safe_regex match",
                    )
            elif kind == "direct_response":
                route.direct_response = A.compile_direct_response(
                    rmsg.direct_response, f"{rpath}.direct_response", max_body
                )
            else:
                raise ConfigError(rpath, "a route needs one of route, redirect, direct_response")
            levels_req = [request_mutation(rmsg, rpath), vh_req, rc_req]
            levels_resp = [response_mutation(rmsg, rpath), vh_resp, rc_resp]
            if most_specific_wins:
                levels_req.reverse()
                levels_resp.reverse()
            route.request_mutations = tuple(m for m in levels_req if m)
            route.response_mutations = tuple(m for m in levels_resp if m)
            vh.routes.append(route)
        vh.match_plan = _match_plan(vh.routes)

    return RouteTable(
        rc,
        rc.name,
        exact,
        sorted(suffixes.items(), key=lambda kv: -kv[0]),
        sorted(prefixes.items(), key=lambda kv: -kv[0]),
        default,
        rc.ignore_port_in_host_matching,
    )
