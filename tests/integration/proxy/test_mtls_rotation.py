"""Certificate rotation under load between two real sidecars, and citadel going away.

* 20 s certificates (the agents renew every ~10 s and push them over SDS): 60 s of paced traffic
  through client sidecar -> mTLS -> server sidecar -> app has zero failed requests, and the server
  side really saw different client certificates over time (the XFCC ``Hash`` changes; the secrets'
  versions in /config_dump went up).
* Citadel stopped for 30 s while certificates are still valid: zero failed requests; a renewal due
  during the outage happens once citadel is back.

The client sidecar's cluster closes a connection after 25 requests (max_requests_per_connection), so
new mTLS connections, which pick up the newest certificate, are made all along, as in real traffic.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from dataclasses import dataclass, field

from tests.integration.citadel.harness import start_citadel
from tests.integration.proxy.harness import start_upstream
from tests.integration.proxy.mtls_support import CLIENT_SA, dynamic_secrets, spiffe, start_mesh, stats

RATE = 25.0  # requests per second
CYCLE_CONNECTIONS = {"common_http_protocol_options": {"max_requests_per_connection": 25}}
CLUSTER = "cluster.outbound|9080||reviews.default.svc.cluster.local."


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    hashes: list[tuple[float, str]] = field(default_factory=list)  # (time, XFCC Hash) in order


class PacedLoad:
    """One keep-alive client at a fixed rate in a thread; every answer and failure is recorded."""

    def __init__(self, port: int, rate: float = RATE) -> None:
        self.port = port
        self.interval = 1.0 / rate
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PacedLoad:
        self._thread.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()
        return self.result

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self._thread.is_alive()
            time.sleep(0.2)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        next_at = time.monotonic()
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                conn.request("GET", f"/reviews/{n}")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    self.result.failures.append(
                        f"#{n}: {resp.status} {resp.getheader('x-envoy-response-flags')}"
                    )
                else:
                    self.result.ok += 1
                    xfcc = json.loads(body)["headers"].get("x-forwarded-client-cert", "")
                    m = re.search(r"Hash=([0-9a-f]{64})", xfcc)
                    if m is None or f"URI={spiffe(CLIENT_SA)}" not in xfcc:
                        self.result.failures.append(f"#{n}: bad XFCC {xfcc!r}")
                    else:
                        self.result.hashes.append((time.monotonic(), m.group(1)))
            except (OSError, http.client.HTTPException) as e:
                self.result.failures.append(f"#{n}: {e!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
        conn.close()


def distinct_in_order(hashes: list[tuple[float, str]]) -> list[str]:
    out: list[str] = []
    for _, h in hashes:
        if h not in out:
            out.append(h)
    return out


def test_rotation_every_10s_under_60s_of_load_has_zero_failures_and_changes_certificates(procs, tmp_path):
    citadel = start_citadel(procs, tmp_path / "ca")
    app_port = start_upstream(procs, "reviews")
    mesh = start_mesh(procs, tmp_path, citadel, app_port, ttl="20s", cluster_extra=CYCLE_CONNECTIONS)
    before = {name: s["version_info"] for name, s in dynamic_secrets(mesh.server).items()}

    load = PacedLoad(mesh.outbound_port).start()
    try:
        load.run_for(60)
    finally:
        result = load.stop()

    assert result.failures == [], result.failures[:10]
    assert result.ok >= 60 * RATE * 0.8
    certs = distinct_in_order(result.hashes)
    # ~10 s per certificate: at least 4 different client certificates were seen by the server side.
    assert len(certs) >= 4, certs
    after = dynamic_secrets(mesh.server)
    assert after["default"]["version_info"] != before["default"]
    assert stats(mesh.client)[CLUSTER + "ssl.handshake"] >= len(certs)


def test_citadel_down_for_30s_while_certificates_are_valid_has_zero_failures(procs, tmp_path):
    citadel = start_citadel(procs, tmp_path / "ca")
    app_port = start_upstream(procs, "reviews")
    # 50 s certificates: a renewal falls due (~25 s) during the 30 s outage; they stay valid throughout.
    mesh = start_mesh(procs, tmp_path, citadel, app_port, ttl="50s", cluster_extra=CYCLE_CONNECTIONS)
    ports = {"grpc_port": citadel.grpc_port, "http_port": citadel.http_port, "mtls_port": citadel.mtls_port}

    load = PacedLoad(mesh.outbound_port).start()
    try:
        procs.stop(citadel.proc)
        stopped_at = time.monotonic()
        load.run_for(30)
        citadel = start_citadel(procs, tmp_path / "ca", **ports)  # same root, same addresses
        restarted_at = time.monotonic()
        load.run_for(8)
    finally:
        result = load.stop()

    assert result.failures == [], result.failures[:10]
    assert result.ok >= 38 * RATE * 0.8
    during = {h for t, h in result.hashes if stopped_at < t < restarted_at}
    assert during, "traffic flowed while citadel was down"
    # The renewal due during the outage happened once citadel was back: a new client certificate.
    after = {h for t, h in result.hashes if t > restarted_at + 2}
    assert after - during, "no new certificate after citadel came back"
