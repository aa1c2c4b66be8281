"""THE STANDARD gRPC xDS CLIENT: grpcio itself (GRPC_XDS_BOOTSTRAP, target xds:///host:port) resolves a
service that pilot defines from ServiceEntry + WorkloadEntry, its RPCs reach that backend, and moving
the WorkloadEntry moves them."""

from __future__ import annotations

import json
import time

from tests.integration.pilot.pilot_harness import start_pilot
from tests.support.net import free_port, wait_for_port

HOST = "echo.default.svc.cluster.local"
SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 7070, name: grpc, protocol: GRPC}]
  resolution: STATIC
  workloadSelector: {labels: {app: echo}}
"""
WORKLOAD = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-1, namespace: default}
spec:
  address: 127.0.0.1
  labels: {app: echo}
  ports: {grpc: %d}
"""
WE_PATH = "/apis/networking.istio.io/v1/namespaces/default/workloadentries/echo-1"
SE_PATH = "/apis/networking.istio.io/v1/namespaces/default/serviceentries/echo"


def start_backend(procs, name: str) -> int:
    port = free_port()
    proc = procs.python("-m", "tests.integration.pilot.grpc_backend", "--port", str(port), "--name", name)
    wait_for_port("127.0.0.1", port, proc=proc)
    return port


def last_lines(procs, proc, n: int = 5) -> list[str]:
    return [line for line in procs.output(proc).splitlines() if line.startswith(("ok ", "err "))][-n:]


def wait_for_backend(procs, client, name: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        lines = last_lines(procs, client)
        if len(lines) >= 3 and all(line == f"ok {name}" for line in lines[-3:]):
            return
        if client.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"RPCs do not reach {name}; last: {lines}\n{procs.output(client)[-2000:]}")
        time.sleep(0.1)


def test_grpc_xds_client_reaches_the_backend_and_follows_the_workload_entry(procs, tmp_path):
    port_a, port_b = start_backend(procs, "a"), start_backend(procs, "b")
    pilot = start_pilot(procs)
    for path, body in ((SE_PATH, SERVICE), (WE_PATH, WORKLOAD % port_a)):
        status, reply = pilot.put(path, body)
        assert status in (200, 201), reply
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text(
        json.dumps(
            {
                "xds_servers": [
                    {
                        "server_uri": pilot.grpc,
                        "channel_creds": [{"type": "insecure"}],
                        "server_features": ["xds_v3"],
                    }
                ],
                "node": {
                    "id": "sidecar~127.0.0.1~grpc-client-1.default~default.svc.cluster.local",
                    "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"},
                    "locality": {},
                },
            }
        )
    )
    client = procs.python(
        "-m",
        "tests.integration.pilot.grpc_xds_client",
        f"xds:///{HOST}:7070",
        env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)},
    )
    wait_for_backend(procs, client, "a")
    entry = [e for e in pilot.get_json("/debug/syncz") if e["proxy_type"] == "grpc"]
    assert entry and all(entry[0][t] == "SYNCED" for t in ("lds", "cds", "eds")), entry
    status, reply = pilot.put(WE_PATH, WORKLOAD % port_b)
    assert status == 200, reply
    wait_for_backend(procs, client, "b")
