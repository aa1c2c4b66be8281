"""A small mesh for the security end-to-end tests: real citadel, pilot, agents+sidecars and apps.

Local mode (INTERCEPTION_MODE NONE) has no inbound capture: a caller's sidecar would reach the app
itself. To put the server's sidecar between them, as transparent mode does, one nat rule per server
workload (in a chain of our own, removed at teardown) sends TCP to ``<server ip>:<app port>`` to the
server sidecar's ``virtualInbound`` (15006); the server's agent and proxy run with GID 1337, whose own
connections to the app are left alone (istio-init's owner exclusion, here by GID). The proxy's ``original_dst``
listener filter reads the original port with SO_ORIGINAL_DST, so pilot's per-port chains apply.
Addresses: 127.0.0.160-170 only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.integration.citadel.harness import start_citadel
from tests.support.net import free_port, wait_for_http

PROXY_GID = 1337
CONTROL_IP = "127.0.0.160"
NAT_CHAIN = "ISTHMUS_SEC_E2E"


@dataclass
class Workload:
    name: str
    ip: str
    namespace: str
    sa: str
    agent: subprocess.Popen | None = None

    @property
    def node_prefix(self) -> str:
        return f"sidecar~{self.ip}~{self.name}.{self.namespace}"

    @property
    def spiffe(self) -> str:
        return f"spiffe://cluster.local/ns/{self.namespace}/sa/{self.sa}"


def iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["iptables", "-t", "nat", *args], capture_output=True, text=True, check=check)


def install_capture(server_ip: str, port: int) -> None:
    iptables("-N", NAT_CHAIN, check=False)
    iptables("-C", "OUTPUT", "-j", NAT_CHAIN, check=False).returncode == 0 or iptables(
        "-I", "OUTPUT", "-j", NAT_CHAIN
    )
    iptables(
        "-A", NAT_CHAIN, "-p", "tcp", "-d", f"{server_ip}/32", "--dport", str(port),
        "-m", "owner", "!", "--gid-owner", str(PROXY_GID),
        "-j", "DNAT", "--to-destination", f"{server_ip}:15006",
    )  # fmt: skip


def remove_capture() -> None:
    iptables("-D", "OUTPUT", "-j", NAT_CHAIN, check=False)
    iptables("-F", NAT_CHAIN, check=False)
    iptables("-X", NAT_CHAIN, check=False)


class SecurityMesh:
    def __init__(self, procs, tmp: Path) -> None:
        self.procs = procs
        self.tmp = tmp
        tmp.chmod(0o755)
        self.citadel = start_citadel(procs, tmp / "ca", "--server-ips", "127.0.0.1")
        self.grpc_port, self.http_port = free_port(CONTROL_IP), free_port(CONTROL_IP)
        self.config_dir = tmp / "config"
        self.config_dir.mkdir()
        self.pilot = procs.python(
            "-m", "pilot", "--config-dir", str(self.config_dir),
            "--grpc-addr", f"{CONTROL_IP}:{self.grpc_port}", "--http-addr", f"{CONTROL_IP}:{self.http_port}",
        )  # fmt: skip
        wait_for_http(self.pilot_url + "/ready", proc=self.pilot, timeout=30)
        self.workloads: dict[str, Workload] = {}

    @property
    def pilot_url(self) -> str:
        return f"http://{CONTROL_IP}:{self.http_port}"

    def start_sidecar(
        self, name: str, ip: str, namespace: str, sa: str, *, service: str | None = None, port: int = 0
    ) -> Workload:
        w = Workload(name, ip, namespace, sa)
        d = self.tmp / name
        d.mkdir(mode=0o777)
        d.chmod(0o777)
        token = d / "token"
        token.write_text(self.citadel.token(namespace, sa))
        token.chmod(0o644)
        root = d / "root-cert.pem"  # citadel's dir is private (it holds the root key)
        root.write_bytes(self.citadel.root_pem)
        root.chmod(0o644)
        args = [
            sys.executable, "-m", "proxy.agent",
            "--citadel", f"127.0.0.1:{self.citadel.grpc_port}",
            "--citadel-mtls", f"127.0.0.1:{self.citadel.mtls_port}",
            "--root-cert", str(root), "--token-file", str(token),
            "--sds-socket", str(d / "SDS"), "--bootstrap", str(d / "envoy-rev.json"),
            "--namespace", namespace, "--service-account", sa, "--name", name, "--ip", ip,
            "--discovery-address", f"{CONTROL_IP}:{self.grpc_port}",
            "--interception-mode", "NONE", "--drain-duration", "1s", "--cert-ttl", "1h",
        ]  # fmt: skip
        if service:
            args += ["--label", f"app={service}", "--service", service, "--service-ports", f"http:{port}"]
            # the server's sidecar runs with the proxy GID, so its calls to the app are not captured
            args = ["setpriv", f"--regid={PROXY_GID}", "--clear-groups", *args]
        w.agent = self.procs.start(args, env={"HOME": str(d)})
        self.workloads[name] = w
        return w

    def wait_ready(self, w: Workload, timeout: float = 60) -> None:
        try:
            wait_for_http(f"http://{w.ip}:15021/healthz/ready", timeout=timeout, proc=w.agent)
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError(f"{w.name}: {e}\n{self.procs.output(w.agent)}") from None

    def start_app(self, ip: str, port: int, name: str) -> subprocess.Popen:
        proc = self.procs.python(
            "-m", "tests.support.upstream_app", "--host", ip, "--port", str(port), "--name", name
        )
        wait_for_http(f"http://{ip}:{port}/", proc=proc)  # straight to the app: no capture yet
        return proc

    # -- pilot ------------------------------------------------------------------------------------------
    def apply(self, yaml_text: str) -> subprocess.CompletedProcess:
        path = self.tmp / f"apply-{time.monotonic_ns()}.yaml"
        path.write_text(yaml_text)
        return self.isthmus("apply", "-f", str(path), "--pilot", self.pilot_url)

    def delete(self, yaml_text: str) -> subprocess.CompletedProcess:
        path = self.tmp / f"delete-{time.monotonic_ns()}.yaml"
        path.write_text(yaml_text)
        return self.isthmus("delete", "-f", str(path), "--pilot", self.pilot_url)

    def isthmus(self, *args: str) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [sys.executable, "-m", "isthmus", *args], capture_output=True, text=True, timeout=60,
            env={**os.environ, "NO_PROXY": "*"},
        )  # fmt: skip
        assert out.returncode == 0, f"isthmus {args}: {out.stdout}\n{out.stderr}"
        return out

    def syncz(self) -> list[dict]:
        with urllib.request.urlopen(self.pilot_url + "/debug/syncz", timeout=10) as r:
            return json.loads(r.read())


def raw_http(ip: str, port: int, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes as they are (no client library normalises them); (status, body)."""
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")[1:]
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
                if not length and body.endswith(b"0\r\n\r\n"):
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, body


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def via_sidecar(client: Workload, host: str, port: int, path: str, headers: dict | None = None):
    """An absolute-form request to the client's HTTP_PROXY listener (<ip>:15001), as an app with
    HTTP_PROXY set sends it; the path goes out byte for byte."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    req = (
        f"GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Connection: close\r\n\r\n"
    ).encode()
    return raw_http(client.ip, 15001, req)
