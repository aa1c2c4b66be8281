import pytest

from proxy.config.errors import ConfigError
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo
from proxy.router import shadow_authority
from tests.unit.proxy.router.helpers import one_vhost, req, route, table


def r(action: dict, match=None, path="/", **h):
    t = table(one_vhost([route(match or {"prefix": "/"}, **action)]))
    return t.match(req(path=path, **h))


def test_defaults_follow_envoy():
    a = r({"route": {"cluster": "c"}}).action
    assert a.timeout == 15.0
    assert a.retry_policy is None
    assert a.idle_timeout is None
    assert a.cluster_not_found_code == 503


def test_zero_timeout_disables_it():
    assert r({"route": {"cluster": "c", "timeout": "0s"}}).action.timeout is None
    assert r({"route": {"cluster": "c", "timeout": "0.25s"}}).action.timeout == 0.25


def test_weighted_selection_by_random_value():
    a = r(
        {
            "route": {
                "weighted_clusters": {
                    "clusters": [
                        {"name": "a", "weight": 80},
                        {"name": "zero", "weight": 0},
                        {"name": "b", "weight": 20},
                    ]
                }
            }
        }
    ).action
    picks = [a.select_cluster(Headers(), v)[0] for v in range(100)]
    assert picks.count("a") == 80 and picks.count("b") == 20 and "zero" not in picks
    assert a.select_cluster(Headers(), 79)[0] == "a"
    assert a.select_cluster(Headers(), 80)[0] == "b"
    assert a.select_cluster(Headers(), 180)[0] == "b"  # modulo the total weight


def test_weighted_total_weight_must_equal_sum():
    with pytest.raises(ConfigError) as e:
        r({"route": {"weighted_clusters": {"total_weight": 99, "clusters": [{"name": "a", "weight": 50}]}}})
    assert e.value.path.endswith("route.weighted_clusters.total_weight")
    ok = r({"route": {"weighted_clusters": {"total_weight": 50, "clusters": [{"name": "a", "weight": 50}]}}})
    assert ok.action.total_weight == 50


def test_cluster_header():
    a = r({"route": {"cluster_header": "X-Cluster"}}).action
    assert a.select_cluster(req(x_cluster="svc"), 0) == ("svc", None)
    assert a.select_cluster(req(), 0) == ("", None)


def test_cluster_not_found_response_code():
    assert (
        r(
            {"route": {"cluster": "c", "cluster_not_found_response_code": "NOT_FOUND"}}
        ).action.cluster_not_found_code
        == 404
    )


@pytest.mark.parametrize(
    "match,rewrite,path,expected",
    [
        ({"prefix": "/api/"}, "/", "/api/users?x=1", "/users?x=1"),
        ({"prefix": "/api"}, "/v2", "/api/users", "/v2/users"),
        ({"prefix": "/API", "case_sensitive": False}, "/x", "/api/u", "/x/u"),
        ({"path": "/old"}, "/new", "/old?q=1", "/new?q=1"),
        ({"path_separated_prefix": "/api"}, "/svc", "/api/a", "/svc/a"),
    ],
)
def test_prefix_rewrite(match, rewrite, path, expected):
    route_ = r({"route": {"cluster": "c", "prefix_rewrite": rewrite}}, match=match, path=path)
    assert route_.rewrite_path(path) == expected


def test_regex_rewrite_keeps_query_and_supports_groups():
    route_ = r(
        {
            "route": {
                "cluster": "c",
                "regex_rewrite": {
                    "pattern": {"regex": "^/service/([^/]+)(/.*)$"},
                    "substitution": "\\2/instance/\\1",
                },
            }
        }
    )
    assert route_.rewrite_path("/service/foo/v1/api?x=1") == "/v1/api/instance/foo?x=1"
    whole = r(
        {"route": {"cluster": "c", "regex_rewrite": {"pattern": {"regex": "o"}, "substitution": "\\0\\0"}}}
    )
    assert whole.rewrite_path("/foo") == "/foooo"


def test_no_rewrite_gives_none():
    assert r({"route": {"cluster": "c"}}).rewrite_path("/x") is None


def test_prefix_rewrite_with_regex_match_is_rejected():
    with pytest.raises(ConfigError) as e:
        r({"route": {"cluster": "c", "prefix_rewrite": "/"}}, match={"safe_regex": {"regex": "/.*"}})
    assert e.value.path.endswith("routes[0].route.prefix_rewrite")


