"""Issue 7, pilot side: mesh extension providers (mixer) wired into every sidecar and gateway, CUSTOM
authorization as ext_authz, and Istio's EnvoyFilter rate-limit sample; everything compiled by the
proxy's own config compilers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from pilot.config.parse import load_paths
from pilot.model.mesh import MIXER_HOST, MeshConfig, MeshConfigError, parse_mesh_config, with_mixer
from pilot.model.service import Port, RegistrySnapshot, Service
from pilot.networking import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, generate, translation_warnings
from pilot.networking.protos import to_dict
from tests.unit.pilot.networking.bookinfo import config, push, registry, router, sidecar
from tests.unit.pilot.networking.test_proxy_accepts import check_all

SEC = "security.istio.io"
RATELIMIT_SAMPLE = Path("/work/shared/istio-samples/bookinfo/productpage_envoy_ratelimit.yaml")
if not RATELIMIT_SAMPLE.exists():
    RATELIMIT_SAMPLE = (
        Path(__file__).resolve().parents[4].parent
        / "shared/istio-samples/bookinfo/productpage_envoy_ratelimit.yaml"
    )
MIXER_CLUSTER = f"outbound|9091||{MIXER_HOST}"
MESH = with_mixer(MeshConfig(), "127.0.0.4")


def ratelimit_configs():
    result = load_paths([RATELIMIT_SAMPLE], default_namespace="default")
    assert result.ok, result.problems
    return result.configs


def listeners(proxy, p) -> list[dict]:
    return [to_dict(x) for x in generate(LISTENER_TYPE, proxy, p)]


def hcms(lst: dict) -> list[dict]:
    chains = [
        *lst.get("filter_chains", []),
        *([lst["default_filter_chain"]] if "default_filter_chain" in lst else []),
    ]
    return [
        f["typed_config"]
        for c in chains
        for f in c.get("filters", [])
        if f["name"] == "envoy.filters.network.http_connection_manager"
    ]


def tcp_proxies(lst: dict) -> list[dict]:
    chains = [
        *lst.get("filter_chains", []),
        *([lst["default_filter_chain"]] if "default_filter_chain" in lst else []),
    ]
    return [
        f["typed_config"]
        for c in chains
        for f in c.get("filters", [])
        if f["name"] == "envoy.filters.network.tcp_proxy"
    ]


def filter_names(hcm: dict) -> list[str]:
    return [f["name"] for f in hcm["http_filters"]]


def custom(name="ext", provider="mixer", rules=({},), ns="default", selector=None):
    spec = {"action": "CUSTOM", "provider": {"name": provider}, "rules": list(rules)}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return config("AuthorizationPolicy", name, spec, ns, SEC)


# ----------------------------------------------------------------------------- mesh config


def test_mesh_config_reads_istio_extension_providers_and_reports_unknown_fields():
    mesh = parse_mesh_config(
        yaml.safe_load(
            """
            trustDomain: example.org
            enableTracing: true
            extensionProviders:
            - name: mixer
              envoyExtAuthzGrpc: {service: istio-system/mixer.istio-system.svc.cluster.local, port: 9091,
                                  timeout: 250ms, failOpen: true, statusOnError: "503", includeRequestBodyInCheck: {}}
            - name: als
              envoyHttpAls: {service: mixer.istio-system.svc.cluster.local, port: 9091}
            - name: zipkin
              zipkin: {service: zipkin, port: 9411}
              envoyTcpAls: {service: mixer.istio-system.svc.cluster.local, port: 9091, logName: tcp}
            defaultProviders: {accessLogging: [als], metrics: [prometheus]}
            """
        )
    )
    authz = mesh.provider("mixer")
    assert (authz.service, authz.port, authz.timeout, authz.fail_open, authz.status_on_error) == (
        MIXER_HOST,
        9091,
        "0.25s",
        True,
        503,
    )
    assert mesh.provider("als").log_name == "http_envoy_accesslog"
    assert mesh.provider("zipkin").log_name == "tcp"
    assert [p.name for p in mesh.access_log_providers()] == ["als"]
    assert mesh.trust_domain == "example.org"
    w = "\n".join(mesh.warnings)
    for path in (
        "enableTracing",
        "extensionProviders[0].envoyExtAuthzGrpc.includeRequestBodyInCheck",
        "extensionProviders[2].zipkin",
        "defaultProviders.metrics",
    ):
        assert path in w


@pytest.mark.parametrize(
    "doc, path",
    [
        ({"extensionProviders": [{"name": "m", "envoyExtAuthzGrpc": {"service": "m", "port": 0}}]}, "port"),
        ({"extensionProviders": [{"name": "m", "envoyExtAuthzGrpc": {"port": 9091}}]}, "service"),
        (
            {
                "extensionProviders": [
                    {"name": "m", "envoyExtAuthzGrpc": {"service": "m", "port": 1, "timeout": "x"}}
                ]
            },
            "timeout",
        ),
        ({"defaultProviders": {"accessLogging": ["nope"]}}, "accessLogging[0]"),
        ({"extensionProviders": [{"name": "m", "zipkin": {}}]}, "no supported type"),
        ({"outboundTrafficPolicy": {"mode": "SOMETIMES"}}, "outboundTrafficPolicy.mode"),
    ],
)
def test_bad_mesh_config_is_a_clear_error(doc, path):
    with pytest.raises(MeshConfigError, match=path.replace("[", r"\[").replace("]", r"\]")):
        parse_mesh_config(doc)


def test_without_providers_nothing_changes():
    p0 = push("bookinfo-gateway.yaml")
    for proxy in (sidecar(), router()):
        for lst in listeners(proxy, p0):
            assert "envoy.access_loggers" not in json.dumps(lst)
            assert "istio.metadata_exchange" not in json.dumps(lst)
        assert MIXER_CLUSTER not in [c.name for c in generate(CLUSTER_TYPE, proxy, p0)]


# ----------------------------------------------------------------------------- telemetry


def test_every_sidecar_hcm_and_tcp_proxy_reports_to_the_als_provider_with_metadata_exchange_first():
    p = push("destination-rule-all.yaml", mesh=MESH)
    ls = {lst["name"]: lst for lst in listeners(sidecar("reviews", "v1", "127.0.0.12"), p)}
    seen_inbound = seen_outbound = seen_tcp = 0
    for name, lst in ls.items():
        for hcm in hcms(lst):
            assert filter_names(hcm)[0] == "istio.metadata_exchange"
            assert filter_names(hcm)[-1] == "envoy.filters.http.router"
            (log,) = hcm["access_log"]
            assert log["name"] == "envoy.access_loggers.http_grpc"
            common = log["typed_config"]["common_config"]
            assert common["grpc_service"]["envoy_grpc"]["cluster_name"] == MIXER_CLUSTER
            assert common["log_name"] == "http_envoy_accesslog"
            assert common["buffer_flush_interval"] == "1s" and common["transport_api_version"] == "V3"
            mx = hcm["http_filters"][0]["typed_config"]
            if name == "virtualInbound":
                seen_inbound += 1
                assert (
                    mx["downstream_discovery"] == [{"istio_headers": {}}] and "upstream_propagation" not in mx
                )
            else:
                seen_outbound += 1
                assert mx["upstream_propagation"] == [{"istio_headers": {"skip_external_clusters": True}}]
        for tcp in tcp_proxies(lst):
            seen_tcp += 1
            (log,) = tcp["access_log"]
            assert log["name"] == "envoy.access_loggers.tcp_grpc"
            assert log["typed_config"]["common_config"]["log_name"] == "tcp_envoy_accesslog"
    assert seen_inbound and seen_outbound and seen_tcp
    (mixer,) = [to_dict(c) for c in generate(CLUSTER_TYPE, sidecar(), p) if c.name == MIXER_CLUSTER]
    assert mixer["type"] == "STATIC"
    addr = mixer["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]
    assert (addr["address"], addr["port_value"]) == ("127.0.0.4", 9091)


def test_gateway_hcm_reports_too():
    p = push("bookinfo-gateway.yaml", mesh=MESH)
    (gw,) = listeners(router(), p)
    (hcm,) = hcms(gw)
    assert filter_names(hcm) == [
        "istio.metadata_exchange",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    assert hcm["access_log"][0]["name"] == "envoy.access_loggers.http_grpc"
    assert MIXER_CLUSTER in [c.name for c in generate(CLUSTER_TYPE, router(), p)]


def test_a_provider_service_in_the_registry_keeps_its_registry_cluster():
    base = registry()
    mixer_svc = Service(MIXER_HOST, "istio-system", (Port("grpc", 9091, "GRPC"),))
    reg = RegistrySnapshot((*base.services, mixer_svc), base.endpoints, base.version)
    p = push(mesh=MESH, reg=reg)
    clusters = {c.name: to_dict(c) for c in generate(CLUSTER_TYPE, sidecar(), p)}
    assert clusters[MIXER_CLUSTER]["type"] == "EDS"


def test_telemetry_output_is_accepted_by_the_proxy():
    p = push("destination-rule-all.yaml", "bookinfo-gateway.yaml", mesh=MESH)
    check_all(sidecar("productpage", "v1", "127.0.0.10"), p)
    check_all(sidecar("reviews", "v2", "127.0.0.13", INTERCEPTION_MODE="NONE"), p)
    check_all(router(), p)


# ----------------------------------------------------------------------------- CUSTOM


def test_custom_policy_becomes_ext_authz_before_rbac_on_inbound_only():
    # a mesh config file's provider wins over --mixer-address's default of the same name
    fail_open = with_mixer(
        parse_mesh_config(
            {
                "extensionProviders": [
                    {
                        "name": "mixer",
                        "envoyExtAuthzGrpc": {
                            "service": MIXER_HOST,
                            "port": 9091,
                            "failOpen": True,
                            "timeout": "0.5s",
                        },
                    }
                ]
            }
        ),
        "127.0.0.4",
    )
    deny = config(
        "AuthorizationPolicy",
        "deny-admin",
        {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]},
        "default",
        SEC,
    )
    p = push(configs=[custom(selector={"app": "reviews"}), deny], mesh=fail_open)
    ls = {lst["name"]: lst for lst in listeners(sidecar("reviews", "v1", "127.0.0.12"), p)}
    inbound = hcms(ls["virtualInbound"])
    assert inbound
    for hcm in inbound:
        assert filter_names(hcm) == [
            "istio.metadata_exchange",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.rbac",
            "envoy.filters.http.fault",
            "envoy.filters.http.router",
        ]
        ext = hcm["http_filters"][1]["typed_config"]
        assert ext["failure_mode_allow"] is True
        assert ext["grpc_service"] == {"envoy_grpc": {"cluster_name": MIXER_CLUSTER}, "timeout": "0.500s"}
    for name, lst in ls.items():
        if name != "virtualInbound":
            for hcm in hcms(lst):
                assert "envoy.filters.http.ext_authz" not in filter_names(hcm)
    # productpage is not selected
    for lst in listeners(sidecar("productpage", "v1", "127.0.0.10"), p):
        assert "envoy.filters.http.ext_authz" not in json.dumps(lst)
    check_all(sidecar("reviews", "v1", "127.0.0.12"), p)


def test_custom_fail_closed_by_default_and_on_gateways():
    p = push(
        "bookinfo-gateway.yaml",
        configs=[custom(ns="istio-system", selector={"istio": "ingressgateway"})],
        mesh=MESH,
    )
    (gw,) = listeners(router(), p)
    (hcm,) = hcms(gw)
    assert filter_names(hcm)[1] == "envoy.filters.http.ext_authz"
    assert hcm["http_filters"][1]["typed_config"].get("failure_mode_allow", False) is False
    check_all(router(), p)


def test_custom_problems_are_reported_by_path():
    p = push(
        configs=[
            custom("unknown", provider="opa"),
            custom("empty", rules=()),
            custom("by-source", rules=({"from": [{"source": {"namespaces": ["x"]}}]},)),
            custom("telemetry-provider", provider="mixer-telemetry"),
        ],
        mesh=MESH,
    )
    w = "\n".join(translation_warnings(p))
    assert (
        "AuthorizationPolicy/default/unknown: spec.provider.name: action CUSTOM: no mesh extension provider named 'opa'"
        in w
    )
    assert "AuthorizationPolicy/default/empty: spec.rules: empty" in w
    assert "AuthorizationPolicy/default/by-source: spec.rules: only to.operation.paths/methods can scope" in w
    assert (
        "AuthorizationPolicy/default/telemetry-provider: spec.provider.name: provider 'mixer-telemetry' is envoyHttpAls"
        in w
    )
    # "by-source" checks the whole workload; "empty" matches nothing
    (vi,) = [x for x in listeners(sidecar(), p) if x["name"] == "virtualInbound"]
    assert all(filter_names(h).count("envoy.filters.http.ext_authz") == 1 for h in hcms(vi))


# ----------------------------------------------------------------------------- EnvoyFilter


def test_ratelimit_sample_on_the_gateway():
    p = push("bookinfo-gateway.yaml", configs=ratelimit_configs(), mesh=MESH)
    (gw,) = listeners(router(), p)
    (hcm,) = hcms(gw)
    assert filter_names(hcm) == [
        "istio.metadata_exchange",
        "envoy.filters.http.fault",
        "envoy.ratelimit",
        "envoy.filters.http.router",
    ]
    rl = hcm["http_filters"][2]["typed_config"]
    assert rl["domain"] == "productpage-ratelimit" and rl["failure_mode_deny"] is True
    clusters = {c.name: to_dict(c) for c in generate(CLUSTER_TYPE, router(), p)}
    assert clusters["rate_limit_cluster"]["type"] == "STRICT_DNS"
    assert "http2_protocol_options" not in clusters["rate_limit_cluster"]
    (rc,) = [to_dict(r) for r in generate(ROUTE_TYPE, router(), p)]
    for vh in rc["virtual_hosts"]:
        assert vh["rate_limits"] == [
            {"actions": [{"request_headers": {"header_name": ":path", "descriptor_key": "PATH"}}]}
        ]
    assert any("http2_protocol_options: removed" in w for w in translation_warnings(p))
    check_all(router(), p)


def test_ratelimit_sample_does_not_touch_sidecars():
    p = push(configs=ratelimit_configs(), mesh=MESH)
    for lst in listeners(sidecar(), p):
        assert "ratelimit" not in json.dumps(lst)
    assert "rate_limit_cluster" not in [c.name for c in generate(CLUSTER_TYPE, sidecar(), p)]
    assert "rate_limits" not in json.dumps([to_dict(r) for r in generate(ROUTE_TYPE, sidecar(), p)])


def _ef(name, patches, ns="default", selector=None):
    spec = {"configPatches": patches}
    if selector:
        spec["workloadSelector"] = {"labels": selector}
    return config("EnvoyFilter", name, spec, ns)


def test_unsupported_patches_are_reported_by_path_and_not_applied():
    router_filter = {
        "listener": {
            "filterChain": {
                "filter": {
                    "name": "envoy.filters.network.http_connection_manager",
                    "subFilter": {"name": "envoy.filters.http.router"},
                }
            }
        }
    }
    p = push(
        configs=[
            _ef(
                "bad",
                [
                    {"applyTo": "LISTENER", "patch": {"operation": "ADD", "value": {"name": "x"}}},
                    {
                        "applyTo": "HTTP_FILTER",
                        "match": router_filter,
                        "patch": {"operation": "REPLACE", "value": {"name": "y"}},
                    },
                    {
                        "applyTo": "HTTP_FILTER",
                        "match": router_filter,
                        "patch": {"operation": "INSERT_BEFORE", "value": {"name": "z", "bogus": 1}},
                    },
                    {
                        "applyTo": "CLUSTER",
                        "match": {
                            "cluster": {"service": "reviews.default.svc.cluster.local"},
                            "proxy": {"proxyVersion": "1.*"},
                        },
                        "patch": {"operation": "MERGE", "value": {"connect_timeout": "3s"}},
                    },
                    {"applyTo": "NETWORK_FILTER", "patch": {"operation": "MERGE", "value": {}}},
                ],
            )
        ]
    )
    w = "\n".join(translation_warnings(p))
    for path in (
        "EnvoyFilter/default/bad: spec.configPatches[0].applyTo: LISTENER",
        "spec.configPatches[1].patch.operation: REPLACE",
        "spec.configPatches[2].patch.value: not a valid envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        "spec.configPatches[3].match.proxy",
        "spec.configPatches[4].applyTo: NETWORK_FILTER",
    ):
        assert path in w
    baseline = push()
    for t in (LISTENER_TYPE, CLUSTER_TYPE, ROUTE_TYPE):
        assert generate(t, sidecar(), p) == generate(t, sidecar(), baseline)


def test_context_selector_and_cluster_merge():
    p = push(
        configs=[
            _ef(
                "timeouts",
                [
                    {
                        "applyTo": "CLUSTER",
                        "match": {
                            "context": "SIDECAR_OUTBOUND",
                            "cluster": {"service": "reviews.default.svc.cluster.local", "portNumber": 9080},
                        },
                        "patch": {"operation": "MERGE", "value": {"connect_timeout": "3s"}},
                    },
                    {
                        "applyTo": "HTTP_FILTER",
                        "match": {
                            "context": "SIDECAR_INBOUND",
                            "listener": {
                                "filterChain": {
                                    "filter": {
                                        "name": "envoy.filters.network.http_connection_manager",
                                        "subFilter": {"name": "envoy.filters.http.router"},
                                    }
                                }
                            },
                        },
                        "patch": {
                            "operation": "INSERT_BEFORE",
                            "value": {
                                "name": "envoy.filters.http.ratelimit",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                                    "domain": "d",
                                    "rate_limit_service": {
                                        "grpc_service": {"envoy_grpc": {"cluster_name": MIXER_CLUSTER}},
                                        "transport_api_version": "V3",
                                    },
                                },
                            },
                        },
                    },
                ],
                selector={"app": "productpage"},
            )
        ],
        mesh=MESH,
    )
    pp = sidecar()
    clusters = {c.name: to_dict(c) for c in generate(CLUSTER_TYPE, pp, p)}
    assert clusters["outbound|9080||reviews.default.svc.cluster.local"]["connect_timeout"] == "3s"
    assert clusters["outbound|9080||ratings.default.svc.cluster.local"]["connect_timeout"] != "3s"
    for lst in listeners(pp, p):
        for hcm in hcms(lst):
            assert ("envoy.filters.http.ratelimit" in filter_names(hcm)) == (lst["name"] == "virtualInbound")
    check_all(pp, p)
    other = {c.name: to_dict(c) for c in generate(CLUSTER_TYPE, sidecar("reviews", "v1", "127.0.0.12"), p)}
    assert other["outbound|9080||reviews.default.svc.cluster.local"]["connect_timeout"] != "3s"
    assert not generate(CLUSTER_TYPE, router(), p) == [] and "3s" not in json.dumps(
        [to_dict(c) for c in generate(CLUSTER_TYPE, router(), p)]
    )


# ----------------------------------------------------------------------------- golden

GOLDEN = Path(__file__).parent / "golden" / "envoyfilter-ratelimit-gateway.json"


def render_ratelimit_gateway() -> dict:
    """The ingress gateway's listener and route config for bookinfo-gateway.yaml +
    productpage_envoy_ratelimit.yaml with mixer as the telemetry provider."""
    p = push("bookinfo-gateway.yaml", configs=ratelimit_configs(), mesh=MESH)
    (gw,) = listeners(router(), p)
    (rc,) = [to_dict(r) for r in generate(ROUTE_TYPE, router(), p)]
    return {"listener": gw, "route": rc}


def test_golden_ratelimit_gateway():
    """``UPDATE_GOLDEN=1`` rewrites it; review against ``istioctl proxy-config listener/route`` of an
    ingress gateway with the sample applied."""
    got = render_ratelimit_gateway()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())


def test_custom_rules_on_paths_and_methods_scope_the_check_per_route():
    rules = (
        {"to": [{"operation": {"paths": ["/admin*", "/login"], "methods": ["POST"]}}]},
        {"to": [{"operation": {"paths": ["*.php"]}}]},
    )
    p = push(configs=[custom("scoped", rules=rules, selector={"app": "reviews"})], mesh=MESH)
    w = "\n".join(translation_warnings(p))
    assert "only to.operation.paths/methods" not in w and "on gateways every HTTP request" in w
    proxy = sidecar("reviews", "v1", "127.0.0.12")
    (vi,) = [x for x in listeners(proxy, p) if x["name"] == "virtualInbound"]
    for hcm in hcms(vi):
        assert "envoy.filters.http.ext_authz" in filter_names(hcm)
        (vh,) = hcm["route_config"]["virtual_hosts"]
        matches = [r["match"] for r in vh["routes"]]
        post = [{"name": ":method", "string_match": {"exact": "POST"}}]
        assert matches == [
            {"prefix": "/admin", "headers": post},
            {"path": "/login", "headers": post},
            {"safe_regex": {"regex": ".*\\.php"}},
            {"prefix": "/"},
        ]
        *checked, catch_all = vh["routes"]
        assert all("typed_per_filter_config" not in r for r in checked)
        assert all(r["route"] == catch_all["route"] for r in checked)
        per_route = catch_all["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
        assert per_route == {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "disabled": True,
        }
    check_all(proxy, p)
