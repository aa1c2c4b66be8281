"""Issue 8: a pilot restart keeps the applied config (--config-store) and never serves a proxy a partial
config (nothing is pushed before the config dir and the store are loaded), with real `python -m pilot`
processes, SIGKILL, and real gRPC streams."""

from __future__ import annotations

import signal
import subprocess
import threading

import grpc
import httpx
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from tests.integration.pilot.ads_client import CDS, node, resource_names
from tests.integration.pilot.pilot_harness import SERVICES_YAML, start_pilot
from tests.support.net import free_port
from tests.support.processes import REPO

NETWORKING = REPO.parent / "shared" / "istio-samples" / "bookinfo" / "networking"
VS_URL = "/apis/networking.istio.io/v1/namespaces/default/virtualservices/reviews"
pytestmark = pytest.mark.skipif(not NETWORKING.is_dir(), reason=f"needs Istio's samples in {NETWORKING}")


def isthmus(*args: str, pilot: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args, "--pilot", pilot],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip


def test_applied_config_survives_sigkill_and_a_delete_survives_too(procs, tmp_path):
    store = tmp_path / "store"
    pilot = start_pilot(procs, None, "--config-store", str(store))
    r = isthmus("apply", "-f", str(NETWORKING / "destination-rule-all.yaml"), pilot=pilot.http)
    assert r.returncode == 0, r.stdout + r.stderr
    r = isthmus("apply", "-f", str(NETWORKING / "virtual-service-reviews-v3.yaml"), pilot=pilot.http)
    assert r.returncode == 0, r.stdout + r.stderr
    before = httpx.get(pilot.http + VS_URL).json()

    pilot.proc.send_signal(signal.SIGKILL)
    pilot.proc.wait(10)
    again = start_pilot(procs, None, "--config-store", str(store))
    after = httpx.get(again.http + VS_URL).json()
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "reviews" in isthmus("get", "virtualservices", pilot=again.http).stdout
    assert "reviews" in isthmus("get", "destinationrules", pilot=again.http).stdout
    # applying the same file again is "unchanged", as it would have been without the restart
    r = isthmus("apply", "-f", str(NETWORKING / "virtual-service-reviews-v3.yaml"), pilot=again.http)
    assert r.returncode == 0 and "unchanged" in r.stdout, r.stdout + r.stderr

    r = isthmus("delete", "-f", str(NETWORKING / "virtual-service-reviews-v3.yaml"), pilot=again.http)
    assert r.returncode == 0, r.stdout + r.stderr
    procs.stop(again.proc, signal.SIGKILL)
    third = start_pilot(procs, None, "--config-store", str(store))
    assert httpx.get(third.http + VS_URL).status_code == 404
    assert "reviews" in isthmus("get", "destinationrules", pilot=third.http).stdout


def test_a_corrupt_store_file_stops_the_start_up_with_its_path(procs, tmp_path):
    store = tmp_path / "store"
    pilot = start_pilot(procs, None, "--config-store", str(store))
    r = isthmus("apply", "-f", str(NETWORKING / "destination-rule-all.yaml"), pilot=pilot.http)
    assert r.returncode == 0, r.stdout + r.stderr
    procs.stop(pilot.proc)
    bad = store / "DestinationRule" / "default" / "reviews.json"
    assert bad.is_file()
    bad.write_text('{"source": "x.yaml", "resource": {"kind": "DestinationRule"')  # torn by hand
    proc = procs.python(
        "-m", "pilot", "--config-store", str(store),
        "--grpc-addr", f"127.0.0.1:{free_port()}", "--http-addr", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert proc.wait(30) == 1
    out = procs.output(proc)
    assert f"pilot: config store file {bad}: not valid JSON" in out, out


def test_a_proxy_connecting_while_pilot_starts_gets_the_whole_config_in_its_first_push(procs, tmp_path):
    """As istiod waits for its caches: a proxy that reconnects while a restarted pilot is still loading
    its config dir is served only once everything is loaded, so its first CDS has every cluster (a
    partial push would make it drop clusters and listeners that carry traffic)."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "services.yaml").write_text(SERVICES_YAML)
    n = 150  # enough files that loading takes a while
    for i in range(n):
        (config / f"se-{i:03}.yaml").write_text(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: svc-{i}, namespace: default}}\n"
            f"spec:\n  hosts: [svc-{i}.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n"
            "  ports: [{number: 80, name: http, protocol: HTTP}]\n"
        )
    grpc_port, http_port = free_port(), free_port()
    address = f"127.0.0.1:{grpc_port}"
    # the client is dialling (every 50-100 ms) before pilot even starts
    channel = grpc.insecure_channel(
        address,
        options=[("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 100),
                 ("grpc.min_reconnect_backoff_ms", 50)],
    )  # fmt: skip
    requests = iter(
        [
            discovery_pb2.DiscoveryRequest(
                type_url=CDS, node=node("sidecar~127.0.0.30~a.default~default.svc.cluster.local")
            )
        ]
    )
    done = threading.Event()
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
        _then_wait(requests, done), wait_for_ready=True, timeout=60
    )
    try:
        procs.python(
            "-m", "pilot", "--config-dir", str(config),
            "--grpc-addr", address, "--http-addr", f"127.0.0.1:{http_port}",
        )  # fmt: skip
        first = next(call)
        names = set(resource_names(first))
        assert {f"outbound|80||svc-{i}.example.com" for i in range(n)} <= names, sorted(names)[:5]
        assert "outbound|9080||ratings.default.svc.cluster.local" in names
    finally:
        done.set()
        call.cancel()
        channel.close()


def _then_wait(requests, done: threading.Event):
    yield from requests
    done.wait(60)  # keep the stream open until the test is done with it
