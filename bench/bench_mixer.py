"""mixer: access-log ingest rate (entries/s over real gRPC) and Check/ShouldRateLimit latency p50/p99.

A real `python -m mixer` process; the client runs in this process. The proxy-side comparison (proxy
throughput with telemetry and policy on vs off; the issue's goal is under 10% cost) needs the proxy's
ext_authz/ratelimit/ALS filters and is listed as a TODO row until they land.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from google.protobuf import struct_pb2

from bench.common import REPO, process
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
    rows.append(
        {
            "case": "TODO: proxy throughput, telemetry+policy on vs off (goal: <10% cost)",
            "note": "needs the proxy's ext_authz/ratelimit/ALS filters",
        }
    )
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
