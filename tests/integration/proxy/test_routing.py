"""Routing through a real proxy process in front of two real upstreams: prefix and header routing,
weighted split, retries, timeouts, direct_response, redirect, rewrites, circuit breaking, and the
response flags in the access log."""

from __future__ import annotations

import threading
import time

import httpx

from tests.integration.proxy.harness import static_cluster
from tests.integration.proxy.routing_support import start_mesh
from tests.support.net import free_port, wait_for_port


def to(cluster: str, **extra) -> dict:
    return {"cluster": cluster, **extra}


def test_prefix_and_header_routing(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        [
            {
                "name": "by_header",
                "match": {"prefix": "/", "headers": [{"name": "x-target", "exact_match": "b"}]},
                "route": to("b"),
            },
            {"name": "b_prefix", "match": {"prefix": "/b/"}, "route": to("b")},
            {"name": "a_prefix", "match": {"prefix": "/a/"}, "route": to("a")},
        ],
    )
    with httpx.Client(base_url=m.base, timeout=5) as c:
        assert c.get("/a/x").json()["upstream"] == "a"
        assert c.get("/b/x").json()["upstream"] == "b"
        assert c.get("/a/x", headers={"x-target": "b"}).json()["upstream"] == "b"
        r = c.get("/c")
        assert r.status_code == 404 and r.content == b""
    entries = m.log_entries(4)
    assert [(e["route"], e["flags"]) for e in entries] == [
        ("a_prefix", "-"),
        ("b_prefix", "-"),
        ("by_header", "-"),
        (None, "NR"),
    ]


def test_weighted_split_80_20(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        [
            {
                "match": {"prefix": "/"},
                "route": {
                    "weighted_clusters": {
                        "clusters": [{"name": "a", "weight": 80}, {"name": "b", "weight": 20}]
                    }
                },
            }
        ],
    )
    counts = {"a": 0, "b": 0}
    with httpx.Client(base_url=m.base, timeout=5) as c:  # keep-alive: one connection for all requests
        for _ in range(2000):
            r = c.get("/")
            assert r.status_code == 200
            counts[r.headers["x-upstream"]] += 1
    assert 0.75 <= counts["a"] / 2000 <= 0.85, counts
    assert m.stat("cluster.a.upstream_rq_2xx") == counts["a"]
    assert m.stat("cluster.b.upstream_rq_200") == counts["b"]


def test_retries_hide_an_upstream_failing_every_other_request(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        [{"match": {"prefix": "/"}, "route": to("a", retry_policy={"retry_on": "5xx", "num_retries": 2})}],
    )
    with httpx.Client(base_url=m.base, timeout=5) as c:
        statuses = [c.get("/", headers={"x-test-fail-every": "2"}).status_code for _ in range(20)]
    assert statuses == [200] * 20
    # The upstream saw 1 ok, then (fail, ok) for each of the other 19 requests.
    assert m.stat("cluster.a.upstream_rq_retry") == 19
    assert m.stat("cluster.a.upstream_rq_retry_success") == 19
    assert m.stat("cluster.a.retry.upstream_rq_503") == 19
    assert m.stat("cluster.a.upstream_rq_200") == 20


def test_retries_exhausted_give_the_upstream_answer_with_urx(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        [
            {
                "name": "r",
                "match": {"prefix": "/"},
                "route": to(
                    "a",
                    retry_policy={
                        "retry_on": "retriable-status-codes",
                        "retriable_status_codes": [418],
                        "num_retries": 2,
                    },
                ),
            }
        ],
    )
    r = httpx.get(m.base + "/", headers={"x-test-status": "418"}, timeout=5)
    assert r.status_code == 418 and r.json()["count"] == 3  # the first try and two retries
    assert m.log_entries(1)[0]["flags"] == "URX"
    assert m.stat("cluster.a.upstream_rq_retry_limit_exceeded") == 1


def test_route_timeout_gives_504_ut(procs, tmp_path):
    m = start_mesh(
        procs, tmp_path, [{"name": "slow", "match": {"prefix": "/"}, "route": to("a", timeout="0.2s")}]
    )
    r = httpx.get(m.base + "/", headers={"x-test-delay-ms": "2000"}, timeout=5)
    assert r.status_code == 504
    assert r.text == "upstream request timeout"
    (entry,) = m.log_entries(1)
    assert (entry["code"], entry["flags"], entry["route"]) == (504, "UT", "slow")
    assert m.stat("cluster.a.upstream_rq_timeout") == 1
    assert m.stat("cluster.a.upstream_rq_504") == 1


def test_direct_response_and_redirect(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        [
            {
                "match": {"path": "/health"},
                "direct_response": {"status": 200, "body": {"inline_string": "healthy\n"}},
                "response_headers_to_add": [{"header": {"key": "x-from", "value": "proxy"}}],
            },
            {"match": {"prefix": "/gone"}, "direct_response": {"status": 410}},
            {"match": {"prefix": "/old/"}, "redirect": {"prefix_rewrite": "/new/", "response_code": "FOUND"}},
            {
                "match": {"prefix": "/secure"},
                "redirect": {"https_redirect": True, "host_redirect": "example.com"},
            },
        ],
    )
    with httpx.Client(base_url=m.base, timeout=5, follow_redirects=False) as c:
        r = c.get("/health")
        assert (r.status_code, r.text, r.headers["x-from"]) == (200, "healthy\n", "proxy")
        assert r.headers["content-type"] == "text/plain"
        r = c.get("/gone")
        assert (r.status_code, r.content) == (410, b"")
        r = c.get("/old/page?x=1")
        assert r.status_code == 302
        assert r.headers["location"] == f"http://{m.base.removeprefix('http://')}/new/page?x=1"
        r = c.get("/secure/a")
        assert (r.status_code, r.headers["location"]) == (301, "https://example.com/secure/a")
    assert m.stat("cluster.a.upstream_rq_total") == 0  # nothing went upstream