def test_host_rewrites():
    assert (
        r({"route": {"cluster": "c", "host_rewrite_literal": "new.host"}}).action.host_rewrite_literal
        == "new.host"
    )
    assert r({"route": {"cluster": "c", "auto_host_rewrite": True}}).action.auto_host_rewrite is True


def test_retry_policy_parsing_and_conditions():
    p = r(
        {
            "route": {
                "cluster": "c",
                "retry_policy": {
                    "retry_on": "gateway-error,retriable-4xx,retriable-status-codes",
                    "num_retries": 3,
                    "per_try_timeout": "0.5s",
                    "retriable_status_codes": [418],
                },
            }
        }
    ).action.retry_policy
    assert p.num_retries == 3 and p.per_try_timeout == 0.5
    assert [s for s in (500, 502, 503, 504, 409, 418, 404) if p.retriable_status(s)] == [
        502,
        503,
        504,
        409,
        418,
    ]
    assert p.retriable_reset(connect_failure=False)  # gateway-error covers resets


def test_retry_defaults_and_reset_conditions():
    p = r({"route": {"cluster": "c", "retry_policy": {"retry_on": "connect-failure"}}}).action.retry_policy
    assert p.num_retries == 1
    assert p.per_try_timeout is None
    assert (p.base_interval, p.max_interval) == (0.025, 0.25)
    assert p.retriable_reset(connect_failure=True)
    assert not p.retriable_reset(connect_failure=False)
    assert not p.retriable_status(503)
    five = r({"route": {"cluster": "c", "retry_policy": {"retry_on": "5xx"}}}).action.retry_policy
    assert five.retriable_status(500) and not five.retriable_status(409)


def test_backoff_is_fully_jittered_exponential_and_capped():
    p = r({"route": {"cluster": "c", "retry_policy": {"retry_on": "5xx"}}}).action.retry_policy
    # retry N waits in [0, (2^N - 1) * 25ms), capped at 250ms.
    assert max(p.backoff(1, v) for v in range(1000)) == pytest.approx(0.024)
    assert max(p.backoff(2, v) for v in range(1000)) == pytest.approx(0.074)
    assert max(p.backoff(10, v) for v in range(1000)) == pytest.approx(0.249)
    assert min(p.backoff(3, v) for v in range(1000)) == 0.0
    custom = r(
        {
            "route": {
                "cluster": "c",
                "retry_policy": {
                    "retry_on": "5xx",
                    "retry_back_off": {"base_interval": "0.1s", "max_interval": "0.15s"},
                },
            }
        }
    ).action.retry_policy
    assert max(custom.backoff(5, v) for v in range(1000)) == pytest.approx(0.149)


def test_unknown_retry_on_is_rejected():
    with pytest.raises(ConfigError) as e:
        r({"route": {"cluster": "c", "retry_policy": {"retry_on": "5xx,refused-stream"}}})
    assert e.value.path.endswith("route.retry_policy.retry_on")
    assert "refused-stream" in str(e.value)


def test_virtual_host_retry_policy_is_inherited_unless_route_sets_one():
    t = table(
        one_vhost(
            [
                route({"prefix": "/a"}, route={"cluster": "c"}),
                route({"prefix": "/b"}, route={"cluster": "c", "retry_policy": {"retry_on": "reset"}}),
            ],
            retry_policy={"retry_on": "5xx", "num_retries": 4},
        )
    )
    assert t.match(req(path="/a")).action.retry_policy.num_retries == 4
    assert t.match(req(path="/b")).action.retry_policy.num_retries == 1


def test_hash_policy_key_is_stable_and_depends_on_inputs():
    a = r({"route": {"cluster": "c", "hash_policy": [{"header": {"header_name": "x-user"}}]}}).action
    k1 = a.hash_key(req(x_user="alice"), None)
    assert k1 == a.hash_key(req(x_user="alice"), None)
    assert k1 != a.hash_key(req(x_user="bob"), None)
    assert a.hash_key(req(), None) is None
    ip = r(
        {"route": {"cluster": "c", "hash_policy": [{"connection_properties": {"source_ip": True}}]}}
    ).action
    assert ip.hash_key(req(), ("10.0.0.1", 1)) == ip.hash_key(req(), ("10.0.0.1", 2))
    assert ip.hash_key(req(), ("10.0.0.1", 1)) != ip.hash_key(req(), ("10.0.0.2", 1))
    cookie = r({"route": {"cluster": "c", "hash_policy": [{"cookie": {"name": "sid"}}]}}).action
    assert cookie.hash_key(req(cookie="a=1; sid=xyz"), None) == cookie.hash_key(req(cookie="sid=xyz"), None)
    q = r({"route": {"cluster": "c", "hash_policy": [{"query_parameter": {"name": "u"}}]}}).action
    assert q.hash_key(req(path="/?u=1"), None) != q.hash_key(req(path="/?u=2"), None)


