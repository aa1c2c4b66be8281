"""The bad-input suite through a real proxy process: malformed requests get Envoy's answers, the
connection is closed where Envoy closes it, the access log carries the flag, and the proxy keeps
serving everyone else."""

from __future__ import annotations

import resource
import socket
import time

import pytest

from tests.integration.proxy.harness import http_listener, start_proxy, start_upstream, static_cluster
from tests.support.net import free_port

FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
LOG_FORMAT = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %REQ(:PATH)%\n"


@pytest.fixture
def proxy(procs, tmp_path):
    up = start_upstream(procs, "a")
    port = free_port()
    log_path = tmp_path / "access.log"
    route = {
        "name": "rc",
        "virtual_hosts": [
            {
                "name": "vh",
                "domains": ["*"],
                "routes": [{"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "backend"}}],
            }
        ],
    }
    listener = http_listener(
        port,
        route,
        request_headers_timeout="2s",
        access_log=[
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": FILE_LOG,
                    "path": str(log_path),
                    "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}},
                },
            }
        ],
    )
    bootstrap = {"static_resources": {"listeners": [listener], "clusters": [static_cluster("backend", [up])]}}
    running = start_proxy(procs, bootstrap, wait_ports=(port,))
    return port, log_path, running


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send raw bytes; read until the proxy closes (or timeout). Returns (bytes, closed_by_proxy)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return out, False
            if not chunk:
                return out, True
            out += chunk
        return out, False


def status_of(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


def wait_log(path, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines():
            if needle in line:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no access log line with {needle!r} in:\n{text}")
        time.sleep(0.05)


def test_the_proxy_serves_a_normal_request(proxy):
    port, log_path, _ = proxy
    resp, _ = exchange(port, b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(resp) == 200 and b'"upstream": "a"' in resp
    assert wait_log(log_path, "/fine").split()[:2] == ["200", "-"]


@pytest.mark.parametrize(
    "raw,status,details",
    [
        (b"THIS IS NOT HTTP\r\n\r\n", 400, "http1.codec_error"),
        (b"GET /x HTTP/1.1\r\nHost: x\r\nX-Bad: va\x01lue\r\n\r\n", 400, "http1.invalid_characters"),
        (b"GET /x HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400, "http1.invalid_characters"),
        (
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "http1.content_length_and_chunked_not_allowed",
        ),
    ],
)
def test_malformed_requests_get_400_and_close_with_dpe(proxy, raw, status, details):
    port, log_path, _ = proxy
    resp, closed = exchange(port, raw)
    assert status_of(resp) == status
    assert resp.count(b"HTTP/1.1 ") == 1  # nothing smuggled through
    assert b"connection: close" in resp.lower() and closed
    line = wait_log(log_path, details)
    assert line.split()[:2] == [str(status), "DPE"]


def test_100kb_header_gets_431(proxy):
    port, log_path, _ = proxy
    raw = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n"
    resp, closed = exchange(port, raw)
    assert status_of(resp) == 431 and closed
    assert resp.endswith(b"Request Header Fields Too Large")
    assert wait_log(log_path, "http1.headers_too_large").split()[:2] == ["431", "DPE"]


def test_client_sending_one_byte_per_second_gets_408(proxy):
    port, log_path, _ = proxy
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(1.0)
        out = b""
        for b in b"GET /slow HTTP/1.1\r\nHost: x\r\n":
            try:
                s.sendall(bytes([b]))
            except OSError:
                break
            try:
                chunk = s.recv(65536)
                out += chunk
                if not chunk or b"\r\n\r\n" in out:
                    break
            except TimeoutError:
                pass  # a second went by: send the next byte
        s.settimeout(5)
        while True:  # the rest of the reply, until the proxy closes
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    assert status_of(out) == 408
    assert out.endswith(b"request header timeout")
    assert time.monotonic() - start < 8
    assert wait_log(log_path, "request_header_timeout").startswith("408 ")


def test_downstream_disconnect_mid_request_logs_dc(proxy):
    port, log_path, _ = proxy
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly a part")
        time.sleep(0.2)  # let the request reach the proxy before the client leaves
    line = wait_log(log_path, "/gone")
    assert line.split()[1] == "DC"


def test_2000_idle_connections_do_not_stop_others(proxy):
    port, log_path, _ = proxy
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2000 + 512
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    idle = []
    try:
        for _ in range(2000):
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            idle.append(s)
        # Half of them even started a request and went quiet.
        for s in idle[::2]:
            s.sendall(b"GET /idle HTTP/1.1\r\n")
        for i in range(5):
            resp, _ = exchange(
                port, f"GET /served{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            assert status_of(resp) == 200
        # An idle keep-alive connection still works too.
        s = idle[1]
        s.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
