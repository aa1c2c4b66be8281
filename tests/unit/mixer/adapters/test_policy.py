import pytest
from envoy.service.auth.v3 import external_auth_pb2

from mixer.adapters.policy import attribute, check
from mixer.config.model import parse


def req(principal="", ip="", path="/", host="", headers=None, extensions=None):
    r = external_auth_pb2.CheckRequest()
    a = r.attributes
    a.source.principal = principal
    a.source.address.socket_address.address = ip
    a.request.http.path = path
    a.request.http.host = host
    a.request.http.headers.update(headers or {})
    a.context_extensions.update(extensions or {})
    return r


def policy(rules: str):
    return parse(f"policy:\n  defaultValidDuration: 30s\n  rules:\n{rules}").policy


def test_no_rules_allows_with_default_validity():
    d = check(parse("").policy, req())
    assert d.allowed and d.validity.duration_s == 10 and d.validity.use_count == 10000 and d.referenced == ()


def test_denier_always_denies():
    d = check(policy("  - {name: nope, denier: {}}"), req())
    assert not d.allowed and d.rule == "nope" and d.status_code == 7 and d.http_status == 403


@pytest.mark.parametrize(
    "entry_type, entries, attr, value, listed",
    [
        ("STRINGS", ["spiffe://a"], "source.principal", "spiffe://a", True),
        ("STRINGS", ["spiffe://a"], "source.principal", "spiffe://b", False),
        ("CASE_INSENSITIVE_STRINGS", ["Jason"], "request.headers.end-user", "JASON", True),
        ("IP_ADDRESSES", ["10.0.0.0/8", "127.0.0.5"], "source.ip", "10.9.9.9", True),
        ("IP_ADDRESSES", ["10.0.0.0/8", "127.0.0.5"], "source.ip", "127.0.0.5", True),
        ("IP_ADDRESSES", ["10.0.0.0/8"], "source.ip", "11.0.0.1", False),
        ("REGEX", ["/api/v1/products/[0-9]+"], "request.path", "/api/v1/products/7", True),
        ("REGEX", ["/api/v1/products/[0-9]+"], "request.path", "/api/v1/products/7/reviews", False),
    ],
)
def test_list_deny_and_allow_modes(entry_type, entries, attr, value, listed):
    kw = {
        "source.principal": {"principal": value},
        "source.ip": {"ip": value},
        "request.path": {"path": value},
        "request.headers.end-user": {"headers": {"end-user": value}},
    }[attr]
    for mode in ("deny", "allow"):
        rules = f"  - name: r\n    list: {{attribute: {attr}, entryType: {entry_type}, entries: {entries}, mode: {mode}}}"
        d = check(policy(rules), req(**kw))
        assert d.allowed == (listed if mode == "allow" else not listed)
        assert d.referenced == (attr,)


def test_missing_attribute_is_not_listed():
    rules = "  - name: r\n    list: {attribute: source.principal, entries: [x], mode: allow}"
    assert not check(policy(rules), req(principal="")).allowed  # allow-list: absent means not allowed


def test_match_skips_rule_and_validity_is_the_tightest_evaluated():
    rules = """  - name: only-details
    match: {request.host: details}
    denier: {}
  - name: short
    list: {attribute: source.ip, entries: [1.1.1.1]}
    validDuration: 2s
    validUseCount: 3
"""
    d = check(policy(rules), req(host="productpage:9080", ip="127.0.0.1"))
    assert d.allowed and d.validity.duration_s == 2 and d.validity.use_count == 3
    assert d.referenced == ("request.host", "source.ip")
    d = check(policy(rules), req(host="details:9080"))
    assert not d.allowed and d.rule == "only-details" and d.validity.duration_s == 30


def test_attribute_vocabulary():
    r = req(principal="p", ip="1.2.3.4", path="/a?b=1", host="[::1]:80", extensions={"k": "v"})
    r.attributes.request.http.header_map.headers.add(key="X-Raw", raw_value=b"raw")
    assert attribute(r, "request.path") == "/a?b=1"
    assert attribute(r, "request.host") == "::1"
    assert attribute(r, "context_extensions.k") == "v"
    assert attribute(r, "request.headers.x-raw") == "raw"
    assert attribute(r, "source.port") is None
