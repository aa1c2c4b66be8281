"""The TLS layer's own cost, in process: what the mTLS sidecar pair pays for TLS beyond two plaintext
hops, per connection and per request.

Both ends run in one process through ``proxy.tls.transport.TlsSession`` (MemoryBIO + SSLObject, as
the proxy drives them), with the pair's own configuration (``bench.common.mtls_pair_resources``:
SVIDs from citadel's CA code, client certificate required, SNI, ALPN, the SAN check). No sockets: the
numbers are the CPU of the TLS work itself (``time.process_time``), each side timed on its own.
Rows:

* a connection that resumes the client's cached session (what the client sidecar's pool opens under
  load), and a full mutual handshake (the first connection, or after a certificate rotation): client
  side, server side;
* one request (80 bytes) and its answer (head + 1 KB) through an open session: what each sidecar
  adds per request (one record read and one record written).

Minimum over the repeats (the VM is shared: the least disturbed run is the cost).
"""

from __future__ import annotations

import tempfile
import time

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from bench.common import mtls_pair_resources
from proxy.tls.context import build_context, compile_downstream, compile_upstream
from proxy.tls.transport import TlsSession

REQUEST = b"GET /reviews/0 HTTP/1.1\r\nhost: reviews:9080\r\nuser-agent: bench\r\naccept: */*\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\nserver: envoy\r\n\r\n" + b"x" * 1024


def contexts():
    """(server BuiltContext, client BuiltContext, SNI) of the benchmark's mTLS pair."""
    with tempfile.TemporaryDirectory() as logs:
        pair = mtls_pair_resources(1, 2, 3, logs)
    server_socket = pair["server"][0][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    client_socket = pair["client"][1][0]["transport_socket"]["typed_config"]
    down = json_format.ParseDict(_untyped(server_socket), tls_pb2.DownstreamTlsContext())
    up = json_format.ParseDict(_untyped(client_socket), tls_pb2.UpstreamTlsContext())
    return (
        build_context(compile_downstream(down, "server")),
        build_context(compile_upstream(up, "client")),
        up.sni,
    )


def _untyped(typed: dict) -> dict:
    return {k: v for k, v in typed.items() if k != "@type"}


def connect(server_built, client_built, sni: str) -> tuple[float, float, TlsSession, TlsSession]:
    """One connection and a first exchange (the client reads its ticket): (client s, server s, ...)."""
    clock = time.process_time
    t0 = clock()
    client = TlsSession(client_built, server_hostname=sni)
    client.start()
    hello = client.output()
    t1 = clock()
    server = TlsSession(server_built)
    server.feed(hello)
    flight = server.output()
    t2 = clock()
    client.feed(flight)
    client.send(REQUEST)
    finished = client.output()
    t3 = clock()
    server.feed(finished)
    server.send(ANSWER)
    answer = server.output()
    t4 = clock()
    client.feed(answer)
    t5 = clock()
    if server.info is None or client.info is None:
        raise RuntimeError("the benchmark's handshake did not complete")
    return (t1 - t0) + (t3 - t2) + (t5 - t4), (t2 - t1) + (t4 - t3), server, client


def _connections(server_built, client_built, sni, n: int, resume: bool) -> tuple[float, float]:
    client_s = server_s = 0.0
    for _ in range(n):
        if not resume:
            client_built.session_cache.clear()
        c, s, _, client = connect(server_built, client_built, sni)
        if client.session_reused != resume:
            raise RuntimeError(f"expected session_reused={resume}")
        client_s += c
        server_s += s
    return client_s / n * 1e6, server_s / n * 1e6


def _exchanges(server: TlsSession, client: TlsSession, n: int) -> tuple[float, float]:
    """Per request: the client sidecar's write + read, the server sidecar's read + write (us)."""
    clock = time.process_time
    client_s = server_s = 0.0
    for _ in range(n):
        t0 = clock()
        client.send(REQUEST)
        wire = client.output()
        t1 = clock()
        server.feed(wire)
        server.send(ANSWER)
        wire = server.output()
        t2 = clock()
        client.feed(wire)
        t3 = clock()
        client_s += (t1 - t0) + (t3 - t2)
        server_s += t2 - t1
    return client_s / n * 1e6, server_s / n * 1e6


def run(quick: bool) -> list[dict]:
    repeats, n_conn, n_req = (3, 30, 2000) if quick else (7, 100, 10000)
    server_built, client_built, sni = contexts()
    connect(server_built, client_built, sni)  # warm: the client's first ticket
    results: dict[str, list[tuple[float, float]]] = {"resumed": [], "full": [], "request": []}
    for _ in range(repeats):
        results["resumed"].append(_connections(server_built, client_built, sni, n_conn, resume=True))
        results["full"].append(
            _connections(server_built, client_built, sni, max(5, n_conn // 3), resume=False)
        )
        _, _, server, client = connect(server_built, client_built, sni)
        results["request"].append(_exchanges(server, client, n_req))
    what = {
        "resumed": "connection, session resumed",
        "full": "connection, full mutual handshake",
        "request": "request + 1 KB answer",
    }
    return [
        {
            "tls cost": what[key],
            "client_sidecar_cpu_us": min(r[0] for r in runs),
            "server_sidecar_cpu_us": min(r[1] for r in runs),
        }
        for key, runs in results.items()
    ]
