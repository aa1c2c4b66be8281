import pytest

from proxy.config.errors import ConfigError
from tests.unit.proxy.router.helpers import req, table


def _vh(name, *domains):
    return {
        "name": name,
        "domains": list(domains),
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": name}}],
    }


@pytest.fixture
def t():
    return table(
        {
            "virtual_hosts": [
                _vh("default", "*"),
                _vh("exact", "www.foo.com"),
                _vh("exact_port", "www.foo.com:8080"),
                _vh("suffix", "*.foo.com"),
                _vh("longer_suffix", "*.bar.foo.com"),
                _vh("prefix", "foo.*"),
                _vh("longer_prefix", "foo.bar.*"),
                _vh("dash_suffix", "*-baz.com"),
            ]
        }
    )


@pytest.mark.parametrize(
    "host,expected",
    [
        ("www.foo.com", "exact"),
        ("WWW.Foo.COM", "exact"),  # host matching is case-insensitive
        ("www.foo.com:8080", "exact_port"),
        ("www.foo.com:9090", "default"),  # the port is part of the host: no domain ends with ':9090'
        ("a.foo.com:9090", "default"),
        ("a.foo.com", "suffix"),
        ("x.bar.foo.com", "longer_suffix"),  # the longest suffix wins
        ("foo.example", "prefix"),
        ("foo.bar.example", "longer_prefix"),
        ("foo.com", "prefix"),  # '*.foo.com' needs at least one char before '.foo.com'; 'foo.*' matches
        ("foo.", "default"),  # a wildcard never matches an empty remainder
        ("qux-baz.com", "dash_suffix"),
        ("-baz.com", "default"),
        ("unknown.org", "default"),
        ("", "default"),
    ],
)
def test_virtual_host_precedence(t, host, expected):
    assert t.match(req(authority=host)).virtual_host.name == expected


def test_suffix_wins_over_prefix():
    t = table({"virtual_hosts": [_vh("prefix", "api.*"), _vh("suffix", "*.com")]})
    assert t.match(req(authority="api.com")).virtual_host.name == "suffix"


def test_port_in_host_only_matches_port_domains_unless_ignored():
    cfg = {"virtual_hosts": [_vh("exact", "svc")]}
    assert table(cfg).match(req(authority="svc:80")) is None
    assert (
        table({**cfg, "ignore_port_in_host_matching": True}).match(req(authority="svc:80")).virtual_host.name
        == "exact"
    )


def test_no_default_gives_no_route():
    t = table({"virtual_hosts": [_vh("exact", "a.com")]})
    assert t.match(req(authority="b.com")) is None


def test_duplicate_domain_is_rejected_with_path():
    with pytest.raises(ConfigError) as e:
        table({"virtual_hosts": [_vh("a", "x.com"), _vh("b", "X.com")]})
    assert e.value.path == "route_config.virtual_hosts[1].domains[0]"


def test_virtual_host_without_domains_is_rejected():
    with pytest.raises(ConfigError) as e:
        table({"virtual_hosts": [{"name": "a", "routes": []}]})
    assert e.value.path == "route_config.virtual_hosts[0].domains"
