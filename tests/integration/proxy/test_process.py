"""`python -m proxy` as a process: flags, bind errors, signals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request

import yaml

from tests.integration.proxy.harness import admin_block, start_proxy
from tests.support.net import free_port, wait_for_http
from tests.support.processes import REPO

TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def tcp_listener(port: int, name: str = "tcp") -> dict:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {"@type": TCP, "stat_prefix": name, "cluster": "none"},
                    }
                ]
            }
        ],
    }


def test_help_lists_envoy_flags():
    r = subprocess.run(
        [sys.executable, "-m", "proxy", "--help"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert r.returncode == 0
    for flag in (
        "--config-path",
        "--config-yaml",
        "--mode",
        "--concurrency",
        "--service-node",
        "--service-cluster",
        "--log-level",
        "--drain-time-s",
    ):
        assert flag in r.stdout


def test_unknown_flag_exits_2_with_usage():
    r = subprocess.run(
        [sys.executable, "-m", "proxy", "-c", "x.yaml", "--no-such-flag"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 2
    assert "usage:" in r.stderr and "--no-such-flag" in r.stderr


def test_port_in_use_names_the_address_and_exits_non_zero(procs, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "b.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {"admin": admin_block(free_port()), "static_resources": {"listeners": [tcp_listener(port)]}}
            )
        )
        proc = procs.python("-m", "proxy", "-c", str(cfg))
        rc = proc.wait(30)
        out = procs.output(proc)
    assert rc != 0
    assert f"127.0.0.1:{port}" in out
    assert "in use" in out.lower()


def test_sigterm_drains_and_exits_cleanly(procs):
    port = free_port()
    p = start_proxy(
        procs,
        {"static_resources": {"listeners": [tcp_listener(port)]}},
        "--drain-time-s",
        "5",
        wait_ports=(port,),
    )
    with urllib.request.urlopen(p.admin + "/ready", timeout=5) as r:
        assert r.read().strip() == b"LIVE"
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(15) == 0
    # Nothing listens any more.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_service_node_flag_and_concurrency_accepted(procs):
    p = start_proxy(
        procs,
        {"node": {"id": "from-file"}},
        "--service-node",
        "sidecar~1",
        "--concurrency",
        "2",
        "-l",
        "debug",
    )
    wait_for_http(p.admin + "/ready")
    p.proc.send_signal(signal.SIGINT)
    assert p.proc.wait(15) == 0
