"""citadel: CSR signing rate and latency (p50/p99) through a real citadel process over gRPC/TLS."""

from __future__ import annotations

import concurrent.futures
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc

from api.istio.v1.auth import ca_pb2, ca_pb2_grpc
from proxy.agent import csr

REPO = Path(__file__).resolve().parents[1]
URI = "spiffe://cluster.local/ns/default/sa/bench"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("citadel exited before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(0.05)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(quick: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root_dir = Path(tmp) / "ca"
        grpc_port, http_port, mtls_port = _port(), _port(), _port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "citadel", "--root-dir", str(root_dir), "--log-level", "warning",
             "--grpc-addr", f"127.0.0.1:{grpc_port}", "--http-addr", f"127.0.0.1:{http_port}",
             "--grpc-mtls-addr", f"127.0.0.1:{mtls_port}"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            _wait_ready(f"http://127.0.0.1:{http_port}/ready", proc)
            token = subprocess.run(
                [sys.executable, "-m", "isthmus", "token", "create", "--namespace", "default",
                 "--service-account", "bench", "--root-dir", str(root_dir)],
                cwd=REPO, capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            creds = grpc.ssl_channel_credentials((root_dir / "root-cert.pem").read_bytes())
            channel = grpc.secure_channel(f"127.0.0.1:{grpc_port}", creds)
            stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
            metadata = [("authorization", f"Bearer {token}")]
            for concurrency in (1, 8):
                count = 100 if quick else 1000
                csrs = [
                    csr.build(URI)[1] for _ in range(count)
                ]  # key generation is the agent's cost, not citadel's

                def one(csr_pem: str) -> float:
                    start = time.perf_counter()
                    stub.CreateCertificate(ca_pb2.IstioCertificateRequest(csr=csr_pem, validity_duration=3600),
                                           metadata=metadata, timeout=30)  # fmt: skip
                    return time.perf_counter() - start

                one(csrs[0])  # warm the connection
                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                    latencies = list(pool.map(one, csrs))
                elapsed = time.perf_counter() - start
                rows.append(
                    {
                        "concurrency": concurrency,
                        "csrs": count,
                        "signed_per_s": count / elapsed,
                        "p50_ms": _percentile(latencies, 0.50) * 1000,
                        "p99_ms": _percentile(latencies, 0.99) * 1000,
                    }
                )
            channel.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return rows
