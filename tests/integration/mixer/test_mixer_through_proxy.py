"""The loop between real proxies and the REAL mixer: `python -m mixer` processes with a config file,
a real redis-server started here, real proxies (`python -m proxy`) and real upstream apps.

* policy: a deny-list rule gives 403 with UAEX in the proxy's access log; repeated identical
  requests are answered from the proxy's check cache (hits in /stats, mixer asked once); with mixer
  stopped, failure_mode_allow false gives 403 and true lets requests pass;
* quota: a 10 requests/s limit from the route's rate_limits, counted in the real Redis, gives 429
  with RL to the excess; two mixer replicas sharing that Redis, each behind its own proxy, hold the
  limit globally within 10%;
* telemetry: a two-hop chain productpage sidecar (outbound) -> reviews sidecar (inbound) -> app, with
  istio.metadata_exchange and http_grpc access logs in both: istio_requests_total for the edge equals
  N for both reporters, with each side's workload, app and version; /metrics parses; the latency
  histogram agrees with what the client measured.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from proxy.filters.http.peer_metadata.exchange import PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER
from tests.integration.mixer.harness import (
    sleep_to_window_start,
    start_mixer,
    start_redis,
    wait_until,
)
from tests.integration.proxy.harness import http_listener, start_proxy, start_upstream, static_cluster
from tests.support.net import free_port

FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
HTTP_GRPC_LOG = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
PEER_METADATA = "type.googleapis.com/io.istio.http.peer_metadata.Config"
LOG_FORMAT = {"json_format": {"code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "path": "%REQ(:PATH)%"}}


# --- a proxy in front of an app, talking to a mixer ---------------------------------------------------


class Proxy:
    def __init__(self, running, port: int, log_path: Path) -> None:
        self.running = running
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.running.admin}/stats?format=json", timeout=5) as resp:
            data = json.load(resp)
        return {s["name"]: int(s["value"]) for s in data.get("stats", []) if "value" in s}

    def stat(self, name: str) -> int:
        return self.stats().get(name, 0)

    def log_entries(self, n: int) -> list[dict]:
        def lines():
            text = self.log_path.read_text() if self.log_path.exists() else ""
            got = [json.loads(line) for line in text.splitlines() if line.strip()]
            return got if len(got) >= n else None

        return wait_until(lines, timeout=10, what=f"{n} access log lines")


def start_sidecar(
    procs,
    tmp_path: Path,
    name: str,
    mixer_port: int,
    *,
    http_filters: list[dict],
    routes: list[dict] | None = None,
    node: dict | None = None,
    direction: str = "INBOUND",
    access_logs: list[dict] = (),
    clusters: list[dict] | None = None,
) -> Proxy:
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = tmp_path / f"{name}-access.log"
    if clusters is None:
        clusters = [static_cluster("app", [start_upstream(procs, name)])]
    route_config = {
        "name": "rc",
        "virtual_hosts": [
            {
                "name": "vh",
                "domains": ["*"],
                "routes": routes or [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
            }
        ],
    }
    logs = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {"@type": FILE_LOG, "path": str(log_path), "log_format": LOG_FORMAT},
        },
        *access_logs,
    ]
    listener_name = "virtualInbound" if direction == "INBOUND" else "virtualOutbound"
    listener = http_listener(
        port, route_config, http_filters=http_filters, name=listener_name, access_log=logs
    )
    listener["traffic_direction"] = direction
    bootstrap = {
        "static_resources": {
            "listeners": [listener],
            "clusters": [*clusters, static_cluster("mixer", [mixer_port])],
        }
    }
    if node:
        bootstrap["node"] = node
    running = start_proxy(procs, bootstrap, wait_ports=(port,))
    return Proxy(running, port, log_path)


def ext_authz(failure_mode_allow: bool = False) -> dict:
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": EXT_AUTHZ,
            "grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}, "timeout": "2s"},
            "transport_api_version": "V3",
            "failure_mode_allow": failure_mode_allow,
        },
    }


# --- policy -------------------------------------------------------------------------------------------

POLICY = """
policy:
  rules:
  - name: deny-evil-user
    list: {attribute: request.headers.end-user, entries: ["evil"]}
