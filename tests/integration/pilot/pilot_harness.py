"""Start a real `python -m pilot` for tests, and talk to its HTTP API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port, wait_for_http

SERVICES_YAML = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-1, namespace: default}
spec: {address: 127.0.0.21, labels: {app: ratings, version: v1}}
"""


@dataclass
class RunningPilot:
    proc: object
    grpc: str
    http: str

    def get_json(self, path: str):
        with urllib.request.urlopen(self.http + path, timeout=10) as resp:
            return json.loads(resp.read())

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.http + path, timeout=10) as resp:
            return resp.read().decode()

    def put(self, path: str, body: str) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.http + path, data=body.encode(), method="PUT", headers={"Content-Type": "application/yaml"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def syncz_entry(self, node_id: str) -> dict:
        entries = [e for e in self.get_json("/debug/syncz") if e["proxy"] == node_id]
        assert entries, f"{node_id} not in syncz"
        return entries[-1]


def start_pilot(procs, config_dir: Path | None = None, *extra: str) -> RunningPilot:
    grpc_port, http_port = free_port(), free_port()
    args = ["-m", "pilot", "--grpc-addr", f"127.0.0.1:{grpc_port}", "--http-addr", f"127.0.0.1:{http_port}"]
    if config_dir is not None:
        args += ["--config-dir", str(config_dir)]
    proc = procs.python(*args, *extra)
    http = f"http://127.0.0.1:{http_port}"
    wait_for_http(http + "/ready", proc=proc, timeout=30)
    return RunningPilot(proc, f"127.0.0.1:{grpc_port}", http)