def test_host_and_prefix_rewrite(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        [
            {
                "match": {"prefix": "/api/"},
                "route": to("a", prefix_rewrite="/v2/", host_rewrite_literal="backend.internal"),
                "request_headers_to_add": [
                    {"header": {"key": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}
                ],
            },
            {
                "match": {"prefix": "/re/"},
                "route": to(
                    "b",
                    regex_rewrite={"pattern": {"regex": "^/re/([^/]+)/(.*)$"}, "substitution": "/\\2/\\1"},
                ),
            },
        ],
    )
    with httpx.Client(base_url=m.base, timeout=5) as c:
        seen = c.get("/api/users?id=7").json()
        assert seen["upstream"] == "a"
        assert (seen["path"], seen["query"]) == ("/v2/users", "id=7")
        assert seen["headers"]["host"] == "backend.internal"
        assert seen["headers"]["x-envoy-original-path"] == "/api/users?id=7"
        assert seen["headers"]["x-client"] == "127.0.0.1"
        assert seen["headers"]["x-forwarded-proto"] == "http"
        assert seen["headers"]["x-envoy-expected-rq-timeout-ms"] == "15000"
        seen = c.get("/re/one/two").json()
        assert (seen["upstream"], seen["path"]) == ("b", "/two/one")


def test_upstream_failure_flags_uf_and_uh(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        [
            {"name": "refused", "match": {"prefix": "/refused"}, "route": to("refused")},
            {"name": "empty", "match": {"prefix": "/empty"}, "route": to("empty")},
            {"name": "unknown", "match": {"prefix": "/unknown"}, "route": to("no-such-cluster")},
        ],
        extra_clusters=[
            {
                "name": "refused",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": "refused",
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {
                                    "endpoint": {
                                        "address": {
                                            "socket_address": {
                                                "address": "127.0.0.1",
                                                "port_value": free_port(),
                                            }
                                        }
                                    }
                                }
                            ]
                        }
                    ],
                },
            },
            {
                "name": "empty",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "empty"},
            },
        ],
    )
    with httpx.Client(base_url=m.base, timeout=5) as c:
        r = c.get("/refused")
        assert (r.status_code, r.text) == (
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        )
        r = c.get("/empty")
        assert (r.status_code, r.text) == (503, "no healthy upstream")
        r = c.get("/unknown")
        assert (r.status_code, r.content) == (503, b"")
    assert [(e["code"], e["flags"]) for e in m.log_entries(3)] == [(503, "UF"), (503, "UH"), (503, "NC")]


# Accepts, reads the request head, and closes without answering. (upstream_app's x-test-reset cannot do
# this: uvicorn answers 500 when the app raises before starting the response.)
CLOSER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept()
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    c.close()
"""


def test_upstream_reset_before_headers_is_503_uc(procs, tmp_path):
    port = free_port()
    wait_for_port("127.0.0.1", port, proc=procs.python("-c", CLOSER, str(port)))
    m = start_mesh(
        procs,
        tmp_path,
        [{"match": {"prefix": "/"}, "route": to("closer")}],
        extra_clusters=[static_cluster("closer", [port])],
    )
    r = httpx.get(m.base + "/", timeout=5)
    assert r.status_code == 503
    assert (
        r.text
        == "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    )
    assert m.log_entries(1)[0]["flags"] == "UC"


def test_circuit_breaker_max_requests_gives_503_uo(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        [{"match": {"prefix": "/"}, "route": to("a")}],
        cluster_extra={"a": {"circuit_breakers": {"thresholds": [{"max_requests": 1}]}}},
    )
    slow: dict = {}

    def slow_request():
        slow["r"] = httpx.get(m.base + "/", headers={"x-test-delay-ms": "1500"}, timeout=10)

    t = threading.Thread(target=slow_request)
    t.start()
    try:
        # Wait (on the proxy's own gauge) until the slow request is in flight upstream.
        deadline = time.monotonic() + 5
        while m.stat("cluster.a.upstream_rq_active") < 1:
            assert time.monotonic() < deadline, "the slow request never became active"
            time.sleep(0.02)
        r = httpx.get(m.base + "/", timeout=5)
        assert r.status_code == 503
        assert r.headers["x-envoy-overloaded"] == "true"
    finally:
        t.join(10)
    assert slow["r"].status_code == 200
    flags = [e["flags"] for e in m.log_entries(2)]
    assert "UO" in flags
    assert m.stat("cluster.a.upstream_rq_pending_overflow") == 1


def test_request_mirror_reaches_the_shadow_cluster(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        [{"match": {"prefix": "/"}, "route": to("a", request_mirror_policies=[{"cluster": "b"}])}],
    )
    r = httpx.get(m.base + "/m", timeout=5)
    assert r.status_code == 200 and r.json()["upstream"] == "a"  # the client sees the primary only
    deadline = time.monotonic() + 5
    while m.stat("cluster.b.upstream_rq_total") < 1:  # fire-and-forget: wait until the shadow got it
        assert time.monotonic() < deadline, "the mirror never reached cluster b"
        time.sleep(0.02)
    # The shadow got the mirrored request: this probe is the second request it ever saw.
    # (The -shadow suffix on :authority is checked by the router's unit tests.)
    shadow_seen = httpx.get(f"http://127.0.0.1:{m.ports['b']}/probe", timeout=5).json()
    assert shadow_seen["count"] == 2