def test_terminal_hash_policy_stops_evaluation():
    a = r(
        {
            "route": {
                "cluster": "c",
                "hash_policy": [
                    {"header": {"header_name": "a"}, "terminal": True},
                    {"header": {"header_name": "b"}},
                ],
            }
        }
    ).action
    assert a.hash_key(req(a="1", b="1"), None) == a.hash_key(req(a="1", b="2"), None)


def test_cookie_hash_with_ttl_is_rejected():
    with pytest.raises(ConfigError) as e:
        r({"route": {"cluster": "c", "hash_policy": [{"cookie": {"name": "sid", "ttl": "10s"}}]}})
    assert e.value.path.endswith("hash_policy[0].cookie.ttl")


def test_mirror_policies():
    a = r(
        {
            "route": {
                "cluster": "c",
                "request_mirror_policies": [
                    {"cluster": "shadow", "runtime_fraction": {"default_value": {"numerator": 50}}}
                ],
            }
        }
    ).action
    (m,) = a.mirrors
    assert m.cluster_name(req()) == "shadow"
    assert m.fraction.hit(49) and not m.fraction.hit(50)
    assert m.append_shadow_suffix


@pytest.mark.parametrize(
    "authority,expected",
    [("foo", "foo-shadow"), ("foo:8080", "foo-shadow:8080"), ("[::1]:80", "[::1]-shadow:80")],
)
def test_shadow_authority(authority, expected):
    assert shadow_authority(authority) == expected


@pytest.mark.parametrize(
    "redirect,h,location,code",
    [
        ({"https_redirect": True}, {"authority": "a.com", "path": "/x?y=1"}, "https://a.com/x?y=1", 301),
        ({"https_redirect": True}, {"authority": "a.com:80", "path": "/"}, "https://a.com/", 301),
        (
            {"host_redirect": "b.com", "response_code": "FOUND"},
            {"authority": "a.com:8080", "path": "/p"},
            "http://b.com/p",
            302,
        ),
        ({"port_redirect": 9000}, {"authority": "a.com:8080", "path": "/p"}, "http://a.com:9000/p", 301),
        (
            {"path_redirect": "/new", "response_code": "TEMPORARY_REDIRECT"},
            {"authority": "a", "path": "/old?q=1"},
            "http://a/new?q=1",
            307,
        ),
        (
            {"path_redirect": "/new", "strip_query": True},
            {"authority": "a", "path": "/old?q=1"},
            "http://a/new",
            301,
        ),
        ({"path_redirect": "/new?z=2"}, {"authority": "a", "path": "/old?q=1"}, "http://a/new?z=2", 301),
        ({"prefix_rewrite": "/v2/"}, {"authority": "a", "path": "/v1/x?q"}, "http://a/v2/x?q", 301),
        (
            {"scheme_redirect": "https", "response_code": "PERMANENT_REDIRECT"},
            {"authority": "a", "path": "/"},
            "https://a/",
            308,
        ),
    ],
)
def test_redirect_location(redirect, h, location, code):
    match = {"prefix": "/v1/"} if "prefix_rewrite" in redirect else {"prefix": "/"}
    route_ = r({"redirect": redirect}, match=match, **h)
    assert route_.redirect_location(req(**h)) == location
    assert route_.redirect.response_code == code


def test_direct_response():
    d = r({"direct_response": {"status": 200, "body": {"inline_string": "hello"}}}).direct_response
    assert (d.status, d.body) == (200, b"hello")
    assert r({"direct_response": {"status": 503}}).direct_response.body == b""


def test_direct_response_body_over_limit_is_rejected():
    with pytest.raises(ConfigError) as e:
        r({"direct_response": {"status": 200, "body": {"inline_string": "x" * 5000}}})
    assert e.value.path.endswith("direct_response.body")


def _apply(mutations, headers, si=None):
    for m in mutations:
        m.apply(headers, si)
    return headers


