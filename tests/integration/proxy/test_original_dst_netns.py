"""ORIGINAL_DST behind an iptables REDIRECT, inside a throwaway network namespace (needs root).

Everything runs in the namespace: two echo upstreams on 198.18.0.3 and 198.18.0.4 (on the ns's
loopback), the proxy with Istio's 15001 virtual listener, and the client. iptables in the ns
redirects the client's outbound TCP to 15001, excluding the proxy's own traffic by its group id.
No address outside 127.0.0.0/8 and 198.18.0.0/24 is used, and the namespace is always deleted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.proxy.harness import static_cluster

pytestmark = pytest.mark.netns

PROXY_GID = 1337
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ODST = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"


def sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def netns():
    name = f"isthmus-odst-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        for ip in ("198.18.0.3", "198.18.0.4"):
            sh("ip", "netns", "exec", name, "ip", "addr", "add", f"{ip}/32", "dev", "lo")
        yield name
    finally:
        # Processes we started in the namespace are stopped by `procs`; stop any left, by PID.
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def in_ns(ns: str, code: str, timeout: float = 30) -> str:
    """Run a Python snippet inside the namespace (as a client would) and return its stdout."""
    r = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


WAIT_PORT = """
import socket, sys, time
deadline = time.monotonic() + 20
while True:
    try:
        socket.create_connection(({host!r}, {port}), timeout=0.5).close(); break
    except OSError:
        if time.monotonic() > deadline: sys.exit("not ready: {host}:{port}")
        time.sleep(0.05)
"""

ROUNDTRIP = """
import socket
s = socket.create_connection(({host!r}, {port}), timeout=10)
s.sendall(b"ping")
s.shutdown(socket.SHUT_WR)
out = b""
while chunk := s.recv(4096):
    out += chunk
print(out.decode())
"""

STATS = """
import json, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:{port}/stats?format=json", timeout=5).read().decode())
"""


def tcp_filter(prefix: str, cluster: str) -> dict:
    return {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {"@type": TCP, "stat_prefix": prefix, "cluster": cluster},
    }


def test_redirected_connections_reach_their_original_destination(netns, procs):
    pytest.importorskip("proxy.upstream.cluster_manager", reason="needs proxy.upstream's ClusterManager")
    svc_port, other_port, admin_port = 9080, 9090, 15000
    for ip, port, tag in (("198.18.0.3", svc_port, "svc:"), ("198.18.0.4", other_port, "other:")):
        procs.start(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                "-m",
                "tests.integration.proxy.echo_server",
                "--host",
                ip,
                "--port",
                str(port),
                "--tag",
                tag,
            ]
        )
        in_ns(netns, WAIT_PORT.format(host=ip, port=port))

    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {  # Istio's virtual outbound listener: hands connections to the listener of their
                    # original destination, or passes them through to it.
                    "name": "virtualOutbound",
                    "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
                    "use_original_dst": True,
                    "listener_filters": [
                        {"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": ODST}}
                    ],
                    "filter_chains": [
                        # As Istio does: a connection made to 15001 itself must not loop through the
                        # passthrough back to 15001; it goes to a cluster without endpoints.
                        {
                            "filter_chain_match": {"destination_port": 15001},
                            "filters": [tcp_filter("BlackHoleCluster", "BlackHoleCluster")],
                        },
                        {"filters": [tcp_filter("passthrough", "PassthroughCluster")]},
                    ],
                },
                {  # A service listener that only receives handed-off connections.
                    "name": f"198.18.0.3_{svc_port}",
                    "address": {"socket_address": {"address": "198.18.0.3", "port_value": svc_port}},
                    "bind_to_port": False,
                    "filter_chains": [{"filters": [tcp_filter("svc", "svc")]}],
                },
            ],
            "clusters": [
                {
                    "name": "PassthroughCluster",
                    "type": "ORIGINAL_DST",
                    "lb_policy": "CLUSTER_PROVIDED",
                    "connect_timeout": "1s",
                },
                static_cluster("svc", [svc_port], host="198.18.0.3"),
                {"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "1s"},
            ],
        },
    }
    cfg = Path(tempfile.mkstemp(prefix="isthmus-odst-", suffix=".yaml")[1])
    cfg.write_text(yaml.safe_dump(bootstrap))
    try:
        proxy = procs.start(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "setpriv",
                f"--regid={PROXY_GID}",
                "--clear-groups",
                sys.executable,
                "-m",
                "proxy",
                "-c",
                str(cfg),
            ]
        )
        in_ns(netns, WAIT_PORT.format(host="127.0.0.1", port=15001))
        assert proxy.poll() is None, procs.output(proxy)
        # Capture outbound TCP to the two "services", except the proxy's own (its group id).
        for ip, port in (("198.18.0.3", svc_port), ("198.18.0.4", other_port)):
            sh(
                "ip",
                "netns",
                "exec",
                netns,
                "iptables",
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                ip,
                "--dport",
                str(port),
                "-m",
                "owner",
                "!",
                "--gid-owner",
                str(PROXY_GID),
                "-j",
                "REDIRECT",
                "--to-ports",
                "15001",
            )

        # The client dials the services' own addresses; the kernel sends it to the proxy.
        assert in_ns(netns, ROUNDTRIP.format(host="198.18.0.3", port=svc_port)).strip() == "svc:ping"
        assert in_ns(netns, ROUNDTRIP.format(host="198.18.0.4", port=other_port)).strip() == "other:ping"

        stats = {
            s["name"]: s.get("value")
            for s in json.loads(in_ns(netns, STATS.format(port=admin_port)))["stats"]
            if "name" in s
        }
        # 198.18.0.3:9080 was handed off to its listener; 198.18.0.4:9090 passed through.
        assert stats["tcp.svc.downstream_cx_total"] == 1
        assert stats["tcp.passthrough.downstream_cx_total"] == 1
        assert stats["tcp.svc.downstream_cx_rx_bytes_total"] == 4
        assert stats["cluster.PassthroughCluster.upstream_cx_total"] == 1
        assert stats["tcp.BlackHoleCluster.downstream_cx_total"] >= 1  # the readiness probe to 15001
    finally:
        cfg.unlink(missing_ok=True)
