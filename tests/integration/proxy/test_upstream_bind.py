"""upstream_bind_config.source_address with a real proxy: the upstream sees the connection come from the
bound address (Istio's 127.0.0.6 on inbound clusters), for HTTP routes and for tcp_proxy; an unsupported
bind option stops the proxy at start-up with its path."""

from __future__ import annotations

import socket
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.integration.proxy.harness import http_listener, start_proxy, static_cluster
from tests.support.net import free_port

TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
BIND = {"upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}}}


class _Peer(BaseHTTPRequestHandler):
    """Answers with the address the connection came from."""

    def do_GET(self):  # noqa: N802
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def peer_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Peer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def route_to(cluster: str) -> dict:
    return {
        "name": "r",
        "virtual_hosts": [
            {
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
            }
        ],
    }


def get(port: int) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/", timeout=10) as r:
        return r.read()


def test_http_and_tcp_upstream_connections_leave_from_the_bound_address(procs, peer_server):
    bound_http, plain_http, tcp_port = free_port(), free_port(), free_port()
    tcp_listener = {
        "name": "tcp",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": tcp_port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {"@type": TCP, "stat_prefix": "tcp", "cluster": "bound"},
                    }
                ]
            }
        ],
    }
    bootstrap = {
        "static_resources": {
            "listeners": [
                http_listener(bound_http, route_to("bound"), name="bound"),
                http_listener(plain_http, route_to("plain"), name="plain"),
                tcp_listener,
            ],
            "clusters": [
                static_cluster("bound", [peer_server], **BIND),
                static_cluster("plain", [peer_server]),
            ],
        }
    }
    start_proxy(procs, bootstrap, wait_ports=(bound_http, plain_http, tcp_port))
    assert get(bound_http) == b"127.0.0.6"
    assert get(plain_http) == b"127.0.0.1"
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.") and data.endswith(b"\r\n\r\n127.0.0.6")


def test_an_unsupported_bind_option_is_refused_at_startup_with_its_path(procs):
    cluster = static_cluster(
        "bound", [9], upstream_bind_config={"source_address": {"address": "127.0.0.6"}, "freebind": True}
    )
    path = Path(tempfile.mkstemp(prefix="isthmus-bootstrap-", suffix=".yaml")[1])
    try:
        path.write_text(yaml.safe_dump({"static_resources": {"clusters": [cluster]}}))
        proc = procs.python("-m", "proxy", "-c", str(path))
        assert proc.wait(30) != 0
        assert "upstream_bind_config.freebind" in procs.output(proc)
    finally:
        path.unlink(missing_ok=True)
