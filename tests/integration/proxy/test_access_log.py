"""File access logs of a real proxy process: Envoy's default format and json_format, with the
response flags of the error cases (NR, UF, UH)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest

from tests.integration.proxy.harness import http_listener, start_proxy, start_upstream, static_cluster
from tests.support.net import free_port

FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

# Envoy's default format, as a regex over one line.
DEFAULT_LINE = re.compile(
    r'^\[(?P<start>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] "(?P<method>\S+) (?P<path>\S+) (?P<proto>\S+)" '
    r'(?P<code>\d+) (?P<flags>\S+) (?P<rx>\d+) (?P<tx>\d+) (?P<dur>\d+) (?P<ust>\S+) "(?P<xff>[^"]*)" '
    r'"(?P<ua>[^"]*)" "(?P<rid>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream>[^"]*)"$'
)

JSON_FORMAT = {
    "code": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "path": "%REQ(:PATH)%",
    "cluster": "%UPSTREAM_CLUSTER%",
    "host": "%UPSTREAM_HOST%",
    "route": "%ROUTE_NAME%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
}


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def wait_lines(path, n: int, timeout: float = 10.0) -> list[str]:
    """The access log is flushed off the request path (about once a second): wait for n lines."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = text.splitlines()
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def start(procs, tmp_path, log_format: dict | None = None):
    up = start_upstream(procs, "a")
    port = free_port()
    log_path = tmp_path / "access.log"
    typed = {"@type": FILE_LOG, "path": str(log_path)}
    if log_format is not None:
        typed["log_format"] = log_format
    route = {
        "name": "rc",
        "virtual_hosts": [
            {
                "name": "vh",
                "domains": ["*"],
                "routes": [
                    {"name": "ok", "match": {"prefix": "/ok"}, "route": {"cluster": "backend"}},
                    {"name": "refused", "match": {"prefix": "/refused"}, "route": {"cluster": "refused"}},
                    {"name": "empty", "match": {"prefix": "/empty"}, "route": {"cluster": "empty"}},
                ],
            }
        ],
    }
    listener = http_listener(
        port, route, access_log=[{"name": "envoy.access_loggers.file", "typed_config": typed}]
    )
    bootstrap = {
        "static_resources": {
            "listeners": [listener],
            "clusters": [
                static_cluster("backend", [up]),
                static_cluster("refused", [free_port()]),  # nothing listens there: connection refused
                {
                    "name": "empty",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": "empty"},
                },
            ],
        }
    }
    start_proxy(procs, bootstrap, wait_ports=(port,))
    return f"http://127.0.0.1:{port}", up, log_path


def test_default_format_lines_with_response_flags(procs, tmp_path):
    base, up, log_path = start(procs, tmp_path)
    assert get(base + "/ok/1") == 200
    assert get(base + "/nowhere") == 404
    assert get(base + "/refused") == 503
    assert get(base + "/empty") == 503
    lines = wait_lines(log_path, 4)
    assert len(lines) == 4, lines
    parsed = [DEFAULT_LINE.match(line) for line in lines]
    assert all(parsed), lines
    ok, nr, uf, uh = (m.groupdict() for m in parsed)
    assert (ok["method"], ok["path"], ok["proto"], ok["code"], ok["flags"]) == (
        "GET",
        "/ok/1",
        "HTTP/1.1",
        "200",
        "-",
    )
    assert (
        ok["upstream"] == f"127.0.0.1:{up}" and int(ok["tx"]) > 0 and ok["authority"].startswith("127.0.0.1:")
    )
    assert ok["ua"].startswith("Python-urllib")
    assert (nr["code"], nr["flags"], nr["upstream"]) == ("404", "NR", "-")
    assert (uf["code"], uf["flags"]) == ("503", "UF")
    assert (uh["code"], uh["flags"], uh["upstream"]) == ("503", "UH", "-")


def test_json_format_lines(procs, tmp_path):
    base, up, log_path = start(procs, tmp_path, {"json_format": JSON_FORMAT})
    assert get(base + "/ok") == 200
    assert get(base + "/nowhere") == 404
    assert get(base + "/refused") == 503
    assert get(base + "/empty") == 503
    entries = [json.loads(line) for line in wait_lines(log_path, 4)]
    assert len(entries) == 4
    ok, nr, uf, uh = entries
    assert ok["code"] == 200 and ok["flags"] == "-" and ok["cluster"] == "backend"
    assert ok["host"] == f"127.0.0.1:{up}" and ok["route"] == "ok" and ok["bytes_sent"] > 0
    assert isinstance(ok["duration"], int)
    assert (nr["code"], nr["flags"], nr["cluster"], nr["host"]) == (404, "NR", None, None)
    assert (uf["code"], uf["flags"], uf["cluster"]) == (503, "UF", "refused")
    assert (uh["code"], uh["flags"], uh["cluster"], uh["host"]) == (503, "UH", "empty", None)


@pytest.mark.parametrize(
    "fmt, where",
    [
        ({"text_format_source": {"inline_string": "%NOT_AN_OPERATOR%\n"}}, "log_format.text_format_source"),
    ],
)
def test_bad_format_fails_validation_with_field_path(procs, tmp_path, fmt, where):
    listener = http_listener(
        free_port(),
        {"name": "rc", "virtual_hosts": []},
        access_log=[
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {"@type": FILE_LOG, "path": str(tmp_path / "a.log"), "log_format": fmt},
            }
        ],
    )
    import yaml

    cfg = tmp_path / "bootstrap.yaml"
    cfg.write_text(yaml.safe_dump({"static_resources": {"listeners": [listener]}}))
    proc = procs.python("-m", "proxy", "-c", str(cfg), "--mode", "validate")
    assert proc.wait(timeout=30) == 1
    out = procs.output(proc)
    assert "access_log[0].typed_config." + where in out and "NOT_AN_OPERATOR" in out
