"""envoy.filters.http.rbac and path normalization through a real proxy process in front of a real upstream.

Requests that must reach the proxy byte for byte (dot segments, double slashes, escapes, fragments)
are written raw on a socket: HTTP clients normalise such paths themselves before sending.

Principals from real mTLS are covered by the unit tests with fake TLS facts
(tests/unit/proxy/filters/http/test_rbac_filter.py); here principals come from headers and addresses.
"""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from tests.integration.proxy.harness import http_listener, start_proxy, start_upstream, static_cluster
from tests.support.net import free_port, wait_for_port

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
ISTIO_PATH_NORMALIZATION = {  # Istio's DECODE_AND_MERGE_SLASHES
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
}
DENY_ADMIN = {
    "action": "DENY",
    "policies": {
        "ns[default]-policy[deny-admin]-rule[0]": {
            "permissions": [{"url_path": {"path": {"prefix": "/admin"}}}],
            "principals": [{"any": True}],
        }
    },
}


def rbac_filter(rules: dict, **extra) -> dict:
    return {"name": "envoy.filters.http.rbac", "typed_config": {"@type": RBAC, "rules": rules, **extra}}


class Proxy:
    def __init__(self, procs, http_filters: list[dict], **hcm_extra) -> None:
        up = start_upstream(procs, "app")
        self.port = free_port()
        routes = {
            "name": "rc",
            "virtual_hosts": [
                {
                    "name": "vh",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
                }
            ],
        }
        bootstrap = {
            "static_resources": {
                "listeners": [http_listener(self.port, routes, http_filters=http_filters, **hcm_extra)],
                "clusters": [static_cluster("app", [up])],
            }
        }
        self.proxy = start_proxy(procs, bootstrap, wait_ports=(self.port,))

    def raw(
        self, target: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict, bytes]:
        """Send `target` exactly as given; return (status, lower-cased headers, body)."""
        lines = [f"{method} {target} HTTP/1.1", "Host: app", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *hdr_lines = head.decode("latin-1").split("\r\n")
        hdrs = {}
        for line in hdr_lines:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if hdrs.get("transfer-encoding") == "chunked":
            body = _dechunk(body)
        return int(status_line.split()[1]), hdrs, body

    def stat(self, name: str) -> int:
        with urllib.request.urlopen(f"{self.proxy.admin}/stats?format=json", timeout=5) as resp:
            for s in json.load(resp).get("stats", []):
                if s.get("name") == name and "value" in s:
                    return int(s["value"])
        return 0


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += rest[:size]
        data = rest[size + 2 :]


@pytest.fixture
def deny_admin(procs):
    return Proxy(procs, [rbac_filter(DENY_ADMIN)], **ISTIO_PATH_NORMALIZATION)


ATTACKS = ["/admin", "/admin/../admin", "//admin", "/%61dmin", "/public/%2e%2e/admin", "/admin#x", "/admin?x"]
MORE_ATTACKS = [
    "/public/..%2Fadmin",
    "/public%5C..%5Cadmin",
    "/./admin/",
    "///admin//x",
    "/%2E%2E/admin",
    "/a/b/../../admin",
]


def test_deny_on_admin_prefix_cannot_be_bypassed_by_encoding(deny_admin):
    for target in ATTACKS + MORE_ATTACKS:
        status, hdrs, body = deny_admin.raw(target)
        assert (status, body) == (403, b"RBAC: access denied"), target
        assert hdrs["content-type"] == "text/plain"
    assert deny_admin.stat("http.ingress.rbac.denied") == len(ATTACKS + MORE_ATTACKS)
    status, _, body = deny_admin.raw("/public/x")
    assert status == 200 and json.loads(body)["upstream"] == "app"
    assert deny_admin.stat("http.ingress.rbac.allowed") == 1


def test_upstream_receives_the_normalized_path_with_query_untouched(deny_admin):
    status, _, body = deny_admin.raw("/public/./a//b/%2e%2e/%63?q=/../%61#frag")
    seen = json.loads(body)
    assert status == 200
    assert seen["raw_path"] == "/public/a/c" and seen["query"] == "q=/../%61"


def test_allow_by_header_condition_and_403_when_nothing_matches(procs):
    # AuthorizationPolicy ALLOW: from principals-like header rule, to GET /reviews*, when request.headers[x-user] == alice
    rules = {
        "action": "ALLOW",
        "policies": {
            "ns[default]-policy[reviews]-rule[0]": {
                "permissions": [
                    {
                        "and_rules": {
                            "rules": [
                                {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                                {"url_path": {"path": {"prefix": "/reviews"}}},
                            ]
                        }
                    }
                ],
                "principals": [
                    {
                        "and_ids": {
                            "ids": [
                                {"header": {"name": "x-user", "string_match": {"exact": "alice"}}},
                                {"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}},
                            ]
                        }
                    }
                ],
            }
        },
    }
    p = Proxy(procs, [rbac_filter(rules)], **ISTIO_PATH_NORMALIZATION)
    status, _, body = p.raw("/reviews/1", {"x-user": "alice"})
    assert status == 200 and json.loads(body)["headers"]["x-user"] == "alice"
    for target, headers, method in [
        ("/reviews/1", {"x-user": "bob"}, "GET"),
        ("/reviews/1", {}, "GET"),
        ("/reviews/1", {"x-user": "alice"}, "POST"),
        ("/ratings/1", {"x-user": "alice"}, "GET"),
    ]:
        status, _, body = p.raw(target, headers, method)
        assert (status, body) == (403, b"RBAC: access denied"), (target, headers, method)
    assert p.stat("http.ingress.rbac.denied") == 4 and p.stat("http.ingress.rbac.allowed") == 1


def test_shadow_rules_only_count(procs):
    shadow_only = {
        "name": "envoy.filters.http.rbac",
        "typed_config": {"@type": RBAC, "shadow_rules": DENY_ADMIN},
    }
    p = Proxy(procs, [shadow_only], **ISTIO_PATH_NORMALIZATION)
    assert p.raw("/admin")[0] == 200
    assert p.stat("http.ingress.rbac.shadow_denied") == 1


def test_escaped_slashes_reject_and_redirect(procs):
    reject = Proxy(procs, [], normalize_path=True, path_with_escaped_slashes_action="REJECT_REQUEST")
    assert reject.raw("/a%2Fb")[0] == 400
    assert reject.raw("/a/b")[0] == 200
    assert reject.stat("http.ingress.downstream_rq_failed_path_normalization") == 1
    redirect = Proxy(procs, [], normalize_path=True, path_with_escaped_slashes_action="UNESCAPE_AND_REDIRECT")
    status, hdrs, _ = redirect.raw("/a%2Fb?x=1")
    assert status == 307 and hdrs["location"] == "/a/b?x=1"
    assert redirect.stat("http.ingress.downstream_rq_redirected_with_normalized_path") == 1


def test_without_normalization_the_raw_path_goes_upstream_minus_the_fragment(procs):
    p = Proxy(procs, [])
    status, _, body = p.raw("/a/%2e%2e//b#frag")
    assert status == 200 and json.loads(body)["raw_path"] == "/a/%2e%2e//b"


# ------------------------------------------------------------------ network RBAC (tcp_proxy behind it)

TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
NET_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"


def _start_echo(procs) -> int:
    port = free_port()
    proc = procs.python(
        "-m", "tests.integration.proxy.echo_server", "--host", "127.0.0.1", "--port", str(port)
    )
    wait_for_port("127.0.0.1", port, proc=proc)
    return port


def _tcp_chain(rules: dict, transport_socket: dict | None = None) -> dict:
    chain = {
        "filters": [
            {
                "name": "envoy.filters.network.rbac",
                "typed_config": {"@type": NET_RBAC, "stat_prefix": "tcp.", "rules": rules},
            },
            {
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {"@type": TCP, "stat_prefix": "echo", "cluster": "echo"},
            },
        ]
    }
    if transport_socket:
        chain["transport_socket"] = transport_socket
    return chain


def _stats(admin: str) -> dict:
    with urllib.request.urlopen(f"{admin}/stats?format=json", timeout=5) as resp:
        return {s["name"]: s.get("value") for s in json.load(resp).get("stats", []) if "name" in s}


def _echo_once(port: int, source: str, payload: bytes = b"ping\n") -> bytes:
    """Connect from `source`, send, read until the proxy closes or the echo answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        try:
            s.sendall(payload)
            data = s.recv(1024)
        except ConnectionResetError:
            data = b""
    return data


def test_network_rbac_closes_denied_connections_at_once(procs):
    echo = _start_echo(procs)
    port = free_port()
    rules = {
        "action": "DENY",
        "policies": {
            "deny-127.0.0.2": {
                "permissions": [{"any": True}],
                "principals": [{"source_ip": {"address_prefix": "127.0.0.2", "prefix_len": 32}}],
            }
        },
    }
    bootstrap = {
        "static_resources": {
            "listeners": [
                {
                    "name": "tcp",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [_tcp_chain(rules)],
                }
            ],
            "clusters": [static_cluster("echo", [echo])],
        }
    }
    proxy = start_proxy(procs, bootstrap, wait_ports=(port,))
    before = _stats(proxy.admin)  # wait_for_port's probe connection was allowed and proxied
    assert b"ping" in _echo_once(port, "127.0.0.1")
    # The denied peer's connection is closed without a byte from the upstream.
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)) as s:
        try:
            assert s.recv(1024) == b""  # closed at once, before the client sent anything
        except ConnectionResetError:
            pass
    st = _stats(proxy.admin)
    assert st["tcp.rbac.allowed"] - before["tcp.rbac.allowed"] == 1
    assert st["tcp.rbac.denied"] == 1
    # the denied connection never reached the upstream
    assert st["cluster.echo.upstream_cx_total"] - before["cluster.echo.upstream_cx_total"] == 1
