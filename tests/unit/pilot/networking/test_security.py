"""Issue 6, pilot side: PeerAuthentication, auto mTLS and AuthorizationPolicy in the generated config.

RBAC decisions are checked by running the proxy's own RBAC engine on the generated rules, so each test
asserts what a caller would see (allowed or denied), not only the shape of the config."""

from __future__ import annotations

from envoy.config.rbac.v3 import rbac_pb2

from pilot.config.semantic import check
from pilot.model.config import ConfigSnapshot
from pilot.model.service import Endpoint, RegistrySnapshot
from pilot.networking import CLUSTER_TYPE, LISTENER_TYPE, generate, translation_warnings
from pilot.networking.authz import rbac_configs
from pilot.networking.index import index_of
from pilot.networking.mtls import effective_mtls
from pilot.networking.protos import parse, to_dict
from proxy.core.headers import Headers
from proxy.filters.http.rbac.engine import CheckContext, PeerIdentity, RbacEngine
from tests.unit.pilot.networking.bookinfo import config, fqdn, push, registry, sidecar

SEC = "security.istio.io"
REVIEWS = fqdn("reviews")
PRODUCTPAGE_ID = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"


def pa(name, spec, namespace="default"):
    return config("PeerAuthentication", name, spec, namespace, SEC)


def ap(name, spec, namespace="default"):
    return config("AuthorizationPolicy", name, spec, namespace, SEC)


def listeners(proxy, p):
    return {m.name: to_dict(m) for m in generate(LISTENER_TYPE, proxy, p)}


def clusters(proxy, p):
    return {m.name: to_dict(m) for m in generate(CLUSTER_TYPE, proxy, p)}


def inbound_chains(proxy, p, port=9080):
    vi = listeners(proxy, p)["virtualInbound"]
    return [c for c in vi["filter_chains"] if c["filter_chain_match"].get("destination_port") == port], vi


def reviews_v1():
    return sidecar("reviews", "v1", "127.0.0.12")


# ------------------------------------------------------------------------------- PeerAuthentication


def mode_of(p, proxy=None):
    proxy = proxy or reviews_v1()
    return effective_mtls(index_of(p), proxy.namespace, proxy.labels)


def test_no_policy_is_permissive_with_tls_and_plaintext_chains():
    chains, vi = inbound_chains(reviews_v1(), push())
    assert [c["filter_chain_match"].get("transport_protocol") for c in chains] == ["tls", "raw_buffer"]
    assert "transport_socket" in chains[0] and "transport_socket" not in chains[1]
    assert [f["name"] for f in vi["listener_filters"]] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
    ]
    tls = chains[0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    common = tls["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    validation = common["combined_validation_context"]["validation_context_sds_secret_config"]
    assert validation["name"] == "ROOTCA"
    assert validation["sds_config"]["api_config_source"]["grpc_services"][0]["envoy_grpc"] == {
        "cluster_name": "sds-grpc"
    }


def test_mesh_namespace_and_workload_levels_in_order():
    mesh = pa("default", {"mtls": {"mode": "STRICT"}}, "istio-system")
    assert mode_of(push(configs=[mesh])).mode == "STRICT"
    ns = pa("ns", {"mtls": {"mode": "PERMISSIVE"}})
    assert mode_of(push(configs=[mesh, ns])).mode == "PERMISSIVE"
    wl = pa("reviews", {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "DISABLE"}})
    assert mode_of(push(configs=[mesh, ns, wl])).mode == "DISABLE"
    # the workload policy selects reviews only
    assert mode_of(push(configs=[mesh, ns, wl]), sidecar("ratings", "v1", "127.0.0.15")).mode == "PERMISSIVE"
    # UNSET inherits from the level above
    unset = pa("ns", {"mtls": {"mode": "UNSET"}})
    assert mode_of(push(configs=[mesh, unset])).mode == "STRICT"
    # a policy in another namespace does not apply
    other = pa("other", {"mtls": {"mode": "DISABLE"}}, "other")
    assert mode_of(push(configs=[mesh, other])).mode == "STRICT"


def test_strict_is_one_mtls_chain_and_the_passthrough_needs_mtls_too():
    p = push(configs=[pa("default", {"mtls": {"mode": "STRICT"}}, "istio-system")])
    chains, vi = inbound_chains(reviews_v1(), p)
    assert len(chains) == 1
    assert "transport_protocol" not in chains[0]["filter_chain_match"]  # plaintext fails the handshake
    assert chains[0]["transport_socket"]["typed_config"]["require_client_certificate"] is True
    assert "transport_socket" in vi["default_filter_chain"]


def test_disable_is_plaintext():
    p = push(configs=[pa("ns", {"mtls": {"mode": "DISABLE"}})])
    chains, vi = inbound_chains(reviews_v1(), p)
    assert len(chains) == 1 and "transport_socket" not in chains[0]
    assert "transport_socket" not in vi["default_filter_chain"]


def test_port_level_mtls_overrides_the_workload_mode_and_unset_inherits():
    reg = registry()
    extra = (Endpoint(REVIEWS, 9443, "127.0.0.12", 9443, labels={"app": "reviews", "version": "v1"}),)
    reg = RegistrySnapshot(reg.services, reg.endpoints + extra, 2)
    wl = pa(
        "reviews",
        {
            "selector": {"matchLabels": {"app": "reviews"}},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {"9080": {"mode": "DISABLE"}, "9443": {"mode": "UNSET"}},
        },
    )
    p = push(configs=[wl], reg=reg)
    assert mode_of(p).mode_for(9080) == "DISABLE"
    assert mode_of(p).mode_for(9443) == "STRICT"
    chains, _ = inbound_chains(reviews_v1(), p, 9080)
    assert len(chains) == 1 and "transport_socket" not in chains[0]


def test_port_level_mtls_without_selector_is_reported_and_ignored():
    ns = pa("ns", {"mtls": {"mode": "STRICT"}, "portLevelMtls": {"9080": {"mode": "DISABLE"}}})
    p = push(configs=[ns])
    assert mode_of(p).mode_for(9080) == "STRICT"
    assert any("portLevelMtls: ignored" in w for w in translation_warnings(p))


def test_inbound_hcm_forwards_client_cert_and_normalizes_paths():
    chains, _ = inbound_chains(reviews_v1(), push())
    hcm = chains[0]["filters"][0]["typed_config"]
    assert hcm["forward_client_cert_details"] == "APPEND_FORWARD"
    assert hcm["set_current_client_cert_details"] == {"subject": True, "dns": True, "uri": True}
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] == "UNESCAPE_AND_FORWARD"


