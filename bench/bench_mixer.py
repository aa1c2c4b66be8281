"""mixer: access-log ingest (entries/s and mixer's CPU per entry over real gRPC, and in process) and
Check/ShouldRateLimit latency p50/p99.

A real `python -m mixer` process; the client runs in this process. The entries are the proxy's own (its
gRPC access logger's encoder, with Istio's label Struct), sent as raw StreamAccessLogsMessage bytes in
batches of 1, 27 (a full 16 KiB buffer, what the proxy sends under load) and 100 back to back, and in
36-entry messages paced at 40 a second (what the proxies send in the proxy runs below); mixer's CPU per
entry is its utime + stime (/proc/<pid>/stat) over the stream. Then the proxy-side cost: one
proxy per configuration (1 worker each, an Istio inbound sidecar in front of nginx, driven by wrk with
the caller's metadata-exchange headers): telemetry and policy off; each mixer feature alone
(istio.metadata_exchange, ext_authz to mixer with the check cache, http_grpc access logs to mixer, the
rate-limit filter); and mx + ext_authz + http_grpc together, as a sidecar runs them. Runs are
interleaved round by round; medians of requests/s and of the proxy's CPU seconds per 1000 requests
(/proc/<pid>/stat) are compared with "off", and mixer's own CPU per request is shown (it shares the
machine's two cores with the proxy, wrk and nginx here). The issue's goal is under 10% cost.

``python -m bench.bench_mixer [--quick] [--cost-only | --ingest-only]``
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import yaml
from envoy.service.accesslog.v3 import als_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2_grpc

from bench.common import REPO, cpu_seconds, nginx_upstream, process
from proxy.accesslog.grpc_entries import encode_peer_metadata
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


# --- mixer's access-log ingest ----------------------------------------------------------------------

NODE_ID = "sidecar~127.0.0.13~reviews-v2.default~default.svc.cluster.local"
ALS_METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


def _proxy_entries(n: int) -> list[bytes]:
    """``n`` HTTPAccessLogEntry wire bytes as the proxy's gRPC access logger writes them (its own
    encoder: the isthmus label Struct, addresses, times, request and response parts), for two inbound
    edges (productpage -> reviews-v2, the ingress gateway -> productpage-v1) with varying request ids,
    peer ports, durations, sizes and an occasional 503."""
    import random

    from proxy.accesslog.grpc import HTTP, AlsStats, GrpcAccessLogger, GrpcLogSink
    from proxy.core.headers import Headers
    from proxy.core.stream_info import StreamInfo
    from proxy.stats.store import Store

    rng = random.Random(7)
    edges = []
    for local, caller, host in (
        (("reviews-v2", "reviews", "v2"), PEER_HEADERS["x-envoy-peer-metadata"], "reviews:9080"),
        (("productpage-v1", "productpage", "v1"), GATEWAY_PEER, "productpage:9080"),
    ):
        logger = GrpcAccessLogger(
            "bench", HTTP, GrpcLogSink(HTTP, "bench", None, None, AlsStats(Store())), None
        )
        workload, app, version = local
        logger._local = {"workload": workload, "namespace": "default", "app": app, "version": version,
                         "service_account": f"bookinfo-{app}", "principal": ""}  # fmt: skip
        logger._inbound = True
        edges.append((logger, caller, host))
    out = []
    for i in range(n):
        logger, caller, host = edges[i % 2]
        h = Headers.from_lowercase(
            [(":method", "GET"), (":path", f"/reviews/{i % 7}"), (":authority", host), (":scheme", "http"),
             ("user-agent", "wrk"), ("x-request-id", f"{rng.getrandbits(64):016x}-{i:08x}"),
             ("x-envoy-peer-metadata", caller)]
        )  # fmt: skip
        si = StreamInfo(("127.0.0.1", 40000 + i % 1000), ("127.0.0.1", 15006), request_headers=h)
        si.response_code = 503 if rng.random() < 0.02 else 200
        si.bytes_sent = rng.randint(100, 5000)
        si.upstream_host, si.upstream_cluster = "127.0.0.1:80", "inbound|9080||"
        si.response_headers = Headers.from_lowercase([(":status", str(si.response_code))])
        si.finish()
        si.end_monotonic = si.start_monotonic + rng.random() * 0.05
        out.append(logger.encode(si))
    return out


def _batches(entries: list[bytes], per: int) -> list[bytes]:
    """StreamAccessLogsMessage bytes, ``per`` entries each; the first names the node."""
    from proxy.accesslog.grpc_wire import batch_message

    ident = als_pb2.StreamAccessLogsMessage()
    ident.identifier.node.id = NODE_ID
    ident.identifier.log_name = "bench"
    first = ident.identifier.SerializeToString()
    return [
        batch_message(True, entries[i : i + per], first if i == 0 else b"")
        for i in range(0, len(entries), per)
    ]


def _ingest(channel, mixer_pid: int, entries: list[bytes], per: int) -> tuple[float, float]:
    """(entries/s, mixer's CPU µs per entry) for one stream of ``entries`` in batches of ``per``."""
    call = channel.stream_unary(
        ALS_METHOD,
        request_serializer=bytes,
        response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
    )
    messages = _batches(entries, per)
    before = cpu_seconds(mixer_pid)
    start = time.perf_counter()
    call(iter(messages), timeout=600)
    wall = time.perf_counter() - start
    return len(entries) / wall, (cpu_seconds(mixer_pid) - before) / len(entries) * 1e6


def _ingest_paced(
    channel, mixer_pid: int, entries: list[bytes], per: int, rate: float, seconds: float
) -> float:
    """Mixer's CPU µs per entry for one stream of ``per``-entry messages sent ``rate`` times a second (as
    a proxy under load sends them: each message arrives on an idle mixer), net of mixer's idle CPU over
    the same time."""
    call = channel.stream_unary(
        ALS_METHOD,
        request_serializer=bytes,
        response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
    )
    messages = _batches(entries, per)
    n = int(rate * seconds)
    before = cpu_seconds(mixer_pid)
    time.sleep(seconds)
    idle = cpu_seconds(mixer_pid) - before

    def paced():
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield messages[i % len(messages)]

    before = cpu_seconds(mixer_pid)
    call(paced(), timeout=600)
    used = cpu_seconds(mixer_pid) - before
    return (used - idle * n / rate / seconds) / (n * per) * 1e6


def _ingest_rows(channel, mixer_pid: int, quick: bool) -> list[dict]:
    rows = []
    entries = _proxy_entries(10_000 if quick else 50_000)
    _ingest(channel, mixer_pid, entries[:2000], 27)  # warm-up
    for per in (1, 27, 100):  # 27: a full 16 KiB buffer of the proxy's entries
        sent = entries[: len(entries) // 10] if per == 1 else entries
        rate, cpu_us = _ingest(channel, mixer_pid, sent, per)
        rows.append(
            {
                "case": f"ALS ingest, batches of {per}",
                "entries_per_s": round(rate),
                "mixer_cpu_us_per_entry": round(cpu_us, 1),
            }
        )
    # what the proxies do in bench-mixer's proxy runs: ~36 entries per message, ~40 messages a second
    runs = [_ingest_paced(channel, mixer_pid, entries, 36, 40.0, 3.0) for _ in range(3 if quick else 5)]
    rows.append(
        {
            "case": "ALS ingest, 36 per message at 40/s (net of idle, median)",
            "mixer_cpu_us_per_entry": round(statistics.median(runs), 1),
        }
    )
    return rows


def _ingest_in_process(quick: bool) -> dict:
    """Mixer's ingest work alone, in this process (process time, best of 5): parsed batches of 27
    entries (a 16 KiB proxy buffer) through the StreamAccessLogs handler into Istio's metrics and the
    dashboard's store. No gRPC, so it attributes the cost; the real process adds the transport."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from mixer.config.model import MixerConfig
    from mixer.server.accesslog import AccessLogService
    from mixer.server.app import Telemetry
    from mixer.server.metrics import MixerMetrics
    from mixer.telemetry.alsview import StreamAccessLogsView

    entries = _proxy_entries(4000 if quick else 20000)
    messages = [StreamAccessLogsView.FromString(m) for m in _batches(entries, 27)]  # as grpc hands them

    async def stream():
        for m in messages:
            yield m

    best = float("inf")
    for _ in range(5):
        registry = CollectorRegistry()
        metrics = MixerMetrics(registry)
        service = AccessLogService(Telemetry(registry, metrics, MixerConfig()), metrics)
        start = time.process_time()
        asyncio.run(service.StreamAccessLogs(stream(), None))
        best = min(best, time.process_time() - start)
    return {
        "case": "ALS ingest in process (batches of 27)",
        "mixer_cpu_us_per_entry": round(best / len(entries) * 1e6, 1),
    }


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


# --- proxy cost of telemetry + policy, per feature ---------------------------------------------------

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
# What the caller's sidecar sends (istio.metadata_exchange on productpage): every run sends it, so
# every configuration sees the same requests.
PEER_HEADERS = {
    "x-envoy-peer-metadata-id": "sidecar~127.0.0.11~productpage-v1-x1.default~default.svc.cluster.local",
    "x-envoy-peer-metadata": encode_peer_metadata(
        {
            "WORKLOAD_NAME": "productpage-v1",
            "NAMESPACE": "default",
            "SERVICE_ACCOUNT": "bookinfo-productpage",
            "LABELS": {"app": "productpage", "version": "v1"},
        }
    ),
}
GATEWAY_PEER = encode_peer_metadata(
    {
        "WORKLOAD_NAME": "istio-ingressgateway",
        "NAMESPACE": "istio-system",
        "SERVICE_ACCOUNT": "istio-ingressgateway-service-account",
        "LABELS": {"app": "istio-ingressgateway", "istio": "ingressgateway"},
    }
)

MX, AUTHZ, ALS, RL = "mx", "ext_authz", "als", "ratelimit"
FEATURES = frozenset({MX, AUTHZ, ALS, RL})
# (row name, features): each feature alone, then the sidecar as Istio runs it with mixer.
CONFIGS = (
    ("off", frozenset()),
    ("metadata exchange", frozenset({MX})),
    ("ext_authz (cached check)", frozenset({AUTHZ})),
    ("access log to mixer (http_grpc)", frozenset({ALS})),
    ("rate limit (one RPC per request)", frozenset({RL})),
    ("telemetry+policy on (mx, ext_authz cached, http_grpc)", frozenset({MX, AUTHZ, ALS})),
)
HEADLINE = CONFIGS[-1][0]


def _cluster(name: str, port: int) -> dict:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


def _typed(name: str, type_url: str, **config) -> dict:
    return {"name": name, "typed_config": {"@type": "type.googleapis.com/" + type_url, **config}}


def _sidecar_bootstrap(listen: int, admin: int, upstream: int, mixer_port: int, features: frozenset) -> dict:
    """An inbound sidecar running the given mixer features (none: a plain proxy)."""
    mixer = {"envoy_grpc": {"cluster_name": "mixer"}}
    filters, logs, route = [], [], {"match": {"prefix": "/"}, "route": {"cluster": "app"}}
    if MX in features:
        filters.append(
            _typed(
                "istio.metadata_exchange",
                "io.istio.http.peer_metadata.Config",
                downstream_discovery=[{"istio_headers": {}}],
                downstream_propagation=[{"istio_headers": {}}],
            )
        )
    if AUTHZ in features:
        filters.append(
            _typed(
                "envoy.filters.http.ext_authz",
                "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                grpc_service={**mixer, "timeout": "1s"},
                transport_api_version="V3",
            )
        )
    if RL in features:
        filters.append(
            _typed(
                "envoy.filters.http.ratelimit",
                "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                domain="bench",
                timeout="1s",
                rate_limit_service={"grpc_service": mixer, "transport_api_version": "V3"},
            )
        )
        route["route"]["rate_limits"] = [
            {"actions": [{"request_headers": {"header_name": ":path", "descriptor_key": "PATH"}}]}
        ]
    if ALS in features:
        logs.append(
            _typed(
                "envoy.access_loggers.http_grpc",
                "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
                common_config={"log_name": "bench", "grpc_service": mixer, "transport_api_version": "V3"},
            )
        )
    filters.append(_typed("envoy.filters.http.router", "envoy.extensions.filters.http.router.v3.Router"))
    hcm = {
        "@type": HCM,
        "stat_prefix": "inbound",
        "access_log": logs,
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": filters,
    }
    clusters = [_cluster("app", upstream)]
    if features:
        clusters.append(_cluster("mixer", mixer_port))
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    return {
        "node": SIDECAR_NODE,
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "virtualInbound",
                    "traffic_direction": "INBOUND",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [chain],
                }
            ],
            "clusters": clusters,
        },
    }


def _stats(admin: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?format=json", timeout=5) as resp:
        data = json.load(resp)
    return {s["name"]: int(s["value"]) for s in data.get("stats", []) if "value" in s}


def _wrk(url: str, seconds: int, headers: dict[str, str], connections: int = 16) -> tuple[float, int]:
    """(requests/s, requests completed) from one wrk run sending ``headers`` on every request."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"bench_mixer: non-2xx answers from {url}:\n{out}")
    return rps, total


@contextlib.contextmanager
def _sidecars(tmp: Path, upstream: int, mixer_port: int):
    """Every configuration's proxy, all running for the whole measurement: {name: (port, admin, proc)}."""
    with contextlib.ExitStack() as stack:
        out = {}
        for i, (name, features) in enumerate(CONFIGS):
            listen, admin = free_port(), free_port()
            path = tmp / f"sidecar-{i}.yaml"
            path.write_text(yaml.safe_dump(_sidecar_bootstrap(listen, admin, upstream, mixer_port, features)))
            args = [sys.executable, "-m", "proxy", "-c", str(path), "-l", "warning"]
            proc = stack.enter_context(process(args, cwd=REPO))
            out[name] = (listen, admin, proc)
        for listen, admin, proc in out.values():
            wait_for_http(f"http://127.0.0.1:{admin}/ready", proc=proc)
            wait_for_port("127.0.0.1", listen, proc=proc)
        yield out


def _proxy_cost(tmp: Path, quick: bool) -> list[dict]:
    """Each configuration's proxy throughput and CPU per request, interleaved rounds, medians.

    All proxies run side by side; each round drives every one of them once, in a rotated order, so
    the machine's background load falls on every configuration alike. CPU is the proxy process's own
    (utime + stime from /proc/<pid>/stat) divided by the requests wrk completed: it shows the cost
    even when wall-clock throughput is noisy."""
    # Many short rounds: the other load on a shared machine comes and goes; each configuration must
    # see the same mix of it.
    seconds, rounds = (1, 4) if quick else (2, 9)
    grpc_port, http_port = free_port(), free_port()
    config = tmp / "mixer-cost.yaml"
    config.write_text(CONFIG)
    args = [sys.executable, "-m", "mixer", "--config", str(config), "--log-level", "warning",
            "--grpc-addr", f"127.0.0.1:{grpc_port}", "--http-addr", f"127.0.0.1:{http_port}"]  # fmt: skip
    rps: dict[str, list[float]] = {name: [] for name, _ in CONFIGS}
    cpu: dict[str, list[float]] = {name: [] for name, _ in CONFIGS}  # CPU seconds per 1000 requests
    # mixer's own CPU per 1000 requests of each configuration: it shares this machine's two cores
    # with the proxy, wrk and nginx, so its ingest work shows in the proxy's throughput here.
    mixer_cpu: dict[str, list[float]] = {name: [] for name, _ in CONFIGS}
    with nginx_upstream() as upstream, process(args, cwd=REPO) as mixer:
        wait_for_http(f"http://127.0.0.1:{http_port}/ready", proc=mixer)
        wait_for_port("127.0.0.1", grpc_port, proc=mixer)
        with _sidecars(tmp, upstream, grpc_port) as proxies:
            for listen, _, _ in proxies.values():  # warm-up: pools, the mixer channel, the cache
                _wrk(f"http://127.0.0.1:{listen}/reviews/0", 1, PEER_HEADERS)
            names = list(proxies)
            for r in range(rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    listen, _, proc = proxies[name]
                    before, mixer_before = cpu_seconds(proc.pid), cpu_seconds(mixer.pid)
                    one_rps, total = _wrk(f"http://127.0.0.1:{listen}/reviews/0", seconds, PEER_HEADERS)
                    used = cpu_seconds(proc.pid) - before
                    mixer_used = cpu_seconds(mixer.pid) - mixer_before
                    mixer_cpu[name].append(mixer_used / total * 1000 if total else 0.0)
                    rps[name].append(one_rps)
                    cpu[name].append(used / total * 1000 if total else 0.0)
            time.sleep(2.5)  # the access-log flush interval (1 s): let the last batches go out
            stats = {name: _stats(admin) for name, (_, admin, _) in proxies.items()}
            batching = _mixer_batching(http_port)
    base_rps, base_cpu = statistics.median(rps["off"]), statistics.median(cpu["off"])
    rows = []
    for name, features in CONFIGS:
        med_rps, med_cpu = statistics.median(rps[name]), statistics.median(cpu[name])
        row = {
            "case": f"proxy, {name}",
            "rps": round(med_rps),
            "cpu_s_per_1k_req": round(med_cpu, 4),
        }
        if features:
            # one access-log entry per request: for the http_grpc rows this is mixer's CPU per entry
            row["mixer_cpu_us_per_req"] = round(statistics.median(mixer_cpu[name]) * 1000, 1)
        if features:
            row["rps_cost_pct"] = round((1 - med_rps / base_rps) * 100, 1) if base_rps else None
            row["cpu_cost_pct"] = round((med_cpu / base_cpu - 1) * 100, 1) if base_cpu else None
        s = stats[name]
        if ALS in features:
            row["requests"] = s.get("http.inbound.downstream_rq_completed", 0)  # every one is logged
            row["logs_written"] = s.get("access_logs.grpc_access_log.logs_written", 0)
            row["logs_dropped"] = s.get("access_logs.grpc_access_log.logs_dropped", 0)
        if AUTHZ in features:
            row["cache_hit"] = s.get("http.inbound.ext_authz.cache_hit", 0)
            row["cache_miss"] = s.get("http.inbound.ext_authz.cache_miss", 0)
        rows.append(row)
    head = rows[-1]
    rows.append({"case": "mixer, entries per StreamAccessLogs message (the proxies' batches)", **batching})
    rows.append(
        {
            "case": "proxy cost, telemetry+policy on vs off (goal: under 10%)",
            "rps_cost_pct": head["rps_cost_pct"],
            "cpu_cost_pct": head["cpu_cost_pct"],
        }
    )
    return rows


def _mixer_batching(http_port: int) -> dict:
    """Entries and StreamAccessLogs messages mixer received from the proxies, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("mixer_telemetry_reports_total", "mixer_accesslog_messages_total"):
                values[sample.name] = values.get(sample.name, 0) + sample.value
    entries, messages = (
        values.get("mixer_telemetry_reports_total", 0),
        values.get("mixer_accesslog_messages_total", 0),
    )
    return {
        "entries": int(entries),
        "messages": int(messages),
        "per_message": round(entries / messages, 1) if messages else None,
    }


def _feature_cpu(quick: bool) -> list[dict]:
    """Each feature's own CPU per request, in this process (process time, best of 5 runs): the
    filter hooks and the logger (record, encode, batch) on a request like wrk's. Unlike the proxy
    runs, this does not move with the machine's other load, so it attributes the cost exactly; the
    proxy runs show what it adds up to."""
    from types import SimpleNamespace

    from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
    from google.protobuf import json_format

    from api.io.istio.http.peer_metadata import config_pb2
    from proxy.accesslog.grpc import HTTP, AlsStats, GrpcAccessLogger, GrpcLogSink
    from proxy.config.context import FactoryContext
    from proxy.core.headers import Headers
    from proxy.core.stream_info import StreamInfo
    from proxy.filters.http.ext_authz import ExtAuthzConfig, ExtAuthzFilter
    from proxy.filters.http.ext_authz.attributes import flatten
    from proxy.filters.http.ext_authz.cache import Validity
    from proxy.filters.http.ext_authz.decision import OK, Decision
    from proxy.filters.http.peer_metadata import PeerMetadataConfig, PeerMetadataFilter
    from proxy.filters.network.http_connection_manager.manager import _set_pairs
    from proxy.stats.store import Store
    from tests.unit.proxy.filters.http.fakes import FakeCluster, FakeClusterManager

    n = 2000 if quick else 10000
    store = Store()
    ctx = FactoryContext(stats=store, cluster_manager=FakeClusterManager(FakeCluster("mixer", store)))
    authz = ExtAuthzConfig(
        json_format.ParseDict(
            {"grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}}}, ext_authz_pb2.ExtAuthz()
        ),
        ctx,
        "bench",
    )
    mx = PeerMetadataConfig(
        json_format.ParseDict(
            {
                "downstream_discovery": [{"istio_headers": {}}],
                "downstream_propagation": [{"istio_headers": {}}],
            },
            config_pb2.Config(),
        ),
        SIDECAR_NODE["id"],
        SIDECAR_NODE["metadata"],
        "bench",
    )
    sink = GrpcLogSink(HTTP, "bench", None, None, AlsStats(store))
    sink._task = object()  # no sender here: the flush work is done below, in line
    logger = GrpcAccessLogger("bench", HTTP, sink, None)
    logger._local, logger._inbound = {"workload": "reviews-v2", "namespace": "default"}, True
    conn = SimpleNamespace(remote_address=("127.0.0.1", 40000), local_address=("127.0.0.1", 15006), ssl=None)
    config = SimpleNamespace(stat_prefix="inbound")

    def stream():
        h = Headers.from_lowercase(
            [(":method", "GET"), (":path", "/reviews/0"), (":authority", "127.0.0.1:15006"), (":scheme", "http"),
             ("user-agent", "wrk"), ("x-request-id", "0f1e2d3c-aaaa"), *PEER_HEADERS.items()]
        )  # fmt: skip
        si = StreamInfo(conn.remote_address, conn.local_address, request_headers=h)
        si.response_code, si.bytes_sent, si.upstream_host, si.upstream_cluster = (
            200,
            1024,
            "127.0.0.1:80",
            "app",
        )
        si.response_headers = Headers.from_lowercase([(":status", "200"), ("content-length", "1024")])
        return SimpleNamespace(
            request_headers=h,
            stream_info=si,
            connection=conn,
            route=None,
            config=config,
            response_headers_to_set=None,
        )

    authz.cache.store(flatten(stream(), {}), Decision(OK), Validity(3600, None, ("source.principal",)))

    def run_hook(coro):
        try:
            coro.send(None)
        except StopIteration:
            pass

    def setup_only():
        stream()

    def with_mx():
        st = stream()
        f = PeerMetadataFilter(mx)
        run_hook(f.on_request_headers(st, True))
        run_hook(f.on_response_headers(st, st.stream_info.response_headers, True))
        if st.response_headers_to_set:  # what the connection manager does with them on the head
            _set_pairs(st.stream_info.response_headers.items(), st.response_headers_to_set)

    def with_authz():
        st = stream()
        f = ExtAuthzFilter(authz)
        run_hook(f.on_request_headers(st, True))
        run_hook(f.on_response_headers(st, st.stream_info.response_headers, True))

    def with_als():
        st = stream()
        st.stream_info.finish()
        logger.log(st.stream_info)
        if len(sink._pending) >= 32:
            sink._message(sink._take_batch(), False)

    def cpu_us(fn) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for _ in range(n):
                fn()
            best = min(best, time.process_time() - start)
        return best / n * 1e6

    base = cpu_us(setup_only)
    rows = []
    for name, fn in (
        ("metadata exchange (request + response hooks)", with_mx),
        ("ext_authz, cache hit", with_authz),
        ("access log to mixer (log + encode + batch)", with_als),
    ):
        rows.append({"case": f"feature CPU, {name}", "cpu_us_per_req": round(max(0.0, cpu_us(fn) - base), 1)})
    rows.append(
        {"case": "feature CPU, all three", "cpu_us_per_req": round(sum(r["cpu_us_per_req"] for r in rows), 1)}
    )
    return rows


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
            rows.extend(_ingest_rows(channel, proc.pid, quick))
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
        rows.append(_ingest_in_process(quick))
        rows.extend(_feature_cpu(quick))
        rows.extend(_proxy_cost(Path(tmp), quick))
    return rows


def run_ingest(quick: bool) -> list[dict]:
    """The ALS ingest rows only (a real mixer over gRPC, and in process)."""
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
            rows = _ingest_rows(channel, proc.pid, quick)
            channel.close()
    return [*rows, _ingest_in_process(quick)]


if __name__ == "__main__":
    if "--ingest-only" in sys.argv:
        results = run_ingest(quick="--quick" in sys.argv)
    elif "--cost-only" in sys.argv:
        with tempfile.TemporaryDirectory() as d:
            results = _feature_cpu("--quick" in sys.argv) + _proxy_cost(Path(d), quick="--quick" in sys.argv)
    else:
        results = run(quick="--quick" in sys.argv)
    for r in results:
        print(r)