def test_header_mutation_levels_and_order():
    cfg = one_vhost(
        [
            route(
                {"prefix": "/"},
                route={"cluster": "c"},
                request_headers_to_add=[
                    {
                        "header": {"key": "x-level", "value": "route"},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
                request_headers_to_remove=["x-drop"],
                response_headers_to_add=[{"header": {"key": "x-r", "value": "route"}}],
            )
        ],
        request_headers_to_add=[
            {"header": {"key": "x-level", "value": "vhost"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
        response_headers_to_remove=["server"],
    )
    cfg["request_headers_to_add"] = [{"header": {"key": "x-rc", "value": "1"}}]
    rt = table(cfg).match(req())
    h = _apply(rt.request_mutations, req(x_drop="1"))
    # route, then virtual host, then route configuration: the least specific overwrite wins (Envoy's default)
    assert h.get("x-level") == "vhost" and h.get("x-rc") == "1" and "x-drop" not in h
    resp = _apply(rt.response_mutations, Headers([(":status", "200"), ("server", "up")]))
    assert resp.get("x-r") == "route" and "server" not in resp
    cfg["most_specific_header_mutations_wins"] = True
    rt = table(cfg).match(req())
    assert _apply(rt.request_mutations, req()).get("x-level") == "route"


@pytest.mark.parametrize(
    "action,existing,expected",
    [
        ("APPEND_IF_EXISTS_OR_ADD", ["a"], ["a", "new"]),
        ("ADD_IF_ABSENT", ["a"], ["a"]),
        ("ADD_IF_ABSENT", [], ["new"]),
        ("OVERWRITE_IF_EXISTS_OR_ADD", ["a", "b"], ["new"]),
        ("OVERWRITE_IF_EXISTS", [], []),
        ("OVERWRITE_IF_EXISTS", ["a"], ["new"]),
    ],
)
def test_append_actions(action, existing, expected):
    rt = r(
        {
            "route": {"cluster": "c"},
            "request_headers_to_add": [{"header": {"key": "x-h", "value": "new"}, "append_action": action}],
        }
    )
    h = req()
    for v in existing:
        h.add("x-h", v)
    assert _apply(rt.request_mutations, h).get_all("x-h") == expected


def test_substitution_of_downstream_address_and_request_headers():
    rt = r(
        {
            "route": {"cluster": "c"},
            "request_headers_to_add": [
                {"header": {"key": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}},
                {"header": {"key": "x-both", "value": "%DOWNSTREAM_REMOTE_ADDRESS% via %REQ(x-a)% 100%%"}},
            ],
        }
    )
    h = req(x_a="va")
    si = StreamInfo(downstream_remote_address=("10.1.2.3", 5555), request_headers=h)
    _apply(rt.request_mutations, h, si)
    assert h.get("x-client") == "10.1.2.3"
    assert h.get("x-both") == "10.1.2.3:5555 via va 100%"


@pytest.mark.parametrize("value", ["%START_TIME%", '%UPSTREAM_METADATA(["a"])%', "50%"])
def test_unsupported_substitution_is_rejected(value):
    with pytest.raises(ConfigError) as e:
        r({"route": {"cluster": "c"}, "request_headers_to_add": [{"header": {"key": "x", "value": value}}]})
    assert e.value.path.endswith("request_headers_to_add[0].header.value")


def test_pseudo_headers_cannot_be_mutated():
    with pytest.raises(ConfigError):
        r({"route": {"cluster": "c"}, "request_headers_to_remove": [":path"]})
    with pytest.raises(ConfigError):
        r({"route": {"cluster": "c"}, "request_headers_to_add": [{"header": {"key": "host", "value": "x"}}]})


@pytest.mark.parametrize(
    "action,field",
    [
        ({"route": {"cluster": "c", "cors": {}}}, "route.cors"),
        ({"route": {"cluster": "c", "hedge_policy": {}}}, "route.hedge_policy"),
        (
            {
                "route": {
                    "cluster": "c",
                    "retry_policy": {"retry_on": "5xx", "retry_host_predicate": [{"name": "x"}]},
                }
            },
            "route.retry_policy.retry_host_predicate",
        ),
        ({"route": {"cluster": "c"}, "tracing": {"client_sampling": {"numerator": 1}}}, "tracing"),
    ],
)
def test_unsupported_action_fields_are_rejected_with_path(action, field):
    with pytest.raises(ConfigError) as e:
        r(action)
    assert e.value.path == f"route_config.virtual_hosts[0].routes[0].{field}"