# ---------------------------------------------------------------------------------------- auto mTLS


def upstream_tls(cluster):
    return cluster.get("transport_socket", {}).get("typed_config")


def test_auto_mtls_to_a_sidecar_destination():
    cs = clusters(sidecar(), push("destination-rule-all.yaml"))
    tls = upstream_tls(cs[f"outbound|9080|v2|{REVIEWS}"])
    assert tls["sni"] == f"outbound_.9080_.v2_.{REVIEWS}"
    common = tls["common_tls_context"]
    assert common["alpn_protocols"] == ["istio-peer-exchange", "istio"]
    sans = common["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"
    ]
    assert sans == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}}
    ]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "default"


def test_no_sidecar_or_mesh_external_or_disabled_destination_is_plaintext():
    reg = registry()
    eps = tuple(
        Endpoint(e.service, e.service_port, e.address, e.port, e.labels, e.service_account, namespace=e.namespace,
                 tls_mode="disabled" if e.service == fqdn("ratings") else "istio")
        for e in reg.endpoints
    )  # fmt: skip
    cs = clusters(sidecar(), push(reg=RegistrySnapshot(reg.services, eps, 2)))
    assert upstream_tls(cs[f"outbound|9080||{fqdn('ratings')}"]) is None
    assert upstream_tls(cs[f"outbound|9080||{fqdn('details')}"]) is not None
    # the destination's PeerAuthentication DISABLE turns auto mTLS off (Istio)
    off = pa("details", {"selector": {"matchLabels": {"app": "details"}}, "mtls": {"mode": "DISABLE"}})
    cs = clusters(sidecar(), push(configs=[off]))
    assert upstream_tls(cs[f"outbound|9080||{fqdn('details')}"]) is None


def test_destination_rule_tls_overrides_auto_mtls():
    def dr(tls):
        return config("DestinationRule", "reviews", {"host": "reviews", "trafficPolicy": {"tls": tls}})

    cs = clusters(sidecar(), push(configs=[dr({"mode": "DISABLE"})]))
    assert upstream_tls(cs[f"outbound|9080||{REVIEWS}"]) is None
    simple = {"mode": "SIMPLE", "caCertificates": "/etc/ca.pem", "sni": "reviews.example"}
    tls = upstream_tls(clusters(sidecar(), push(configs=[dr(simple)]))[f"outbound|9080||{REVIEWS}"])
    assert tls["sni"] == "reviews.example"
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {"filename": "/etc/ca.pem"}
    assert "tls_certificate_sds_secret_configs" not in tls["common_tls_context"]
    mutual = {"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem"}
    tls = upstream_tls(clusters(sidecar(), push(configs=[dr(mutual)]))[f"outbound|9080||{REVIEWS}"])
    assert tls["common_tls_context"]["tls_certificates"][0]["private_key"] == {"filename": "/k.pem"}
    # ISTIO_MUTUAL to a destination without a sidecar: the rule wins
    reg = registry()
    eps = tuple(
        Endpoint(e.service, e.service_port, e.address, e.port, e.labels, e.service_account,
                 namespace=e.namespace, tls_mode="disabled")
        for e in reg.endpoints
    )  # fmt: skip
    p = push(configs=[dr({"mode": "ISTIO_MUTUAL"})], reg=RegistrySnapshot(reg.services, eps, 2))
    assert upstream_tls(clusters(sidecar(), p)[f"outbound|9080||{REVIEWS}"])["sni"].startswith(
        "outbound_.9080_"
    )


