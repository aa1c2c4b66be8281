"""Losing the control plane costs no request: a real proxy process driven by a real xDS server.

The control plane runs as its own process and is SIGKILLed while load runs; the proxy keeps serving
its last good config (and stays LIVE). A control plane with different config then comes back on the
same port: the proxy reconnects, applies the new config (traffic moves) and ACKs it.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import urllib.request

import pytest
from google.protobuf import json_format

from proxy.xds import api
from tests.integration.proxy.harness import start_upstream
from tests.integration.proxy.xds_support import (
    http_listener,
    routes,
    start_xds_proxy,
    stat,
    static,
    wait_until,
)
from tests.support.net import free_port, wait_for_port
from tests.support.xds_server import XdsServer


class Load:
    """Clients sending GET / over keep-alive connections until stopped; every outcome is counted."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self.upstreams: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}: {body[:200]!r}")
                upstream = json.loads(body)["upstream"]
                with self._lock:
                    self.ok += 1
                    self.upstreams.append(upstream)
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            except Exception as e:  # noqa: BLE001 - every failure is what the test counts
                with self._lock:
                    self.failures.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.close()

    def count(self) -> int:
        with self._lock:
            return self.ok

    def wait_for_more(self, n: int, timeout: float = 10.0) -> None:
        start = self.count()
        wait_until(lambda: self.count() >= start + n, timeout)


def resources_file(path, *messages) -> None:
    doc = {"resources": []}
    for msg in messages:
        body = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        doc["resources"].append({"@type": api.TYPE_PREFIX + msg.DESCRIPTOR.full_name, **body})
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_control_plane_killed_under_load_then_back_with_new_config(procs, tmp_path, delta):
    blue = start_upstream(procs, "blue")
    green = start_upstream(procs, "green")
    xds_port, listen_port = free_port(), free_port()

    first = tmp_path / "first.json"
    resources_file(
        first,
        static("backend", blue),
        http_listener("ingress", listen_port, "local-route"),
        routes("local-route", ("/", "backend")),
    )
    control_plane = procs.python(
        "-m", "tests.support.xds_server", "--port", str(xds_port), "--resources", str(first)
    )
    wait_for_port("127.0.0.1", xds_port, proc=control_plane)
    proxy = start_xds_proxy(procs, xds_port, listen_port, delta=delta)
    assert stat(proxy, "control_plane.connected_state") == 1

    restarted = XdsServer(port=xds_port)
    try:
        with Load(listen_port) as load:
            load.wait_for_more(50)

            control_plane.send_signal(signal.SIGKILL)
            control_plane.wait(10)
            wait_until(lambda: stat(proxy, "control_plane.connected_state") == 0)
            load.wait_for_more(100)  # still serving on the last good config
            with urllib.request.urlopen(proxy.admin + "/ready", timeout=5) as r:
                assert r.status == 200 and b"LIVE" in r.read()

            # Back, with different config: the cluster now points at green.
            restarted.set_resources(api.CLUSTER, [static("backend", green)])
            restarted.set_resources(api.LISTENER, [http_listener("ingress", listen_port, "local-route")])
            restarted.set_resources(api.ROUTE, [routes("local-route", ("/", "backend"))])
            restarted.start()
            wait_until(lambda: stat(proxy, "control_plane.connected_state") == 1, timeout=40)
            wait_until(lambda: load.upstreams and load.upstreams[-1] == "green", timeout=15)
            load.wait_for_more(50)

        cds_response = restarted.wait_for_response(lambda r: r.type_url == api.CLUSTER)
        ack = restarted.wait_for_request(
            lambda r: r.type_url == api.CLUSTER and r.response_nonce == cds_response.message.nonce
        )
        assert not ack.is_nack
        if not delta:
            assert ack.version_info == cds_response.message.version_info
    finally:
        restarted.stop()

    assert load.failures == []
    assert load.ok >= 200
    # Once switched, new requests go to the new cluster (a request keeps the cluster it started with).
    assert set(load.upstreams[-40:]) == {"green"}