"""


def test_deny_list_gives_403_uaex_and_repeated_requests_hit_the_check_cache(procs, tmp_path):
    mixer = start_mixer(procs, tmp_path, POLICY)
    proxy = start_sidecar(procs, tmp_path, "productpage", mixer.grpc_port, http_filters=[ext_authz()])
    with httpx.Client(base_url=proxy.base, timeout=5) as c:
        denied = c.get("/productpage", headers={"end-user": "evil"})
        allowed = c.get("/productpage", headers={"end-user": "jason"})
        again = [c.get("/productpage", headers={"end-user": "jason"}).status_code for _ in range(9)]
        denied_again = [c.get("/productpage", headers={"end-user": "evil"}).status_code for _ in range(4)]
    assert denied.status_code == 403
    assert "deny-evil-user" in denied.text or denied.text.startswith("PERMISSION_DENIED")
    assert allowed.status_code == 200 and allowed.json()["upstream"] == "productpage"
    assert again == [200] * 9 and denied_again == [403] * 4
    flags = [(e["code"], e["flags"]) for e in proxy.log_entries(15)]
    assert flags[:2] == [(403, "UAEX"), (200, "-")]
    assert flags.count((403, "UAEX")) == 5 and flags.count((200, "-")) == 10
    # mixer answered one check per end-user; the proxy served the other 13 from its cache
    stats = proxy.stats()
    assert stats["http.virtualInbound.ext_authz.cache_miss"] == 2
    assert stats["http.virtualInbound.ext_authz.cache_hit"] == 13
    assert mixer.metric_sum("mixer_check_total") == 2
    denials = json.loads(mixer.get("/api/denials"))
    assert denials["total"] == 1 and denials["events"][0]["rule"] == "deny-evil-user"


def test_mixer_down_fails_closed_or_open_as_configured(procs, tmp_path):
    mixer = start_mixer(procs, tmp_path, POLICY)
    closed = start_sidecar(procs, tmp_path / "c", "closed", mixer.grpc_port, http_filters=[ext_authz(False)])
    opened = start_sidecar(procs, tmp_path / "o", "opened", mixer.grpc_port, http_filters=[ext_authz(True)])
    for p in (closed, opened):
        assert httpx.get(p.base + "/", headers={"end-user": "a"}, timeout=5).status_code == 200
    procs.stop(mixer.proc)
    # a request the cache has never seen must ask mixer, which is gone
    assert httpx.get(closed.base + "/", headers={"end-user": "b"}, timeout=5).status_code == 403
    r = httpx.get(opened.base + "/", headers={"end-user": "b"}, timeout=5)
    assert r.status_code == 200 and r.json()["upstream"] == "opened"
    assert closed.log_entries(2)[-1] == {"code": 403, "flags": "UAEX", "path": "/"}
    assert opened.log_entries(2)[-1] == {"code": 200, "flags": "-", "path": "/"}
    assert closed.stat("http.virtualInbound.ext_authz.error") == 1
    assert opened.stat("http.virtualInbound.ext_authz.failure_mode_allowed") == 1


# --- quota ----------------------------------------------------------------------------------------------

QUOTA = """
quota:
  failureMode: open
  domains:
  - domain: productpage-ratelimit
    descriptors:
    - key: generic_key
      value: productpage
      rate_limit: {unit: second, requests_per_unit: 10}
