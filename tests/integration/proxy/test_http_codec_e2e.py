"""HTTP/1.1 features end to end through a real proxy process and a tiny raw-socket upstream:
keep-alive, pipelining, chunked bodies both ways, Expect: 100-continue, and an Upgrade tunnel."""

from __future__ import annotations

import socket
import socketserver
import threading

import pytest

from proxy.core.http1 import Data, EndOfMessage, ResponseHead, ResponseParser
from tests.integration.proxy.harness import http_listener, start_proxy, static_cluster
from tests.support.net import free_port


class RawUpstream(socketserver.BaseRequestHandler):
    """GET /chunked answers with a chunked body; GET /ws upgrades and echoes upper-cased bytes;
    anything else answers `path=<path> body=<body>` with Content-Length. Keep-alive."""

    def handle(self) -> None:
        sock = self.request
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            hdrs = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
            body = b""
            if hdrs.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    while b"\r\n" not in buf:
                        buf += sock.recv(65536)
                    size_line, rest = buf.split(b"\r\n", 1)
                    size = int(size_line.split(b";")[0], 16)
                    while len(rest) < size + 2:
                        rest += sock.recv(65536)
                    body += rest[:size]
                    buf = rest[size + 2 :]
                    if size == 0:
                        break
            elif "content-length" in hdrs:
                n = int(hdrs["content-length"])
                while len(buf) < n:
                    buf += sock.recv(65536)
                body, buf = buf[:n], buf[n:]
            if path == "/chunked":
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
                )
            elif path == "/ws":
                sock.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                    + buf.upper()
                )
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    sock.sendall(chunk.upper())
            else:
                te = hdrs.get("transfer-encoding", "-")
                payload = f"path={path} body={body.decode()} te={te}".encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(payload), payload))


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def proxy_port(procs):
    up = Server(("127.0.0.1", 0), RawUpstream)
    thread = threading.Thread(target=up.serve_forever, daemon=True)
    thread.start()
    try:
        port = free_port()
        route = {
            "name": "rc",
            "virtual_hosts": [
                {
                    "name": "vh",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "raw"}}],
                }
            ],
        }
        listener = http_listener(port, route, upgrade_configs=[{"upgrade_type": "websocket"}])
        bootstrap = {
            "static_resources": {
                "listeners": [listener],
                "clusters": [static_cluster("raw", [up.server_address[1]])],
            }
        }
        start_proxy(procs, bootstrap, wait_ports=(port,))
        yield port
    finally:
        up.shutdown()
        up.server_close()


def read_responses(
    sock: socket.socket, n: int, parser: ResponseParser | None = None
) -> list[tuple[int, dict, bytes]]:
    """Read n complete responses from sock, in order: [(status, headers, body)]."""
    parser = parser or ResponseParser()
    out: list = []
    cur = None
    while len(out) < n or cur is not None:
        data = sock.recv(65536)
        assert data, f"connection closed after {len(out)} responses"
        for ev in parser.feed(data):
            if isinstance(ev, ResponseHead):
                cur = [ev.status, dict(ev.headers.items()), b""]
            elif isinstance(ev, Data):
                cur[2] += ev.data
            elif isinstance(ev, EndOfMessage):
                out.append(tuple(cur))
                cur = None
    return out


def test_keep_alive_and_pipelining_answer_in_order(proxy_port):
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as s:
        s.sendall(
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        got = read_responses(s, 3)
        assert [b for _, _, b in got] == [
            b"path=/one body= te=-",
            b"path=/two body=abc te=-",
            b"path=/three body= te=-",
        ]
        assert all(st == 200 and h["server"] == "envoy" for st, h, _ in got)
        # The same connection serves a later request too (keep-alive).
        s.sendall(b"GET /four HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(s, 1)[0][2] == b"path=/four body= te=-"


def test_chunked_request_and_chunked_response(proxy_port):
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n")
        s.sendall(b"5\r\npedia\r\n0\r\n\r\n")
        [(status, _, body)] = read_responses(s, 1)
        assert status == 200 and body == b"path=/up body=wikipedia te=chunked"
        s.sendall(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        while not raw.endswith(b"0\r\n\r\n"):
            raw += s.recv(65536)
        assert b"transfer-encoding: chunked" in raw.lower()
        parser = ResponseParser()
        body = b"".join(ev.data for ev in parser.feed(raw) if isinstance(ev, Data))
        assert body == b"hello world"


def test_expect_100_continue(proxy_port):
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as s:
        s.sendall(b"PUT /put HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        parser = ResponseParser()  # swallows the 100, as an HTTP client does
        assert parser.feed(first) == []
        s.sendall(b"data")
        [(status, _, body)] = read_responses(s, 1, parser)
        assert status == 200 and body == b"path=/put body=data te=-"


def test_websocket_upgrade_is_tunnelled(proxy_port):
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        status_line = head.split(b"\r\n")[0]
        assert status_line.startswith(b"HTTP/1.1 101")
        assert b"upgrade: websocket" in head.lower()
        extra = head.split(b"\r\n\r\n", 1)[1]
        s.sendall(b"hello tunnel")
        got = extra
        while len(got) < len(b"HELLO TUNNEL"):
            got += s.recv(65536)
        assert got == b"HELLO TUNNEL"
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not parsed any more: raw bytes through the tunnel
        got = b""
        while len(got) < 18:
            got += s.recv(65536)
        assert got == b"GET / HTTP/1.1\r\n\r\n".upper()
