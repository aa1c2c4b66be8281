"""envoy.filters.http.rbac: decisions, 403 replies, stats, shadow rules and config errors by path.

Principals read the peer's TLS facts from ``conn.ssl`` (``peer_uri_sans``); these tests use fake TLS
facts (a SimpleNamespace) since the unit under test is the matching, not the handshake.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from google.protobuf import json_format

from proxy.config.errors import ConfigError
from proxy.filters.http.base import CONTINUE, STOP
from proxy.filters.http.rbac import RbacConfig, RbacFilter
from tests.unit.proxy.filters.http.fakes import FakeStream, context, request

SPIFFE_PP = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"


def config(d: dict) -> RbacConfig:
    ctx, _ = context()
    return RbacConfig(json_format.ParseDict(d, rbac_pb2.RBAC()), ctx, "rbac")


def rules(action: str, **policies) -> dict:
    return {"rules": {"action": action, "policies": policies}}


def policy(permissions=None, principals=None) -> dict:
    return {"permissions": permissions or [{"any": True}], "principals": principals or [{"any": True}]}


def stream(
    path="/", peer_uris=None, remote="10.0.0.9", local=("10.1.0.5", 9080), sni="", xff_client=None, **hdrs
):
    s = FakeStream(request(path, **hdrs), route=None)
    ssl = None if peer_uris is None else SimpleNamespace(peer_uri_sans=tuple(peer_uris))
    s.connection = SimpleNamespace(
        remote_address=(remote, 4242),
        local_address=local,
        ssl=ssl,
        requested_server_name=sni,
        original_dst=None,
    )
    if xff_client is not None:
        s.stream_info.downstream_remote_address = (xff_client, 0)
    else:
        s.stream_info.downstream_remote_address = (remote, 4242)
    return s


async def run(cfg: RbacConfig, s: FakeStream):
    status = await RbacFilter(cfg).on_request_headers(s, True)
    return status


def counter(cfg, name):
    c = cfg.ctx.stats.counters.get(f"http.ingress.rbac.{name}")
    return c.value if c else 0


async def test_allow_policy_without_match_denies_with_403_body_and_details():
    cfg = config(rules("ALLOW", only_get=policy([{"header": {"name": ":method", "exact_match": "GET"}}])))
    s = stream(method="POST")
    assert await run(cfg, s) is STOP
    status, body, _flag, details, _ = s.local_reply
    assert (status, body, details) == (403, b"RBAC: access denied", "rbac_access_denied_matched_policy[none]")
    assert counter(cfg, "denied") == 1
    ok = stream(method="GET")
    assert await run(cfg, ok) is CONTINUE and ok.local_reply is None
    assert counter(cfg, "allowed") == 1


async def test_deny_by_path_prefix_names_the_policy():
    cfg = config(rules("DENY", deny_admin=policy([{"url_path": {"path": {"prefix": "/admin"}}}])))
    s = stream("/admin/users?x=1")
    assert await run(cfg, s) is STOP
    assert s.local_reply[3] == "rbac_access_denied_matched_policy[deny_admin]"
    assert await run(cfg, stream("/public/admin")) is CONTINUE


async def test_url_path_ignores_query_and_fragment_but_header_path_sees_query():
    cfg = config(rules("DENY", p=policy([{"url_path": {"path": {"exact": "/admin"}}}])))
    assert await run(cfg, stream("/admin?x")) is STOP
    assert await run(cfg, stream("/admin#frag")) is STOP
    hdr = config(rules("DENY", p=policy([{"header": {"name": ":path", "exact_match": "/admin"}}])))
    assert await run(hdr, stream("/admin?x")) is CONTINUE


async def test_url_path_ignore_case_suffix_contains_and_regex():
    cfg = config(
        rules(
            "ALLOW",
            p=policy(
                [
                    {"url_path": {"path": {"suffix": ".JSON", "ignore_case": True}}},
                    {"url_path": {"path": {"contains": "/v2/"}}},
                    {"url_path": {"path": {"safe_regex": {"regex": "/items/[0-9]+"}}}},
                ]
            ),
        )
    )
    for ok in ("/a/b.json", "/api/v2/x", "/items/42"):
        assert await run(cfg, stream(ok)) is CONTINUE, ok
    for bad in ("/a/b.xml", "/api/v3/x", "/items/4x"):
        assert await run(cfg, stream(bad)) is STOP, bad


async def test_allow_by_principal_uses_the_peer_uri_san():
    cfg = config(
        rules("ALLOW", pp=policy(principals=[{"authenticated": {"principal_name": {"exact": SPIFFE_PP}}}]))
    )
    assert await run(cfg, stream(peer_uris=[SPIFFE_PP])) is CONTINUE
    assert await run(cfg, stream(peer_uris=["spiffe://cluster.local/ns/default/sa/other"])) is STOP
    assert await run(cfg, stream(peer_uris=None)) is STOP  # plaintext has no identity


async def test_namespace_principal_as_istio_writes_it():
    # Istio's `namespaces: ["foo"]` -> principal_name safe_regex ".*/ns/foo/.*"
    ns = {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/foo/.*"}}}}
    cfg = config(rules("ALLOW", ns=policy(principals=[ns])))
    assert await run(cfg, stream(peer_uris=["spiffe://cluster.local/ns/foo/sa/a"])) is CONTINUE
    assert await run(cfg, stream(peer_uris=["spiffe://cluster.local/ns/bar/sa/a"])) is STOP


async def test_authenticated_without_name_means_any_tls_peer():
    cfg = config(rules("ALLOW", tls=policy(principals=[{"authenticated": {}}])))
    assert await run(cfg, stream(peer_uris=[])) is CONTINUE
    assert await run(cfg, stream()) is STOP


async def test_when_header_condition_and_and_ids():
    cond = {
        "and_ids": {
            "ids": [
                {"header": {"name": "x-token", "string_match": {"exact": "admin"}}},
                {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}},
            ]
        }
    }
    cfg = config(rules("ALLOW", w=policy(principals=[cond])))
    assert await run(cfg, stream(x_token="admin")) is CONTINUE
    assert await run(cfg, stream(x_token="guest")) is STOP
    assert await run(cfg, stream(x_token="admin", remote="192.168.1.1")) is STOP


async def test_remote_ip_uses_the_xff_derived_client_and_direct_the_socket_peer():
    remote = config(
        rules("DENY", r=policy(principals=[{"remote_ip": {"address_prefix": "1.2.3.4", "prefix_len": 32}}]))
    )
    assert await run(remote, stream(xff_client="1.2.3.4")) is STOP
    assert await run(remote, stream(remote="1.2.3.4", xff_client="5.6.7.8")) is CONTINUE
    direct = config(
        rules(
            "DENY",
            d=policy(principals=[{"direct_remote_ip": {"address_prefix": "1.2.3.4", "prefix_len": 32}}]),
        )
    )
    assert await run(direct, stream(remote="1.2.3.4", xff_client="5.6.7.8")) is STOP


async def test_not_id_or_ids_and_not_rule():
    cfg = config(
        rules(
            "ALLOW",
            p=policy(
                permissions=[{"not_rule": {"url_path": {"path": {"prefix": "/private"}}}}],
                principals=[
                    {"not_id": {"or_ids": {"ids": [{"header": {"name": "x-bad", "present_match": True}}]}}}
                ],
            ),
        )
    )
    assert await run(cfg, stream("/ok")) is CONTINUE
    assert await run(cfg, stream("/private/x")) is STOP
    assert await run(cfg, stream("/ok", x_bad="1")) is STOP


async def test_destination_ip_port_and_sni():
    cfg = config(
        rules(
            "ALLOW",
            p=policy(
                permissions=[
                    {
                        "and_rules": {
                            "rules": [
                                {"destination_ip": {"address_prefix": "10.1.0.0", "prefix_len": 16}},
                                {"destination_port": 9080},
                                {"requested_server_name": {"prefix": "outbound_.9080"}},
                            ]
                        }
                    }
                ]
            ),
        )
    )
    assert await run(cfg, stream(sni="outbound_.9080_._.reviews")) is CONTINUE
    assert await run(cfg, stream(sni="outbound_.9080_._.reviews", local=("10.1.0.5", 9081))) is STOP
    assert await run(cfg, stream(sni="x", local=("10.1.0.5", 9080))) is STOP
    assert await run(cfg, stream(sni="outbound_.9080", local=("10.2.0.5", 9080))) is STOP


async def test_destination_ip_prefers_the_original_destination():
    cfg = config(
        rules("DENY", p=policy([{"destination_ip": {"address_prefix": "198.18.0.7", "prefix_len": 32}}]))
    )
    s = stream()
    s.connection.original_dst = ("198.18.0.7", 80)
    assert await run(cfg, s) is STOP


async def test_policies_need_a_permission_and_a_principal_match():
    cfg = config(
        rules(
            "ALLOW",
            p=policy(
                [{"url_path": {"path": {"prefix": "/reviews"}}}],
                [{"authenticated": {"principal_name": {"exact": SPIFFE_PP}}}],
            ),
        )
    )
    assert await run(cfg, stream("/reviews/1", peer_uris=[SPIFFE_PP])) is CONTINUE
    assert await run(cfg, stream("/ratings/1", peer_uris=[SPIFFE_PP])) is STOP
    assert await run(cfg, stream("/reviews/1")) is STOP


async def test_empty_policy_sets():
    assert await run(config(rules("ALLOW")), stream()) is STOP
    assert await run(config(rules("DENY")), stream()) is CONTINUE
    assert await run(config({}), stream()) is CONTINUE  # no rules: the filter does nothing


async def test_log_action_never_denies_and_counts():
    cfg = config(rules("LOG", p=policy([{"url_path": {"path": {"exact": "/x"}}}])))
    assert await run(cfg, stream("/x")) is CONTINUE
    assert await run(cfg, stream("/y")) is CONTINUE
    assert counter(cfg, "logged") == 1 and counter(cfg, "not_logged") == 1


async def test_shadow_rules_count_but_do_not_enforce():
    cfg = config(
        {
            "shadow_rules": {
                "action": "DENY",
                "policies": {"s": policy([{"url_path": {"path": {"prefix": "/a"}}}])},
            },
            "shadow_rules_stat_prefix": "istio_dry_run_allow_",
        }
    )
    s = stream("/a")
    assert await run(cfg, s) is CONTINUE and s.local_reply is None
    assert counter(cfg, "istio_dry_run_allow_shadow_denied") == 1
    assert s.stream_info.filter_state["envoy.filters.http.rbac"] == {
        "shadow_engine_result": "denied",
        "shadow_effective_policy_id": "s",
    }
    await run(cfg, stream("/b"))
    assert counter(cfg, "istio_dry_run_allow_shadow_allowed") == 1


async def test_rules_stat_prefix():
    cfg = config({**rules("DENY"), "rules_stat_prefix": "pfx_"})
    await run(cfg, stream())
    assert counter(cfg, "pfx_allowed") == 1


async def test_first_matching_policy_by_name_is_reported():
    cfg = config(rules("DENY", zz=policy(), aa=policy()))
    s = stream()
    await run(cfg, s)
    assert s.local_reply[3] == "rbac_access_denied_matched_policy[aa]"


@pytest.mark.parametrize(
    "d,path",
    [
        ({"matcher": {}}, "rbac.matcher"),
        ({"track_per_rule_stats": True}, "rbac.track_per_rule_stats"),
        (
            rules(
                "ALLOW",
                p=policy(
                    [{"metadata": {"filter": "f", "path": [{"key": "k"}], "value": {"present_match": True}}}]
                ),
            ),
            "rbac.rules.policies[p].permissions[0].metadata",
        ),
        (
            rules(
                "ALLOW", p=policy(principals=[{"filter_state": {"key": "k", "string_match": {"exact": "v"}}}])
            ),
            "rbac.rules.policies[p].principals[0].filter_state",
        ),
        (
            rules(
                "ALLOW",
                p={
                    "permissions": [{"any": True}],
                    "principals": [{"any": True}],
                    "condition": {"const_expr": {"bool_value": True}},
                },
            ),
            "rbac.rules.policies[p].condition",
        ),
        (rules("ALLOW", p={"permissions": [{"any": True}]}), "rbac.rules.policies[p].principals"),
        (
            rules("ALLOW", p=policy([{"and_rules": {"rules": [{"any": True}, {}]}}])),
            "rbac.rules.policies[p].permissions[0].and_rules.rules[1]",
        ),
        (
            rules("ALLOW", p=policy([{"destination_ip": {"address_prefix": "not-an-ip", "prefix_len": 8}}])),
            "rbac.rules.policies[p].permissions[0].destination_ip",
        ),
        (
            rules("ALLOW", p=policy([{"url_path": {"path": {"safe_regex": {"regex": "("}}}}])),
            "rbac.rules.policies[p].permissions[0].url_path.path.safe_regex.regex",
        ),
        ({"rules": {"action": "ALLOW", "audit_logging_options": {}}}, "rbac.rules.audit_logging_options"),
    ],
)
def test_unsupported_or_invalid_config_is_rejected_by_path(d, path):
    with pytest.raises(ConfigError) as e:
        config(d)
    assert e.value.path == path


def test_per_route_rbac_is_rejected_clearly():
    from envoy.config.route.v3 import route_pb2

    from proxy.router import compile_route_configuration

    rc = json_format.ParseDict(
        {
            "virtual_hosts": [
                {
                    "name": "vh",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": "c"},
                            "typed_per_filter_config": {
                                "envoy.filters.http.rbac": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
                                }
                            },
                        }
                    ],
                }
            ]
        },
        route_pb2.RouteConfiguration(),
    )
    with pytest.raises(ConfigError) as e:
        compile_route_configuration(rc, "rc")
    assert "RBACPerRoute" in str(e.value)
