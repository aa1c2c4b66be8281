import pytest

from proxy.config.errors import ConfigError
from tests.unit.proxy.router.helpers import one_vhost, req, route, table


def first(routes, **h):
    t = table(one_vhost(routes))
    return t.match(req(**h))


def matches(match, **h) -> bool:
    return first([route(match)], **h) is not None


@pytest.mark.parametrize(
    "path,ok",
    [("/api", True), ("/api/v1", True), ("/apix", True), ("/ap", False), ("/API", False), ("/api?x=1", True)],
)
def test_prefix(path, ok):
    assert matches({"prefix": "/api"}, path=path) is ok


@pytest.mark.parametrize(
    "path,ok", [("/api", True), ("/api?x=1", True), ("/api/", False), ("/api/v1", False)]
)
def test_exact_path_ignores_query(path, ok):
    assert matches({"path": "/api"}, path=path) is ok


def test_case_insensitive_prefix_and_path():
    assert matches({"prefix": "/Api", "case_sensitive": False}, path="/aPI/x")
    assert matches({"path": "/Api", "case_sensitive": False}, path="/API?q")
    assert not matches({"prefix": "/Api"}, path="/api")


@pytest.mark.parametrize(
    "path,ok", [("/users/42", True), ("/users/42?x=1", True), ("/users/abc", False), ("/users/42/x", False)]
)
def test_safe_regex_is_a_full_match_on_the_path(path, ok):
    assert matches({"safe_regex": {"regex": r"/users/\d+"}}, path=path) is ok


@pytest.mark.parametrize(
    "path,ok",
    [("/api", True), ("/api/", True), ("/api/x", True), ("/api?x", True), ("/apix", False), ("/ap", False)],
)
def test_path_separated_prefix(path, ok):
    assert matches({"path_separated_prefix": "/api"}, path=path) is ok


def test_path_separated_prefix_must_not_end_with_slash():
    with pytest.raises(ConfigError) as e:
        table(one_vhost([route({"path_separated_prefix": "/api/"})]))
    assert e.value.path.endswith("routes[0].match.path_separated_prefix")


def test_first_matching_route_wins():
    routes = [
        route({"prefix": "/a"}, route={"cluster": "first"}),
        route({"prefix": "/"}, route={"cluster": "second"}),
    ]
    assert first(routes, path="/a/b").action.cluster == "first"
    assert first(routes, path="/b").action.cluster == "second"


@pytest.mark.parametrize(
    "hm,headers,ok",
    [
        ({"name": "x-v", "exact_match": "1"}, {"x_v": "1"}, True),
        ({"name": "x-v", "exact_match": "1"}, {"x_v": "2"}, False),
        ({"name": "x-v", "exact_match": "1"}, {}, False),
        ({"name": "x-v", "string_match": {"exact": "Ab"}}, {"x_v": "Ab"}, True),
        ({"name": "x-v", "string_match": {"exact": "ab", "ignore_case": True}}, {"x_v": "AB"}, True),
        ({"name": "x-v", "string_match": {"prefix": "ab"}}, {"x_v": "abc"}, True),
        ({"name": "x-v", "string_match": {"suffix": "bc"}}, {"x_v": "abc"}, True),
        ({"name": "x-v", "string_match": {"contains": "b"}}, {"x_v": "abc"}, True),
        ({"name": "x-v", "string_match": {"safe_regex": {"regex": "a.c"}}}, {"x_v": "abc"}, True),
        ({"name": "x-v", "string_match": {"safe_regex": {"regex": "a"}}}, {"x_v": "abc"}, False),
        ({"name": "x-v", "prefix_match": "ab"}, {"x_v": "abc"}, True),
        ({"name": "x-v", "suffix_match": "bc"}, {"x_v": "abc"}, True),
        ({"name": "x-v", "contains_match": "zz"}, {"x_v": "abc"}, False),
        ({"name": "x-v", "safe_regex_match": {"regex": "\\d+"}}, {"x_v": "123"}, True),
        ({"name": "x-v", "present_match": True}, {"x_v": ""}, True),
        ({"name": "x-v", "present_match": True}, {}, False),
        ({"name": "x-v", "present_match": False}, {}, True),
        ({"name": "x-v", "present_match": False}, {"x_v": "1"}, False),
        ({"name": "x-v", "exact_match": "1", "invert_match": True}, {"x_v": "2"}, True),
        ({"name": "x-v", "exact_match": "1", "invert_match": True}, {"x_v": "1"}, False),
        # Envoy: a missing header never satisfies an inverted value matcher...
        ({"name": "x-v", "exact_match": "1", "invert_match": True}, {}, False),
        # ...but inverted present_match: true means "absent".
        ({"name": "x-v", "present_match": True, "invert_match": True}, {}, True),
        ({"name": "x-v", "string_match": {"exact": ""}, "treat_missing_header_as_empty": True}, {}, True),
        ({"name": ":method", "exact_match": "POST"}, {}, False),
    ],
)
def test_header_matchers(hm, headers, ok):
    assert matches({"prefix": "/", "headers": [hm]}, **headers) is ok


def test_all_header_matchers_must_match_and_multiple_values_are_joined():
    m = {
        "prefix": "/",
        "headers": [{"name": "a", "exact_match": "1,2"}, {"name": "b", "present_match": True}],
    }
    t = table(one_vhost([route(m)]))
    h = req(a="1", b="x")
    h.add("a", "2")
    assert t.match(h) is not None
    assert t.match(req(a="1", b="x")) is None


def test_method_pseudo_header_matching():
    assert matches({"prefix": "/", "headers": [{"name": ":method", "exact_match": "POST"}]}, method="POST")


@pytest.mark.parametrize(
    "qm,path,ok",
    [
        ({"name": "debug"}, "/?debug", True),
        ({"name": "debug"}, "/?x=1", False),
        ({"name": "debug", "present_match": True}, "/?a=1&debug=0", True),
        ({"name": "v", "string_match": {"exact": "2"}}, "/?v=2", True),
        ({"name": "v", "string_match": {"exact": "2"}}, "/?v=3&v=2", False),  # the first value counts
        ({"name": "v", "string_match": {"exact": "a b"}}, "/?v=a%20b", True),  # values are percent-decoded
        ({"name": "v", "string_match": {"prefix": "x"}}, "/", False),
    ],
)
def test_query_parameters(qm, path, ok):
    assert matches({"prefix": "/", "query_parameters": [qm]}, path=path) is ok


@pytest.mark.parametrize(
    "match,field",
    [
        ({"prefix": "/", "runtime_fraction": {"default_value": {"numerator": 1}}}, "match.runtime_fraction"),
        ({"prefix": "/", "grpc": {}}, "match.grpc"),
        ({"connect_matcher": {}}, "match.connect_matcher"),
        ({"safe_regex": {"regex": "("}}, "match.safe_regex.regex"),
    ],
)
def test_unsupported_or_invalid_match_is_rejected_with_path(match, field):
    with pytest.raises(ConfigError) as e:
        table(one_vhost([route(match)]))
    assert e.value.path == f"route_config.virtual_hosts[0].routes[0].{field}"
