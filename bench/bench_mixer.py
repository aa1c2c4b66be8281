"""mixer: access-log ingest rate (entries/s over real gRPC) and Check/ShouldRateLimit latency p50/p99.

A real `python -m mixer` process; the client runs in this process. Then the proxy-side cost: the same
proxy (1 worker, in front of nginx, driven by wrk) with telemetry and policy off, and on as an Istio
sidecar runs them (istio.metadata_exchange, ext_authz to mixer with the check cache, http_grpc access
logs to mixer), reported as a throughput ratio. The issue's goal is under 10% cost.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import yaml
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from google.protobuf import struct_pb2

from bench.common import REPO, nginx_upstream, process, wrk
from tests.integration.mixer.harness import rl_request
from tests.support.net import free_port, wait_for_http, wait_for_port

CONFIG = """
policy:
  rules:
  - name: deny-sleep
    list: {attribute: source.principal, entries: ["spiffe://cluster.local/ns/default/sa/sleep"]}
quota:
  domains:
  - domain: bench
    descriptors:
    - key: PATH
      rate_limit: {unit: second, requests_per_unit: 1000000}
"""


def _entry() -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    c = e.common_properties
    c.upstream_cluster = "inbound|9080||"
    c.duration.FromMilliseconds(7)
    meta = struct_pb2.Struct()
    meta.update(
        {
            "reporter": "destination",
            "source": {
                "workload": "productpage-v1",
                "namespace": "default",
                "app": "productpage",
                "version": "v1",
            },
            "destination": {
                "workload": "reviews-v2",
                "namespace": "default",
                "app": "reviews",
                "version": "v2",
            },
            "destination_service": "reviews.default.svc.cluster.local",
            "connection_security_policy": "mutual_tls",
        }
    )
    c.metadata.filter_metadata["isthmus"].CopyFrom(meta)
    e.request.authority = "reviews:9080"
    e.response.response_code.value = 200
    return e


def _ingest(channel, entries: int, batch: int) -> float:
    stub = als_pb2_grpc.AccessLogServiceStub(channel)
    template = _entry()

    def messages():
        for i in range(0, entries, batch):
            m = als_pb2.StreamAccessLogsMessage()
            if i == 0:
                m.identifier.node.id = "sidecar~127.0.0.13~reviews-v2.default~default.svc.cluster.local"
            m.http_logs.log_entry.extend([template] * min(batch, entries - i))
            yield m

    start = time.perf_counter()
    stub.StreamAccessLogs(messages(), timeout=600)
    return entries / (time.perf_counter() - start)


def _latencies(call, count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _row(name: str, samples: list[float]) -> dict:
    samples.sort()
    return {
        "case": name,
        "calls": len(samples),
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[int(len(samples) * 0.99) - 1],
    }


# --- proxy throughput with telemetry + policy on vs off ----------------------------------------------

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
SIDECAR_NODE = {
    "id": "sidecar~127.0.0.12~reviews-v2-abc12.default~default.svc.cluster.local",
    "cluster": "reviews.default",
    "metadata": {
        "WORKLOAD_NAME": "reviews-v2",
        "NAMESPACE": "default",
        "SERVICE_ACCOUNT": "bookinfo-reviews",
        "LABELS": {"app": "reviews", "version": "v2"},
    },
}


def _cluster(name: str, port: int) -> dict:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


def _sidecar_bootstrap(listen: int, admin: int, upstream: int, mixer_port: int | None) -> dict:
    """An inbound sidecar; with ``mixer_port`` it runs Istio's telemetry and policy filters."""
    filters, logs = [], []
    if mixer_port is not None:
        mixer = {"envoy_grpc": {"cluster_name": "mixer"}}
        filters = [
            {
                "name": "istio.metadata_exchange",
                "typed_config": {
                    "@type": "type.googleapis.com/io.istio.http.peer_metadata.Config",
                    "downstream_discovery": [{"istio_headers": {}}],
                    "downstream_propagation": [{"istio_headers": {}}],
                },
            },
            {
                "name": "envoy.filters.http.ext_authz",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                    "grpc_service": {**mixer, "timeout": "1s"},
                    "transport_api_version": "V3",
                },
            },
        ]
        logs = [
            {
                "name": "envoy.access_loggers.http_grpc",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
                    "common_config": {
                        "log_name": "bench",
                        "grpc_service": mixer,
                        "transport_api_version": "V3",
                    },
                },
            }
        ]
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
    hcm = {
        "@type": HCM,
        "stat_prefix": "inbound",
        "access_log": logs,
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
                }
            ]
        },
        "http_filters": [*filters, router],
    }
    clusters = [_cluster("app", upstream)]
    if mixer_port is not None:
        clusters.append(_cluster("mixer", mixer_port))
    return {
        "node": SIDECAR_NODE,
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "virtualInbound",
                    "traffic_direction": "INBOUND",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


def _stats(admin: int) -> dict[str, int]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?format=json", timeout=5) as resp:
        data = json.load(resp)
    return {s["name"]: int(s["value"]) for s in data.get("stats", []) if "value" in s}


def _measure_sidecar(tmp: Path, upstream: int, mixer_port: int | None, seconds: int) -> tuple[dict, dict]:
    listen, admin = free_port(), free_port()
    path = tmp / f"sidecar-{'on' if mixer_port else 'off'}.yaml"
    path.write_text(yaml.safe_dump(_sidecar_bootstrap(listen, admin, upstream, mixer_port)))
    with process([sys.executable, "-m", "proxy", "-c", str(path), "-l", "warning"], cwd=REPO) as proc:
        wait_for_http(f"http://127.0.0.1:{admin}/ready", proc=proc)
        wait_for_port("127.0.0.1", listen, proc=proc)
        url = f"http://127.0.0.1:{listen}/reviews/0"
        wrk(url, 1, connections=16)  # warm-up: pools, the mixer channel, the first check
        result = wrk(url, seconds, connections=16)
        time.sleep(1.5)  # the access-log flush interval (1 s): let the last batch go out
        return result, _stats(admin)


def _proxy_cost(tmp: Path, quick: bool) -> list[dict]:
    """Throughput with telemetry + policy off and on, interleaved, medians compared."""
    seconds, rounds = (2, 1) if quick else (5, 3)
    grpc_port, http_port = free_port(), free_port()
    config = tmp / "mixer-cost.yaml"
    config.write_text(CONFIG)
    args = [sys.executable, "-m", "mixer", "--config", str(config), "--log-level", "warning",
            "--grpc-addr", f"127.0.0.1:{grpc_port}", "--http-addr", f"127.0.0.1:{http_port}"]  # fmt: skip
    off, on, stats = [], [], {}
    with nginx_upstream() as upstream, process(args, cwd=REPO) as mixer:
        wait_for_http(f"http://127.0.0.1:{http_port}/ready", proc=mixer)
        wait_for_port("127.0.0.1", grpc_port, proc=mixer)
        for _ in range(rounds):
            off.append(_measure_sidecar(tmp, upstream, None, seconds)[0])
            result, stats = _measure_sidecar(tmp, upstream, grpc_port, seconds)
            on.append(result)
    rps_off = statistics.median(r["rps"] for r in off)
    rps_on = statistics.median(r["rps"] for r in on)
    ratio = rps_on / rps_off if rps_off else 0.0
    return [
        {"case": "proxy, telemetry+policy off", "rps": round(rps_off), "p99_ms": off[-1]["p99_ms"]},
        {
            "case": "proxy, telemetry+policy on (mx, ext_authz cached, http_grpc)",
            "rps": round(rps_on),
            "p99_ms": on[-1]["p99_ms"],
            "non_2xx": on[-1]["non_2xx"],
            "logs_written": stats.get("access_logs.grpc_access_log.logs_written", 0),
            "logs_dropped": stats.get("access_logs.grpc_access_log.logs_dropped", 0),
            "cache_hit": stats.get("http.inbound.ext_authz.cache_hit", 0),
            "cache_miss": stats.get("http.inbound.ext_authz.cache_miss", 0),
        },
        {
            "case": "proxy throughput on/off (goal: cost under 10%)",
            "ratio": round(ratio, 3),
            "cost_pct": round((1 - ratio) * 100, 1),
        },
    ]


def run(quick: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mixer.yaml"
        config.write_text(CONFIG)
        grpc_port, http_port = free_port(), free_port()
        args = [sys.executable, "-m", "mixer", "--config", str(config), "--log-level", "warning",
                "--grpc-addr", f"127.0.0.1:{grpc_port}", "--http-addr", f"127.0.0.1:{http_port}"]  # fmt: skip
        with process(args, cwd=REPO) as proc:
            wait_for_http(f"http://127.0.0.1:{http_port}/ready", proc=proc)
            wait_for_port("127.0.0.1", grpc_port, proc=proc)
            channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            entries = 20_000 if quick else 200_000
            _ingest(channel, 1000, 100)  # warm-up
            for batch in (1, 100):
                rate = _ingest(channel, entries // (10 if batch == 1 else 1), batch)
                rows.append({"case": f"ALS ingest, batches of {batch}", "entries_per_s": round(rate)})
            authz = external_auth_pb2_grpc.AuthorizationStub(channel)
            req = external_auth_pb2.CheckRequest()
            req.attributes.source.principal = "spiffe://cluster.local/ns/default/sa/productpage"
            req.attributes.request.http.path = "/reviews/0"
            n = 1000 if quick else 10000
            rows.append(
                _row("Check (allow, 1 list rule)", _latencies(lambda: authz.Check(req, timeout=5), n))
            )
            rls = rls_pb2_grpc.RateLimitServiceStub(channel)
            rl = rl_request("bench", [("PATH", "/productpage")])
            rows.append(
                _row("ShouldRateLimit (memory)", _latencies(lambda: rls.ShouldRateLimit(rl, timeout=5), n))
            )
            channel.close()
        rows.extend(_proxy_cost(Path(tmp), quick))
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