# ------------------------------------------------------------------------------- AuthorizationPolicy


def engines(p, proxy=None, tcp=False):
    proxy = proxy or reviews_v1()
    return [
        (action, RbacEngine(parse(rbac_pb2.RBAC, rules), action))
        for action, rules in rbac_configs(index_of(p), proxy.namespace, proxy.labels, tcp=tcp)
    ]


def allowed(p, *, path="/", method="GET", peer=PRODUCTPAGE_ID, headers=(), proxy=None, port=9080) -> bool:
    """Istio's evaluation over the generated filters: each RBAC filter in order may deny."""
    h = Headers([(":path", path), (":method", method), (":authority", "reviews:9080"), *headers])
    ctx = CheckContext(
        direct_remote_ip="127.0.0.10",
        remote_ip="127.0.0.10",
        local_ip="127.0.0.12",
        local_port=port,
        peer=PeerIdentity(uri_sans=(peer,)) if peer else None,
        headers=h,
    )
    return all(engine.evaluate(ctx).allowed for _, engine in engines(p, proxy))


def test_no_policy_allows_everything_and_no_filter_is_emitted():
    p = push()
    assert engines(p) == []
    assert allowed(p, peer=None)


def test_allow_by_principal():
    rule = {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]}
    p = push(configs=[ap("reviews", {"selector": {"matchLabels": {"app": "reviews"}}, "rules": [rule]})])
    assert allowed(p)
    assert not allowed(p, peer="spiffe://cluster.local/ns/default/sa/bookinfo-ratings")
    assert not allowed(p, peer=None)  # plaintext has no principal
    # the selector does not pick ratings: default allow there
    assert allowed(p, peer=None, proxy=sidecar("ratings", "v1", "127.0.0.15"))
    # the filter sits in the inbound HCM before the router
    chains, _ = inbound_chains(reviews_v1(), p)
    names = [f["name"] for f in chains[0]["filters"][0]["typed_config"]["http_filters"]]
    assert names == ["envoy.filters.http.rbac", "envoy.filters.http.fault", "envoy.filters.http.router"]


def test_deny_by_path_prefix_wins_over_allow():
    deny = ap("deny-admin", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]})
    allow_all = ap("allow-all", {"rules": [{}]})
    p = push(configs=[deny, allow_all])
    assert [a for a, _ in engines(p)] == ["DENY", "ALLOW"]
    assert not allowed(p, path="/admin")
    assert not allowed(p, path="/admin/users?x=1")
    assert allowed(p, path="/reviews/1")
    assert allowed(p, path="/public/admin")


def test_allow_by_namespace_and_suffix_paths():
    rule = {
        "from": [{"source": {"namespaces": ["default"]}}],
        "to": [{"operation": {"methods": ["GET"], "paths": ["*.html"]}}],
    }
    p = push(configs=[ap("ns", {"rules": [rule]})])
    assert allowed(p, path="/index.html")
    assert not allowed(p, path="/index.html", method="POST")
    assert not allowed(p, path="/index.json")
    assert not allowed(p, path="/index.html", peer="spiffe://cluster.local/ns/other/sa/x")


def test_when_on_a_request_header():
    rule = {"when": [{"key": "request.headers[end-user]", "values": ["jason"]}]}
    p = push(configs=[ap("jason", {"rules": [rule]})])
    assert allowed(p, headers=[("end-user", "jason")])
    assert not allowed(p, headers=[("end-user", "bob")])
    assert not allowed(p)


def test_not_values_and_source_ip_conditions():
    rule = {
        "from": [{"source": {"notPrincipals": ["cluster.local/ns/default/sa/bookinfo-ratings"]}}],
        "when": [
            {"key": "source.ip", "values": ["127.0.0.0/24"]},
            {"key": "destination.port", "notValues": ["9443"]},
        ],
    }
    p = push(configs=[ap("mixed", {"rules": [rule]})])
    assert allowed(p)
    assert not allowed(p, peer="spiffe://cluster.local/ns/default/sa/bookinfo-ratings")
    assert not allowed(p, port=9443)


