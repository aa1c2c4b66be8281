"""Envoy's flags, and --mode validate as a user runs it (a real subprocess)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from proxy.options import parse_options
from tests.support.processes import REPO


def test_envoy_flags_parse():
    o = parse_options(
        [
            "-c",
            "b.yaml",
            "--config-yaml",
            "node: {id: x}",
            "--mode",
            "validate",
            "--concurrency",
            "2",
            "--service-node",
            "n",
            "--service-cluster",
            "c",
            "-l",
            "debug",
            "--drain-time-s",
            "5",
        ]
    )
    assert (o.config_path, o.config_yaml, o.mode, o.concurrency) == ("b.yaml", "node: {id: x}", "validate", 2)
    assert (o.service_node, o.service_cluster, o.log_level, o.drain_time_s) == ("n", "c", "debug", 5)


def test_defaults_are_envoys():
    o = parse_options(["--config-path", "b.yaml"])
    assert (o.mode, o.concurrency, o.log_level, o.drain_time_s) == ("serve", 1, "info", 600)


@pytest.mark.parametrize(
    "argv", [["-c", "b", "--bogus"], ["-c", "b", "-l", "loud"], [], ["-c", "b", "--mode", "x"]]
)
def test_bad_flags_exit_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse_options(argv)
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


def run_proxy(*args):
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_validate_mode_ok_and_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump(
            {
                "node": {"id": "n"},
                "static_resources": {
                    "listeners": [
                        {
                            "name": "l",
                            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                            "filter_chains": [
                                {
                                    "filters": [
                                        {
                                            "name": "envoy.filters.network.tcp_proxy",
                                            "typed_config": {
                                                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                                "stat_prefix": "t",
                                                "cluster": "c",
                                            },
                                        }
                                    ]
                                }
                            ],
                        }
                    ]
                },
            }
        )
    )
    r = run_proxy("-c", str(good), "--mode", "validate")
    assert r.returncode == 0, r.stderr
    assert f"configuration '{good}' OK" in r.stdout
    # validate does not bind: port 1 would need root and nothing listens afterwards.

    r = run_proxy(
        "-c",
        str(good),
        "--mode",
        "validate",
        "--config-yaml",
        "static_resources: {listeners: [{name: x, per_connection_buffer_limit_bytes: 1, bogus: 2}]}",
    )
    assert r.returncode == 1
    assert "static_resources.listeners[0].bogus" in r.stderr

    bad = tmp_path / "bad.json"
    bad.write_text('{"admin": {"address": {"socket_address": {"port_value": 1}}, "profile_path": "/x"}}')
    r = run_proxy("--config-path", str(bad), "--mode", "validate")
    assert r.returncode == 1
    assert "admin.profile_path" in r.stderr
