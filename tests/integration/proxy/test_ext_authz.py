"""envoy.filters.http.ext_authz through a real proxy process and a real gRPC authorization server
(another process): deny-list → 403 UAEX, OK headers upstream, the check cache in /stats, and the
failure modes with the server down."""

from __future__ import annotations

import httpx

from tests.integration.proxy.mixer_support import EXT_AUTHZ, start_mesh, start_services
from tests.support.net import free_port


def ext_authz(**cfg) -> list[dict]:
    config = {"grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}, "timeout": "2s"}, **cfg}
    return [{"name": "envoy.filters.http.ext_authz", "typed_config": {"@type": EXT_AUTHZ, **config}}]


def test_deny_list_gives_403_uaex_and_allowed_requests_carry_the_ok_headers(procs, tmp_path):
    svc = start_services(procs, tmp_path / "svc", "--deny-header", "end-user=evil")
    m = start_mesh(procs, tmp_path, svc.port, http_filters=ext_authz(transport_api_version="V3"))
    with httpx.Client(base_url=m.base, timeout=5) as c:
        denied = c.get("/productpage", headers={"end-user": "evil"})
        allowed = c.get("/productpage", headers={"end-user": "jason"})
    assert denied.status_code == 403
    assert denied.text == "denied by policy"
    assert denied.headers["x-denied-by"] == "test-policy"
    assert allowed.status_code == 200
    assert allowed.json()["headers"]["x-authz-checked"] == "yes"  # ok_response header went upstream
    entries = m.log_entries(2)
    assert [(e["code"], e["flags"]) for e in entries] == [(403, "UAEX"), (200, "-")]
    checks = svc.records("checks.jsonl")
    assert [c["headers"]["end-user"] for c in checks] == ["evil", "jason"]
    assert checks[0]["path"] == "/productpage" and checks[0]["method"] == "GET"
    assert checks[0]["source"] == "127.0.0.1" and checks[0]["principal"] == ""  # plaintext: no principal
    assert m.stat("http.ingress.ext_authz.denied") == 1
    assert m.stat("http.ingress.ext_authz.ok") == 1


def test_check_cache_serves_repeated_requests_within_the_validity(procs, tmp_path):
    svc = start_services(
        procs,
        tmp_path / "svc",
        "--deny-header",
        "end-user=evil",
        "--validity-ms",
        "60000",
        "--referenced",
        "request.headers.end-user",
    )
    m = start_mesh(procs, tmp_path, svc.port, http_filters=ext_authz())
    with httpx.Client(base_url=m.base, timeout=5) as c:
        codes = [c.get(f"/p{i}", headers={"end-user": "jason"}).status_code for i in range(5)]
        denied = [c.get(f"/q{i}", headers={"end-user": "evil"}).status_code for i in range(3)]
    assert codes == [200] * 5 and denied == [403] * 3
    # Only end-user was referenced: one check per distinct end-user, whatever the path.
    assert len(svc.records("checks.jsonl")) == 2
    assert m.stat("http.ingress.ext_authz.cache_miss") == 2
    assert m.stat("http.ingress.ext_authz.cache_hit") == 6
    assert m.stat("http.ingress.ext_authz.denied") == 3  # cached denials still count as denials


def test_no_validity_means_every_request_is_checked(procs, tmp_path):
    svc = start_services(procs, tmp_path / "svc")
    m = start_mesh(procs, tmp_path, svc.port, http_filters=ext_authz())
    with httpx.Client(base_url=m.base, timeout=5) as c:
        assert [c.get("/").status_code for _ in range(3)] == [200] * 3
    assert len(svc.records("checks.jsonl")) == 3
    assert m.stat("http.ingress.ext_authz.cache_hit") == 0


def test_authz_server_down_fails_closed_by_default(procs, tmp_path):
    dead = free_port()  # nothing listens there
    m = start_mesh(procs, tmp_path, dead, http_filters=ext_authz())
    r = httpx.get(m.base + "/", timeout=5)
    assert r.status_code == 403
    assert m.log_entries(1)[0]["flags"] == "UAEX"
    assert m.stat("http.ingress.ext_authz.error") == 1


def test_authz_server_down_with_failure_mode_allow_lets_requests_pass(procs, tmp_path):
    dead = free_port()
    m = start_mesh(
        procs,
        tmp_path,
        dead,
        http_filters=ext_authz(failure_mode_allow=True, failure_mode_allow_header_add=True),
    )
    r = httpx.get(m.base + "/", timeout=5)
    assert r.status_code == 200
    assert r.json()["headers"]["x-envoy-auth-failure-mode-allowed"] == "true"
    assert m.stat("http.ingress.ext_authz.error") == 1
    assert m.stat("http.ingress.ext_authz.failure_mode_allowed") == 1


def test_status_on_error_and_unsupported_fields_are_reported(procs, tmp_path):
    dead = free_port()
    m = start_mesh(procs, tmp_path, dead, http_filters=ext_authz(status_on_error={"code": 503}))
    assert httpx.get(m.base + "/", timeout=5).status_code == 503
    bad = procs.python(
        "-m",
        "proxy",
        "--mode",
        "validate",
        "--config-yaml",
        "{static_resources: {clusters: [{name: mixer, type: STATIC, load_assignment: {cluster_name: mixer, "
        "endpoints: []}}], listeners: [{name: l, address: {socket_address: {address: 127.0.0.1, port_value: "
        f"{free_port()}}}}}, filter_chains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, "
        "typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager, stat_prefix: s, route_config: {}, http_filters: [{name: envoy.filters.http"
        f".ext_authz, typed_config: {{'@type': {EXT_AUTHZ}, grpc_service: {{envoy_grpc: {{cluster_name: mixer}}}}, "
        "with_request_body: {max_request_bytes: 10}}}, {name: envoy.filters.http.router, typed_config: {'@type': "
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}]}]}]}}",
    )
    assert bad.wait(timeout=30) != 0
    assert "with_request_body" in procs.output(bad)
