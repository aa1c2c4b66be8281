"""A real agent runs its real proxy against a real citadel and a real pilot.

The agent writes the bootstrap, waits for its certificate, starts `python -m proxy`; the proxy gets its
listeners and clusters from pilot over ADS (pilot's /debug/syncz says SYNCED) and its certificate from
the agent over SDS; the workload auto-registers with pilot. SIGKILL on the proxy makes the agent restart it
(its /healthz/ready is 503 meanwhile); SIGTERM on the agent drains the proxy, stops it, and leaves nothing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.integration.citadel.harness import start_citadel
from tests.integration.pilot.pilot_harness import SERVICES_YAML, start_pilot
from tests.support.net import wait_for_http

NODE_PORTS = (15000, 15001, 15006, 15021, 15090)


def workload_ip() -> str:
    """A loopback address of its own, so the standard ports are free (as in local mode)."""
    for _ in range(50):
        ip = f"127.77.{random.randint(0, 255)}.{random.randint(2, 254)}"
        try:
            for port in NODE_PORTS:
                with socket.socket() as s:
                    s.bind((ip, port))
        except OSError:
            continue
        return ip
    raise RuntimeError("no free loopback address")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


class Agent:
    def __init__(self, procs, tmp_path, citadel, pilot, *extra: str, drain: str = "2s") -> None:
        self.ip = workload_ip()
        self.name = "reviews-v1"
        self.node = f"sidecar~{self.ip}~{self.name}.default~default.svc.cluster.local"
        self.sds = tmp_path / "agent" / "SDS"
        self.bootstrap = tmp_path / "agent" / "envoy-rev.json"
        token = tmp_path / "token"
        token.write_text(citadel.token("default", "reviews"))
        self.procs = procs
        self.proc = procs.python(
            "-m", "proxy.agent", "--citadel", f"127.0.0.1:{citadel.grpc_port}",
            "--citadel-mtls", f"127.0.0.1:{citadel.mtls_port}",
            "--root-cert", str(citadel.root_dir / "root-cert.pem"), "--token-file", str(token),
            "--sds-socket", str(self.sds), "--bootstrap", str(self.bootstrap),
            "--namespace", "default", "--service-account", "reviews", "--name", self.name, "--ip", self.ip,
            "--label", "app=reviews", "--label", "version=v1", "--service", "reviews",
            "--service-ports", "http:9080", "--discovery-address", pilot.grpc, "--drain-duration", drain,
            "--cert-ttl", "1h", *extra,
        )  # fmt: skip

    @property
    def status_url(self) -> str:
        return f"http://{self.ip}:15021"

    @property
    def admin(self) -> str:
        return f"http://{self.ip}:15000"

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for_http(self.status_url + "/healthz/ready", timeout=timeout, proc=self.proc)

    def status(self) -> dict:
        return json.loads(get(self.status_url + "/status")[1])

    def output(self) -> str:
        return self.procs.output(self.proc)


@pytest.fixture
def mesh(procs, tmp_path):
    citadel = start_citadel(procs, tmp_path / "ca")
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "ratings.yaml").write_text(SERVICES_YAML)
    pilot = start_pilot(procs, config_dir)
    return citadel, pilot


def wait_synced(pilot, node: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        entries = [e for e in pilot.get_json("/debug/syncz") if e["proxy"] == node]
        if entries and entries[-1]["cds"] == "SYNCED" and entries[-1]["lds"] == "SYNCED":
            return entries[-1]
        assert time.monotonic() < deadline, f"not SYNCED: {entries}"
        time.sleep(0.1)


def config_dump(agent: Agent) -> dict:
    dump = json.loads(get(agent.admin + "/config_dump")[1])
    return {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}


@pytest.mark.parametrize("xds", ["sotw", "delta"])
def test_agent_runs_a_proxy_configured_by_pilot_with_its_certificate_over_sds(procs, tmp_path, mesh, xds):
    citadel, pilot = mesh
    agent = Agent(procs, tmp_path, citadel, pilot, "--xds-type", xds)
    agent.wait_ready()
    status = agent.status()
    assert status["node"] == agent.node and status["restarts"] == 0
    assert alive(status["proxy_pid"])
    assert status["cert_version"] >= 1

    # the proxy's static config is the generated bootstrap; its dynamic config came from pilot over ADS
    dump = config_dump(agent)
    assert dump["BootstrapConfigDump"]["bootstrap"]["node"]["id"] == agent.node
    static = {c["cluster"]["name"] for c in dump["ClustersConfigDump"]["static_clusters"]}
    assert {"xds-grpc", "sds-grpc", "prometheus_stats"} <= static
    dynamic = {c["cluster"]["name"] for c in dump["ClustersConfigDump"]["dynamic_active_clusters"]}
    assert "outbound|9080||ratings.default.svc.cluster.local" in dynamic
    listeners = {lst["name"] for lst in dump["ListenersConfigDump"]["dynamic_listeners"]}
    assert {"virtualOutbound", "virtualInbound"} <= listeners
    entry = wait_synced(pilot, agent.node)
    assert entry["admin"] == f"{agent.ip}:15000"
    assert entry["stream"] == xds

    # the workload registered itself through its node metadata
    registry = pilot.get_json("/debug/registryz")
    assert any(agent.ip in json.dumps(e) and "reviews" in json.dumps(e) for e in registry["endpoints"])

    # the certificate reached the proxy over SDS from the agent: the one the agent holds
    secrets = {s["name"]: s for s in dump["SecretsConfigDump"].get("dynamic_active_secrets", [])}
    assert {"default", "ROOTCA"} <= set(secrets)
    assert secrets["default"]["version_info"] == str(status["cert_version"])
    assert "sds.push" in agent.output()

    # Prometheus stats on 15090 through the static listener and the prometheus_stats cluster
    code, body = get(f"http://{agent.ip}:15090/stats/prometheus")
    assert code == 200 and b"envoy_cluster" in body


def test_a_killed_proxy_is_restarted_and_readiness_follows(procs, tmp_path, mesh):
    citadel, pilot = mesh
    agent = Agent(procs, tmp_path, citadel, pilot)
    agent.wait_ready()
    first = agent.status()["proxy_pid"]
    os.kill(first, signal.SIGKILL)
    # readiness drops while the proxy is down (the new one needs seconds to start and get its config)
    deadline = time.monotonic() + 10
    while get(agent.status_url + "/healthz/ready")[0] != 503:
        assert time.monotonic() < deadline, "agent stayed ready with its proxy killed"
        time.sleep(0.02)
    agent.wait_ready()
    status = agent.status()
    assert status["proxy_pid"] != first and alive(status["proxy_pid"])
    assert status["restarts"] == 1 and status["last_exit_code"] == -signal.SIGKILL
    assert get(agent.admin + "/ready")[1].strip() == b"LIVE"
    wait_synced(pilot, agent.node)
    assert f"event=proxy.died pid={first}" in agent.output()


def test_sigterm_drains_the_proxy_then_stops_it_and_leaves_nothing(procs, tmp_path, mesh):
    citadel, pilot = mesh
    agent = Agent(procs, tmp_path, citadel, pilot, drain="3s")
    agent.wait_ready()
    pid = agent.status()["proxy_pid"]
    agent.proc.send_signal(signal.SIGTERM)
    # inside the drain duration: the proxy still runs, and the agent no longer reports ready
    deadline = time.monotonic() + 5
    while "event=proxy.draining" not in agent.output():
        assert time.monotonic() < deadline, agent.output()
        time.sleep(0.02)
    assert alive(pid)
    assert get(agent.status_url + "/healthz/ready")[0] == 503
    assert agent.proc.wait(timeout=20) == 0
    out = agent.output()
    assert (
        out.index("event=proxy.draining")
        < out.index("event=server.shutdown")
        < out.index("event=agent.stopped")
    )
    assert not alive(pid)
    assert not agent.sds.exists()


def test_a_killed_agent_takes_its_proxy_with_it(procs, tmp_path, mesh):
    citadel, pilot = mesh
    agent = Agent(procs, tmp_path, citadel, pilot)
    agent.wait_ready()
    pid = agent.status()["proxy_pid"]
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, "the proxy outlived its agent"
        time.sleep(0.05)
