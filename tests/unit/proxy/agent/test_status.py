"""The agent's status port routing (pure) and the agent's flags (errors name the flag)."""

from __future__ import annotations

import json

import pytest

from proxy.agent import __main__ as agent_main
from proxy.agent.process import proxy_command
from proxy.agent.status import route

STATUS = {"state": "RUNNING", "proxy_pid": 4242, "starts": 2, "restarts": 1, "cert_not_after": 1700000000}


def test_ready_is_200_only_when_the_proxy_is_live():
    assert route("GET", "/healthz/ready", True, STATUS).status == 200
    not_ready = route("GET", "/healthz/ready", False, {**STATUS, "state": "BACKOFF"})
    assert not_ready.status == 503 and "BACKOFF" in not_ready.body


def test_status_reports_the_proxy_pid_as_json():
    r = route("GET", "/status?x=1", False, STATUS)
    assert r.status == 200 and json.loads(r.body)["proxy_pid"] == 4242


def test_prometheus_counts_restarts():
    body = route("GET", "/stats/prometheus", False, STATUS).body
    assert "isthmus_agent_proxy_restarts_total 1" in body
    assert "isthmus_agent_proxy_running 1" in body
    assert "isthmus_agent_cert_expiry_seconds 1700000000" in body


def test_unknown_path_and_method():
    assert route("GET", "/nope", True, STATUS).status == 404
    assert route("POST", "/healthz/ready", True, STATUS).status == 405


def test_proxy_command_passes_the_drain_duration_and_log_level(tmp_path):
    cmd = proxy_command(tmp_path / "b.json", 5.0, "debug")
    assert cmd[1:] == ["-m", "proxy", "-c", str(tmp_path / "b.json"), "--drain-time-s", "5", "-l", "debug"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--name is required"),
        (["--name", "r", "--label", "app"], "--label 'app': expected KEY=VALUE"),
        (["--name", "r", "--service", "reviews"], "--service needs --service-ports"),
        (["--name", "r", "--ip", "localhost"], "--ip 'localhost' is not an IP address"),
        (["--name", "r", "--status-port", "0"], "--status-port 0"),
        (["--name", "r", "--drain-duration", "soon"], "--drain-duration"),
        (["--name", "r", "--type", "gateway"], "--type"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args, message, tmp_path, capsys):
    root = tmp_path / "root-cert.pem"
    root.write_text("x")
    with pytest.raises(SystemExit) as e:
        agent_main.main(["--root-cert", str(root), *args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
