"""pilot push latency: N ADS clients (real gRPC, SotW), a VirtualService changes, time until all ACK.

Each run starts `python -m pilot` with 20 ServiceEntries, connects N simulated sidecars (CDS, LDS and
RDS, every response ACKed as Envoy does), waits until all are SYNCED, then changes a VirtualService
through the HTTP API and measures, per client, the time from the change to its ACK of the new route
configuration. Reports p50, p99 and max of those, plus pilot's RSS and the CPU seconds it spent on the
push. N = 100, 500, 1000 with 20 services (quick: 100), then the memory check with 1000 services and
2000 proxies (peak RSS is reported too: connecting and pushing included). Goals (issue 5): p99 under 1 s at 1000 proxies; RSS under 1.5 GB at 1000 services and
2000 proxies. `python -m bench.bench_pilot SERVICES:PROXIES ...` runs chosen sizes only.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

REPO = Path(__file__).resolve().parents[1]
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SERVICES = 20
STREAMS_PER_CHANNEL = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def services_yaml(count: int = SERVICES) -> str:
    docs = []
    for i in range(count):
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc{i}, namespace: default}}
spec:
  hosts: [svc{i}.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.1.{i // 250}.{i % 250 + 1}}}]
"""
        )
    return "---\n".join(docs)


def vs_yaml(timeout: int) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc0, namespace: default}}
spec:
  hosts: [svc0.default.svc.cluster.local]
  http:
  - timeout: {timeout}s
    route:
    - destination: {{host: svc0.default.svc.cluster.local}}
"""


def put(http: str, path: str, body: str) -> None:
    req = urllib.request.Request(
        http + path, data=body.encode(), method="PUT", headers={"Content-Type": "application/yaml"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def route_names(response) -> list[str]:
    names = set()
    for any_msg in response.resources:
        listener = listener_pb2.Listener()
        any_msg.Unpack(listener)
        for chain in [*listener.filter_chains, listener.default_filter_chain]:
            for f in chain.filters:
                if f.typed_config.type_url.endswith("HttpConnectionManager"):
                    hcm = http_connection_manager_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        names.add(hcm.rds.route_config_name)
    return sorted(names)


class SimClient:
    def __init__(self, channel: grpc.aio.Channel, index: int) -> None:
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.index = index
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.synced = asyncio.Event()
        self.rds_versions: list[tuple[str, float]] = []

    async def requests(self):
        while True:
            item = await self.outbox.get()
            if item is None:
                return
            yield item

    async def run(self) -> None:
        ip = f"127.2.{self.index // 250}.{self.index % 250 + 1}"
        node = base_pb2.Node(id=f"sidecar~{ip}~bench-{self.index}.default~default.svc.cluster.local")
        self.outbox.put_nowait(discovery_pb2.DiscoveryRequest(type_url=CDS, node=node))
        self.outbox.put_nowait(discovery_pb2.DiscoveryRequest(type_url=LDS))
        routes: list[str] | None = None
        call = self.stub.StreamAggregatedResources(self.requests())
        async for response in call:
            names = []
            if response.type_url == LDS:
                if routes is None:  # the route names are read once, as the bench changes no listener
                    routes = route_names(response)
                    self.outbox.put_nowait(
                        discovery_pb2.DiscoveryRequest(type_url=RDS, resource_names=routes)
                    )
            if response.type_url == RDS:
                names = routes or []
                self.rds_versions.append((response.version_info, time.monotonic()))
                self.synced.set()
            self.outbox.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    type_url=response.type_url,
                    resource_names=names,
                    response_nonce=response.nonce,
                    version_info=response.version_info,
                )
            )

    def stop(self) -> None:
        self.outbox.put_nowait(None)


def peak_rss(pid: int) -> float:
    """The highest RSS of a process so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS in MiB, CPU seconds) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def measure(n: int, grpc_addr: str, http: str, pid: int, timeout: int) -> dict:
    channels = [
        grpc.aio.insecure_channel(grpc_addr)
        for _ in range((n + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
    ]
    clients = [SimClient(channels[i // STREAMS_PER_CHANNEL], i) for i in range(n)]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in clients)), 600)
    connect_s = time.monotonic() - started
    await asyncio.sleep(0.5)  # let the initial ACKs land
    rss_before, cpu_before = proc_stats(pid)
    before = {c.index: len(c.rds_versions) for c in clients}
    t0 = time.monotonic()
    await asyncio.to_thread(
        put, http, "/apis/networking.istio.io/v1/namespaces/default/virtualservices/svc0", vs_yaml(timeout)
    )
    deadline = t0 + 60
    while time.monotonic() < deadline and any(len(c.rds_versions) <= before[c.index] for c in clients):
        await asyncio.sleep(0.01)
    latencies = [
        c.rds_versions[before[c.index]][1] - t0 for c in clients if len(c.rds_versions) > before[c.index]
    ]
    rss_after, cpu_after = proc_stats(pid)
    for c in clients:
        c.stop()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    return {
        "proxies": n,
        "received": len(latencies),
        "connect_all_s": round(connect_s, 3),
        "p50_s": round(percentile(latencies, 0.5), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "pilot_rss_mib": round(rss_after, 1),
        "pilot_peak_rss_mib": round(peak_rss(pid), 1),  # connect and push included
        "pilot_cpu_s_push": round(cpu_after - cpu_before, 2),
        "rss_growth_mib": round(rss_after - rss_before, 1),
    }


# (services, proxies): the latency sizes, then the memory check of issue 5 (1000 services, 2000 proxies).
FULL = [(SERVICES, 100), (SERVICES, 500), (SERVICES, 1000), (1000, 2000)]
QUICK = [(SERVICES, 100)]


def run(quick: bool, runs: list[tuple[int, int]] | None = None) -> list[dict]:
    import tempfile

    rows = []
    for i, (services, n) in enumerate(runs or (QUICK if quick else FULL)):
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "services.yaml").write_text(services_yaml(services))
            grpc_port, http_port = free_port(), free_port()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pilot",
                    "--config-dir",
                    tmp,
                    "--grpc-addr",
                    f"127.0.0.1:{grpc_port}",
                    "--http-addr",
                    f"127.0.0.1:{http_port}",
                    "--log-level",
                    "warning",
                ],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            http = f"http://127.0.0.1:{http_port}"
            try:
                for _ in range(300):
                    try:
                        with urllib.request.urlopen(http + "/ready", timeout=1) as r:
                            if r.status == 200:
                                break
                    except OSError:
                        time.sleep(0.1)
                row = asyncio.run(measure(n, f"127.0.0.1:{grpc_port}", http, proc.pid, 10 + i))
                rows.append({"services": services, **row})
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return rows


if __name__ == "__main__":
    chosen = [tuple(int(x) for x in a.split(":")) for a in sys.argv[1:] if ":" in a]
    print(json.dumps(run(quick="--quick" in sys.argv, runs=chosen or None), indent=2))
