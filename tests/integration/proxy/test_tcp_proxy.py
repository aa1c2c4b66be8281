"""tcp_proxy in a real proxy process in front of a real TCP echo server process."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.proxy.harness import start_proxy, static_cluster
from tests.support.net import free_port, wait_for_port

TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

pytest.importorskip("proxy.upstream.cluster_manager", reason="needs proxy.upstream's ClusterManager")


def start_echo(procs, host="127.0.0.1", tag=""):
    port = free_port(host)
    proc = procs.python(
        "-m", "tests.integration.proxy.echo_server", "--host", host, "--port", str(port), "--tag", tag
    )
    wait_for_port(host, port, proc=proc)
    return port


def tcp_bootstrap(listen_port, cluster_ports, log_path=None, **tcp_extra):
    tcp = {"@type": TCP, "stat_prefix": "echo", "cluster": "echo", **tcp_extra}
    if log_path:
        tcp["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": FILE_LOG,
                    "path": str(log_path),
                    "log_format": {
                        "text_format_source": {
                            "inline_string": "%RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %BYTES_RECEIVED% %BYTES_SENT%\n"
                        }
                    },
                },
            }
        ]
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "tcp",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp}]}
                    ],
                }
            ],
            "clusters": [static_cluster("echo", cluster_ports)],
        }
    }


def stats(proxy) -> dict:
    with urllib.request.urlopen(proxy.admin + "/stats?format=json", timeout=5) as r:
        data = json.load(r)
    return {s["name"]: s.get("value") for s in data["stats"] if "name" in s}


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


def baseline(proxy, port) -> dict:
    """Stats once start_proxy's readiness probe (one TCP connect) has been fully handled."""
    key = f"listener.127.0.0.1_{port}.downstream_cx_active"
    return wait_for(lambda: (lambda d: d if d.get(key) == 0 else None)(stats(proxy)))


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def test_echo_and_half_close(procs, tmp_path):
    up = start_echo(procs)
    port = free_port()
    log = tmp_path / "access.log"
    p = start_proxy(procs, tcp_bootstrap(port, [up], log), wait_ports=(port,))
    base = baseline(p, port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"hello through the proxy")
        assert recv_exactly(s, 23) == b"hello through the proxy"
        s.shutdown(socket.SHUT_WR)  # our FIN reaches the echo server, whose FIN comes back
        assert s.recv(10) == b""
    st = wait_for(
        lambda: (lambda d: d if d.get("tcp.echo.downstream_cx_rx_bytes_total") == 23 else None)(stats(p))
    )
    assert st["tcp.echo.downstream_cx_total"] == base["tcp.echo.downstream_cx_total"] + 1
    assert st["tcp.echo.downstream_cx_tx_bytes_total"] == 23
    listener_total = f"listener.127.0.0.1_{port}.downstream_cx_total"
    assert st[listener_total] == base[listener_total] + 1
    assert "- echo 23 23" in wait_for(lambda: [ln for ln in log_lines(log) if ln.endswith(" 23 23")])


def test_large_transfer_both_ways(procs):
    up = start_echo(procs)
    port = free_port()
    start_proxy(procs, tcp_bootstrap(port, [up]), wait_ports=(port,))
    total = 16 * 1024 * 1024
    payload = bytes(range(256)) * (total // 256)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setblocking(True)
        import threading

        def send():
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send)
        t.start()
        got = bytearray()
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        t.join(10)
    assert len(got) == total and bytes(got) == payload


def test_idle_timeout_closes_the_connection(procs):
    up = start_echo(procs)
    port = free_port()
    p = start_proxy(procs, tcp_bootstrap(port, [up], idle_timeout="0.3s"), wait_ports=(port,))
    base = baseline(p, port)["tcp.echo.idle_timeout"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"x")
        assert recv_exactly(s, 1) == b"x"
        assert s.recv(10) == b""  # the proxy closed it after 0.3s of silence
    assert wait_for(lambda: stats(p).get("tcp.echo.idle_timeout") == base + 1)


def test_connect_failure_is_UF_in_the_access_log(procs, tmp_path):
    dead = free_port()  # nothing listens here
    port = free_port()
    log = tmp_path / "access.log"
    p = start_proxy(procs, tcp_bootstrap(port, [dead], log), wait_ports=(port,))
    base = baseline(p, port)["cluster.echo.upstream_cx_connect_fail"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"abc")
        assert s.recv(10) == b""
    # Our connection sent 3 bytes; it failed with UF and nothing came back.
    assert wait_for(lambda: [ln for ln in log_lines(log) if ln == "UF echo 3 0"])
    assert wait_for(lambda: stats(p).get("cluster.echo.upstream_cx_connect_fail") == base + 1)