"""
RL_ROUTES = [
    {
        "match": {"prefix": "/productpage"},
        "route": {
            "cluster": "app",
            "rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "productpage"}}]}],
        },
    },
    {
        "match": {"prefix": "/warm"},
        "route": {
            "cluster": "app",
            "rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "warm"}}]}],
        },
    },
]


def ratelimit_filter() -> dict:
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": RATELIMIT,
            "domain": "productpage-ratelimit",
            "timeout": "2s",  # generous on a loaded CI machine
            "failure_mode_deny": True,  # an error must not pass as "allowed" and hide a broken loop
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}},
                "transport_api_version": "V3",
            },
        },
    }


def rl_proxy(procs, tmp_path, name, mixer) -> Proxy:
    p = start_sidecar(
        procs, tmp_path / name, name, mixer.grpc_port, http_filters=[ratelimit_filter()], routes=RL_ROUTES
    )
    assert httpx.get(p.base + "/warm", timeout=5).status_code == 200  # the gRPC channel is up
    return p


def test_ten_per_second_quota_in_real_redis_gives_429_rl_to_the_excess(procs, tmp_path):
    _, redis_port = start_redis(procs)
    mixer = start_mixer(procs, tmp_path, QUOTA, f"redis://127.0.0.1:{redis_port}/0")
    proxy = rl_proxy(procs, tmp_path, "productpage", mixer)
    start = sleep_to_window_start()
    with httpx.Client(base_url=proxy.base, timeout=5, limits=httpx.Limits(max_connections=8)) as c:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: c.get("/productpage"), range(30)))
    windows = int(time.time()) - start + 1
    ok = sum(r.status_code == 200 for r in responses)
    limited = [r for r in responses if r.status_code == 429]
    assert ok + len(limited) == 30
    assert 10 <= ok <= 10 * windows and len(limited) >= 30 - 10 * windows
    assert all(r.headers["x-envoy-ratelimited"] == "true" for r in limited)
    entries = [e for e in proxy.log_entries(31) if e["path"] == "/productpage"]
    assert sorted((e["code"], e["flags"]) for e in entries) == sorted(
        [(200, "-")] * ok + [(429, "RL")] * len(limited)
    )
    # the counts live in Redis: mixer's quota API reads them back
    assert json.loads(mixer.get("/api/quota"))["backend"] == "redis"
    assert mixer.metric_sum(
        "mixer_quota_requests_total", domain="productpage-ratelimit", code="OVER_LIMIT"
    ) == len(limited)


def test_two_mixer_replicas_sharing_redis_hold_the_limit_globally(procs, tmp_path):
    _, redis_port = start_redis(procs)
    url = f"redis://127.0.0.1:{redis_port}/0"
    replicas = [start_mixer(procs, tmp_path, QUOTA, url, name=f"mixer{i}") for i in range(2)]
    proxies = [rl_proxy(procs, tmp_path, f"pp{i}", m) for i, m in enumerate(replicas)]
    windows = 3
    start = sleep_to_window_start()
    end = start + windows - 0.1  # stay inside the last whole window

    def client(proxy: Proxy) -> list[int]:
        codes = []
        with httpx.Client(base_url=proxy.base, timeout=5) as c:
            while time.time() < end:
                codes.append(c.get("/productpage").status_code)
        return codes

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(client, proxies * 2))  # two clients per proxy
    codes = [c for r in results for c in r]
    ok = codes.count(200)
    assert codes.count(429) > 0 and ok + codes.count(429) == len(codes)
    limit = 10 * windows
    assert abs(ok - limit) <= 0.1 * limit, f"{ok} requests passed; the global limit is {limit}"
    # both replicas served traffic: the limit held because they share the counter
    for i, m in enumerate(replicas):
        assert m.metric_sum("mixer_quota_requests_total", domain="productpage-ratelimit") > 0, i


# --- telemetry ------------------------------------------------------------------------------------------


def istio_node(workload: str, app: str, version: str, ip: str) -> dict:
    return {
        "id": f"sidecar~{ip}~{workload}-abc12.default~default.svc.cluster.local",
        "cluster": f"{app}.default",
        "metadata": {
            "WORKLOAD_NAME": workload,
            "NAMESPACE": "default",
            "SERVICE_ACCOUNT": f"bookinfo-{app}",
            "CLUSTER_ID": "Kubernetes",
            "LABELS": {"app": app, "version": version, "security.istio.io/tlsMode": "istio"},
            "INTERCEPTION_MODE": "REDIRECT",
        },
    }


def metadata_exchange(direction: str) -> dict:
    if direction == "INBOUND":
        config = {
            "downstream_discovery": [{"istio_headers": {}}],
            "downstream_propagation": [{"istio_headers": {}}],
        }
    else:
        config = {
            "upstream_discovery": [{"istio_headers": {}}],
            "upstream_propagation": [{"istio_headers": {}}],
        }
    return {"name": "istio.metadata_exchange", "typed_config": {"@type": PEER_METADATA, **config}}


def als() -> dict:
    return {
        "name": "envoy.access_loggers.http_grpc",
        "typed_config": {
            "@type": HTTP_GRPC_LOG,
            "common_config": {
                "log_name": "http_envoy_accesslog",
                "grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}},
                "transport_api_version": "V3",
                "buffer_flush_interval": "0.1s",
            },
        },
    }


def histogram_sample(hist: dict, suffix: str, labels: dict, le: float | None):
    for (name, lab), v in hist.items():
        d = dict(lab)
        if name != "istio_request_duration_milliseconds" + suffix:
            continue
        if any(d.get(k) != val for k, val in labels.items()):
            continue
        if le is not None and float(d["le"]) != le:
            continue
        return v
    raise AssertionError(f"no istio_request_duration_milliseconds{suffix} sample (le={le}) for {labels}")


def test_two_hop_chain_reports_each_edge_exactly_n_times_with_both_sides_labels(procs, tmp_path):
    n = 25
    mixer = start_mixer(procs, tmp_path, "telemetry: {accessLog: {path: '-'}}\n")
    reviews = start_sidecar(
        procs,
        tmp_path / "reviews",
        "reviews",
        mixer.grpc_port,
        http_filters=[metadata_exchange("INBOUND")],
        node=istio_node("reviews-v2", "reviews", "v2", "127.0.0.12"),
        direction="INBOUND",
        access_logs=[als()],
        routes=[{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
    )
    reviews_port = int(reviews.base.rsplit(":", 1)[1])
    outbound_cluster = "outbound|9080||reviews.default.svc.cluster.local"
    productpage = start_sidecar(
        procs,
        tmp_path / "productpage",
        "productpage",
        mixer.grpc_port,
        http_filters=[metadata_exchange("OUTBOUND")],
        node=istio_node("productpage-v1", "productpage", "v1", "127.0.0.11"),
        direction="OUTBOUND",
        access_logs=[als()],
        routes=[{"match": {"prefix": "/"}, "route": {"cluster": outbound_cluster}}],
        clusters=[static_cluster(outbound_cluster, [reviews_port])],
    )

    latencies = []
    with httpx.Client(base_url=productpage.base, timeout=5, headers={"host": "reviews:9080"}) as c:
        for i in range(n):
            t0 = time.perf_counter()
            r = c.get(f"/reviews/{i}")
            latencies.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
            # the app never saw the exchange, and neither does the calling app
            seen = r.json()["headers"]
            assert PEER_METADATA_HEADER not in seen and PEER_METADATA_ID_HEADER not in seen
            assert PEER_METADATA_HEADER not in r.headers and PEER_METADATA_ID_HEADER not in r.headers

    for p in (productpage, reviews):
        wait_until(
            lambda p=p: p.stat("access_logs.grpc_access_log.logs_written") >= n,
            what="the proxy sent its logs",
        )

    edge = {
        "source_workload": "productpage-v1",
        "source_app": "productpage",
        "source_version": "v1",
        "source_workload_namespace": "default",
        "destination_workload": "reviews-v2",
        "destination_app": "reviews",
        "destination_version": "v2",
        "destination_workload_namespace": "default",
        "destination_service": "reviews.default.svc.cluster.local",
        "response_code": "200",
    }
    for reporter in ("source", "destination"):
        wait_until(
            lambda r=reporter: mixer.metric_sum("istio_requests_total", reporter=r, **edge) >= n,
            what=f"{reporter} reports in mixer",
        )
    metrics = mixer.metrics()  # parsed strictly by prometheus_client's text parser
    for p in (productpage, reviews):
        assert p.stat("access_logs.grpc_access_log.logs_written") == n
        assert p.stat("access_logs.grpc_access_log.logs_dropped") == 0
    for reporter in ("source", "destination"):
        want = {**edge, "reporter": reporter}.items()
        series = [
            (lab, v) for (name, lab), v in metrics.items() if name == "istio_requests_total" and want <= lab
        ]
        assert len(series) == 1, series  # one series per edge and reporter: no "unknown" side
        assert series[0][1] == n
        # latency histogram consistent with the client: every request counted, each in its bucket
        hist = {k: v for k, v in metrics.items() if k[0].startswith("istio_request_duration_milliseconds")}
        labels = {k: v for k, v in want if k != "response_code"} | {"response_code": "200"}

        def sample(suffix: str, le: float | None = None, hist=hist, labels=labels):
            return histogram_sample(hist, suffix, labels, le)

        assert sample("_count") == n
        # a proxy's duration lies inside the client's measurement: never more in total
        assert sample("_sum") <= sum(latencies) + 1
        under_1s = sum(ms < 1000 for ms in latencies)
        assert sample("_bucket", 1000.0) >= under_1s
        assert sample("_bucket", float("inf")) == n
    # no other edge was invented (e.g. an "unknown" peer from a lost header)
    assert mixer.metric_sum("istio_requests_total") == 2 * n
