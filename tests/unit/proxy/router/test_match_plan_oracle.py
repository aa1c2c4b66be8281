"""RouteTable.match (virtual hosts cached per :authority, plain prefix routes decided by startswith,
the query stripped only for matchers that need it) picks exactly the route the previous
implementation picked: a fresh Envoy-order virtual host lookup per request and every route through
RouteMatcher.matches. Random route configurations x random requests, plus the cache's edges."""

from __future__ import annotations

import random

import pytest

from proxy.router import table as table_mod
from proxy.router.matchers import strip_query
from tests.unit.proxy.router.helpers import req, table

# --- the previous implementation (the oracle) -------------------------------------------------------


def old_match(t, headers):
    vh = t.find_virtual_host(headers.get(":authority") or "")
    if vh is None:
        return None
    full_path = headers.get(":path") or ""
    path_only = strip_query(full_path)
    query_cache: list = []
    for route in vh.routes:
        if route.matcher.matches(full_path, path_only, headers, query_cache):
            return route
    return None


# --- random configurations and requests --------------------------------------------------------------

SEGMENTS = ["", "/", "/a", "/api", "/API", "/api/", "/api/v1", "/b", "/a/b", "/ab", "/users/42"]
HOSTS = ["example.com", "EXAMPLE.com", "api.example.com", "foo.bar", "svc", "svc:80", "a.b.c", "x", ""]
DOMAIN_POOL = [
    "example.com",
    "*.example.com",
    "*.com",
    "*ample.com",
    "api.*",
    "foo.*",
    "svc",
    "svc:80",
    "*:80",
    "a.*",
    "a.b.*",
    "*.c",
]


def _random_match(rng: random.Random) -> dict:
    kind = rng.choice(["prefix", "prefix", "prefix", "path", "safe_regex", "path_separated_prefix"])
    if kind == "prefix":
        m: dict = {"prefix": rng.choice(["/", "", "/a", "/api", "/API", "/api/v", "/users"])}
    elif kind == "path":
        m = {"path": rng.choice(["/", "/a", "/api", "/API", "/api/v1", "/users/42"])}
    elif kind == "safe_regex":
        m = {"safe_regex": {"regex": rng.choice(["/users/[0-9]+", "/a.*", ".*b", "/"])}}
    else:
        m = {"path_separated_prefix": rng.choice(["/a", "/api", "/API", "/users"])}
    if kind != "safe_regex" and rng.random() < 0.25:
        m["case_sensitive"] = rng.random() < 0.5
    if rng.random() < 0.25:
        m["headers"] = [
            rng.choice(
                [
                    {"name": "x-v", "exact_match": "1"},
                    {"name": "x-v", "present_match": True, "invert_match": True},
                    {"name": ":method", "exact_match": "POST"},
                    {"name": "x-w", "string_match": {"prefix": "a"}},
                ]
            )
        ]
    if rng.random() < 0.2:
        m["query_parameters"] = [
            rng.choice([{"name": "q"}, {"name": "v", "string_match": {"exact": "2"}}, {"name": "a b"}])
        ]
    return m


def _random_config(rng: random.Random) -> dict:
    vhosts = []
    domains = rng.sample(DOMAIN_POOL, rng.randint(1, 6))
    if rng.random() < 0.6:
        domains.append("*")
    rng.shuffle(domains)
    n = rng.randint(1, min(4, len(domains)))
    groups = [domains[i::n] for i in range(n)]
    for vi, group in enumerate(groups):
        routes = [
            {"name": f"v{vi}r{ri}", "match": _random_match(rng), "route": {"cluster": "c"}}
            for ri in range(rng.randint(0, 5))
        ]
        vhosts.append({"name": f"vh{vi}", "domains": group, "routes": routes})
    cfg: dict = {"virtual_hosts": vhosts}
    if rng.random() < 0.3:
        cfg["ignore_port_in_host_matching"] = True
    return cfg


def _random_request(rng: random.Random):
    path = rng.choice(SEGMENTS) + rng.choice(
        ["", "", "?q", "?v=2", "?v=3&v=2", "?a%20b=1", "#frag", "?x=1#f"]
    )
    extra = {}
    if rng.random() < 0.3:
        extra["x_v"] = rng.choice(["1", "2", ""])
    if rng.random() < 0.2:
        extra["x_w"] = rng.choice(["abc", "b"])
    host = rng.choice(HOSTS)
    if rng.random() < 0.2:
        host = host.upper()
    if rng.random() < 0.2 and host:
        host += rng.choice([":80", ":8080", ":x"])
    return req(path=path, authority=host, method=rng.choice(["GET", "POST"]), **extra)


@pytest.mark.parametrize("seed", range(40))
def test_match_picks_the_route_the_previous_implementation_picked(seed):
    rng = random.Random(seed)
    t = table(_random_config(rng))
    for _ in range(150):
        h = _random_request(rng)
        # Twice: the second lookup of an authority comes from the cache.
        expected = old_match(t, h)
        assert t.match(h) is expected
        assert t.match(h) is expected


def test_a_missing_path_or_authority_matches_as_empty():
    t = table(
        {
            "virtual_hosts": [
                {
                    "name": "a",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": ""}, "route": {"cluster": "c"}}],
                }
            ]
        }
    )
    from proxy.core.headers import Headers

    h = Headers([(":method", "GET")])
    assert t.match(h) is old_match(t, h) is t.virtual_hosts[0].routes[0]


def test_authorities_differing_in_case_each_find_their_virtual_host():
    t = table(
        {
            "virtual_hosts": [
                {
                    "name": "a",
                    "domains": ["Example.com"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "a"}}],
                },
                {
                    "name": "b",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "b"}}],
                },
            ]
        }
    )
    for host in ["example.com", "EXAMPLE.COM", "other", "example.com", "Other"]:
        route = t.match(req(authority=host))
        assert route.virtual_host.name == ("a" if host.lower() == "example.com" else "b")


def test_no_virtual_host_is_cached_as_none_and_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(table_mod, "_VH_CACHE_MAX", 4)
    t = table(
        {
            "virtual_hosts": [
                {
                    "name": "a",
                    "domains": ["a.*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "a"}}],
                }
            ]
        }
    )
    for i in range(20):
        assert t.match(req(authority=f"b{i}")) is None
        assert t.match(req(authority=f"a.{i}")).virtual_host.name == "a"
        assert len(t._vh_cache) <= 4
    assert t.match(req(authority="b0")) is None


def test_a_long_authority_is_matched_but_never_kept():
    t = table(
        {
            "virtual_hosts": [
                {
                    "name": "a",
                    "domains": ["*.example.com"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "a"}}],
                },
                {
                    "name": "b",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "b"}}],
                },
            ]
        }
    )
    long_host = "x" * 300 + ".example.com"
    for _ in range(2):
        assert t.match(req(authority=long_host)).virtual_host.name == "a"
        assert t.match(req(authority="y" * 300)).virtual_host.name == "b"
    assert t._vh_cache == {}