def test_allow_policy_without_rules_denies_everything():
    p = push(configs=[ap("deny-all", {})])
    assert [a for a, _ in engines(p)] == ["ALLOW"]
    assert not allowed(p)
    assert not allowed(p, peer=None)


def test_mesh_wide_policy_from_the_root_namespace():
    p = push(configs=[ap("deny-all", {}, "istio-system")])
    assert not allowed(p)
    assert not allowed(p, proxy=sidecar("ratings", "v1", "127.0.0.15"))


def test_audit_is_log_only():
    p = push(
        configs=[ap("audit", {"action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]})]
    )
    assert [e.action for _, e in engines(p)] == [rbac_pb2.RBAC.LOG]
    assert allowed(p, path="/x")


def test_custom_is_accepted_and_reported_not_enforced():
    custom = ap("ext", {"action": "CUSTOM", "provider": {"name": "mixer"}, "rules": [{}]})
    p = push(configs=[custom])
    assert engines(p) == [] and allowed(p)
    assert any("action CUSTOM" in w and "not enforced" in w for w in translation_warnings(p))
    snap = ConfigSnapshot({custom.key: custom}, 1)
    problems = check(snap, [custom.key])
    assert [(x.level, x.path) for x in problems] == [("warning", "spec.action")]


def test_unsupported_conditions_fail_closed_and_are_reported():
    jwt = {"when": [{"key": "request.auth.claims[groups]", "values": ["admin"]}]}
    p = push(configs=[ap("jwt", {"rules": [jwt]})])
    assert not allowed(p)  # the ALLOW rule is dropped: allows nothing
    assert any("request.auth.claims[groups]" in w and "dropped" in w for w in translation_warnings(p))
    deny = ap("deny", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/x"]}}], **jwt}]})
    p = push(configs=[deny])
    assert not allowed(p, path="/x")  # the DENY rule only loses the condition: denies more
    assert allowed(p, path="/y")


def test_http_only_fields_on_tcp_ports():
    allow = ap("a", {"rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]})
    deny = ap("d", {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]})
    ((action, rules),) = rbac_configs(
        index_of(push(configs=[allow])), "default", {"app": "reviews"}, tcp=True
    )
    assert (action, rules["policies"]) == ("ALLOW", {})  # dropped: a TCP caller is not allowed by a path
    ((action, rules),) = rbac_configs(index_of(push(configs=[deny])), "default", {"app": "reviews"}, tcp=True)
    assert rules["policies"]["ns[default]-policy[d]-rule[0]"]["permissions"] == [{"any": True}]


def test_unknown_when_key_and_bad_ip_block_are_errors():
    bad = ap(
        "bad",
        {
            "rules": [
                {
                    "from": [{"source": {"ipBlocks": ["10.0.0.300"]}}],
                    "when": [{"key": "request.colour", "values": ["blue"]}],
                }
            ]
        },
    )
    problems = check(ConfigSnapshot({bad.key: bad}, 1), [bad.key])
    assert sorted((x.level, x.path) for x in problems) == [
        ("error", "spec.rules[0].from[0].source.ipBlocks[0]"),
        ("error", "spec.rules[0].when[0].key"),
    ]


def test_translated_kinds_no_longer_warn_not_translated():
    allow = ap("a", {"rules": [{}]})
    peer = pa("p", {"mtls": {"mode": "STRICT"}})
    snap = ConfigSnapshot({allow.key: allow, peer.key: peer}, 1)
    assert check(snap, [allow.key, peer.key]) == []


def test_tcp_port_gets_network_rbac_before_tcp_proxy():
    from pilot.model.service import Port, Service

    db = Service(fqdn("mongodb"), "default", (Port("tcp", 27017, "TCP"),))
    ep = Endpoint(fqdn("mongodb"), 27017, "127.0.0.16", 27017, labels={"app": "mongodb"}, namespace="default")
    reg = RegistrySnapshot((*registry().services, db), (*registry().endpoints, ep), 2)
    p = push(
        configs=[
            ap("deny", {"action": "DENY", "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]})
        ],
        reg=reg,
    )
    chains, _ = inbound_chains(sidecar("mongodb", "v1", "127.0.0.16"), p, 27017)
    assert [f["name"] for f in chains[0]["filters"]] == [
        "envoy.filters.network.rbac",
        "envoy.filters.network.tcp_proxy",
    ]
    assert chains[0]["filters"][0]["typed_config"]["stat_prefix"] == "tcp."
