"""Shared pieces for benchmarks: free ports, process lifetimes, an nginx upstream, wrk parsing."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tests.support.net import free_port, wait_for_http, wait_for_port

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def process(args: list[str], **kw):
    """Run a process for the duration of the block; always stopped (by PID) afterwards."""
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def nginx_upstream(body_bytes: int = 1024):
    """nginx (1 worker) answering every request with a fixed body; yields its port."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-nginx-") as d:
        conf = Path(d) / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{ default_type text/plain; return 200 "{"x" * body_bytes}"; }}
  }}
}}
""")
        with process([nginx, "-c", str(conf), "-p", d]) as proc:
            wait_for_port("127.0.0.1", port, proc=proc)
            yield port


HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def _socket_address(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _hcm(stat_prefix: str, cluster: str, access_log: str, **extra) -> dict:
    """An HTTP connection manager routing everything to `cluster`; stats and a file access log on,
    as a sidecar runs."""
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "access_log": [
                {
                    "name": "envoy.access_loggers.file",
                    "typed_config": {"@type": FILE_LOG_TYPE, "path": access_log},
                }
            ],
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                    }
                ]
            },
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
            **extra,
        },
    }


def _listener(name: str, port: int, hcm: dict, transport_socket: dict | None = None) -> dict:
    chain: dict = {"filters": [hcm]}
    if transport_socket is not None:
        chain["transport_socket"] = transport_socket
    return {"name": name, "address": _socket_address(port), "filter_chains": [chain]}


def _cluster(name: str, port: int, transport_socket: dict | None = None) -> dict:
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(port)}}]}],
        },
    }
    if transport_socket is not None:
        cluster["transport_socket"] = transport_socket
    return cluster


@contextlib.contextmanager
def isthmus_process(
    listeners: list[dict], clusters: list[dict], *extra: str, interpreter_args: tuple | list = ()
):
    """An Isthmus proxy (1 worker) with a static bootstrap; yields its process once its admin says
    ready and every listener accepts. ``proc.isthmus_admin_port`` is its admin port."""
    admin = free_port()
    bootstrap = {
        "admin": {"address": _socket_address(admin)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="isthmus-bench-") as f:
        yaml.safe_dump(bootstrap, f)
        f.flush()
        with process(
            [sys.executable, *interpreter_args, "-m", "proxy", "-c", f.name, "-l", "warning", *extra],
            cwd=REPO,
        ) as proc:
            proc.isthmus_admin_port = admin
            wait_for_http(f"http://127.0.0.1:{admin}/ready", proc=proc)
            for listener in listeners:
                wait_for_port("127.0.0.1", listener["address"]["socket_address"]["port_value"], proc=proc)
            yield proc


@contextlib.contextmanager
def isthmus_proxy(upstream_port: int, *extra: str, interpreter_args: tuple | list = ()):
    """An Isthmus proxy (1 worker, stats and a file access log on) routing everything to
    127.0.0.1:upstream_port; yields (port, proc).

    ``extra`` are more proxy flags (e.g. ``--concurrency 2``); ``proc.isthmus_admin_port`` is its admin
    port; ``interpreter_args`` go before ``-m proxy`` (e.g. ``-m cProfile -o out``)."""
    listen = free_port()
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-log-") as log_dir:
        hcm = _hcm("bench", "upstream", str(Path(log_dir) / "access.log"))
        with isthmus_process(
            [_listener("bench", listen, hcm)],
            [_cluster("upstream", upstream_port)],
            *extra,
            interpreter_args=interpreter_args,
        ) as proc:
            yield listen, proc


def _mtls_identities(names: tuple[str, ...]) -> tuple[str, dict[str, tuple[str, str]]]:
    """A root CA and one X.509-SVID per service account, made with citadel's CA code:
    (root PEM, {name: (certificate PEM, key PEM)})."""
    import datetime as dt

    from citadel.ca import certs, keys

    now = dt.datetime.now(dt.UTC)
    root_key = keys.generate()
    root = certs.self_signed_root(root_key, "isthmus-bench", now)
    out = {}
    for name in names:
        key = keys.generate()
        leaf = certs.workload_svid(
            key.public_key(),
            spiffe_id(name),
            root,
            root_key,
            now - dt.timedelta(minutes=5),
            now + dt.timedelta(hours=1),
        )
        out[name] = (certs.to_pem(leaf), keys.to_pem(key).decode())
    return certs.to_pem(root), out


def spiffe_id(service_account: str) -> str:
    return f"spiffe://cluster.local/ns/default/sa/{service_account}"


def _tls_context(kind: str, cert: tuple[str, str], root: str, alpn: list[str], **extra) -> dict:
    context = {
        "alpn_protocols": alpn,
        "tls_certificates": [
            {"certificate_chain": {"inline_string": cert[0]}, "private_key": {"inline_string": cert[1]}}
        ],
        "validation_context": {"trusted_ca": {"inline_string": root}, **extra.pop("validation", {})},
    }
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": kind, "common_tls_context": context, **extra},
    }


def mtls_pair_resources(upstream_port: int, inbound: int, outbound: int, log_dir: str) -> dict:
    """The two sidecars' static resources (pure but for key generation): {"server": (listeners,
    clusters), "client": (listeners, clusters)}. The server sidecar listens on `inbound` (mutual TLS,
    client certificate required, XFCC set) and forwards to `upstream_port`; the client sidecar
    listens on `outbound` (plaintext, as the app calls it) and reaches the server over mutual TLS
    (its SVID, SNI, ALPN istio, the server's SPIFFE ID checked)."""
    root, ids = _mtls_identities(("productpage", "reviews"))
    server_tls = _tls_context(
        DOWNSTREAM_TLS,
        ids["reviews"],
        root,
        ["istio-peer-exchange", "h2", "http/1.1"],
        require_client_certificate=True,
    )
    client_tls = _tls_context(
        UPSTREAM_TLS,
        ids["productpage"],
        root,
        ["istio-peer-exchange", "istio"],
        sni="outbound_.9080_._.reviews.default.svc.cluster.local",
        validation={
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": spiffe_id("reviews")}}]
        },
    )
    xfcc = {
        "forward_client_cert_details": "APPEND_FORWARD",
        "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True},
    }
    server_hcm = _hcm("inbound", "inbound|app", f"{log_dir}/server.log", **xfcc)
    cluster = "outbound|9080||reviews.default.svc.cluster.local"
    return {
        "server": (
            [_listener("inbound", inbound, server_hcm, server_tls)],
            [_cluster("inbound|app", upstream_port)],
        ),
        "client": (
            [_listener("outbound", outbound, _hcm("outbound", cluster, f"{log_dir}/client.log"))],
            [_cluster(cluster, inbound, client_tls)],
        ),
    }


@contextlib.contextmanager
def mtls_pair(upstream_port: int):
    """Two Isthmus sidecars as Istio wires them: client app -> client sidecar (plaintext listener)
    -> mutual TLS (SVIDs from citadel's CA code, SNI, SAN check, ALPN istio) -> server sidecar
    (client certificate required, XFCC set) -> 127.0.0.1:upstream_port. Stats and a file access log
    on both. Yields (client sidecar port, [client proc, server proc])."""
    inbound, outbound = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        logs = stack.enter_context(tempfile.TemporaryDirectory(prefix="isthmus-bench-mtls-"))
        resources = mtls_pair_resources(upstream_port, inbound, outbound, logs)
        server = stack.enter_context(isthmus_process(*resources["server"]))
        client = stack.enter_context(isthmus_process(*resources["client"]))
        yield outbound, [client, server]


def wrk(url: str, seconds: int, connections: int = 32, threads: int = 1) -> dict:
    """Run wrk; return requests/s, latency p50/p99 (ms) and error counts."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|90|99)%\s+([\d.]+\w+)", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": lat.get("50"),
        "p99_ms": lat.get("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sum(int(g) for g in sock.groups()) if sock else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


@contextlib.contextmanager
def nginx_proxy(upstream_port: int):
    """nginx as a reverse proxy (1 worker, keep-alive upstream connections); yields (port, proc)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-nginx-proxy-") as d:
        conf = Path(d) / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}
}}
""")
        with process([nginx, "-c", str(conf), "-p", d]) as proc:
            wait_for_port("127.0.0.1", port, proc=proc)
            yield port, proc


@contextlib.contextmanager
def haproxy_proxy(upstream_port: int):
    """HAProxy (1 thread, keep-alive upstream connections); yields (port, proc)."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-haproxy-") as d:
        conf = Path(d) / "haproxy.cfg"
        conf.write_text(f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:{port}
  default_backend upstream
backend upstream
  server s1 127.0.0.1:{upstream_port}
""")
        with process([haproxy, "-f", str(conf), "-db"]) as proc:
            wait_for_port("127.0.0.1", port, proc=proc)
            yield port, proc


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx and HAProxy do their work in a child process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` and its children used so far (/proc/<pid>/stat utime + stime)."""
    total = 0
    for p in _tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set size in MB of `pid` and its children (/proc/<pid>/statm)."""
    total = 0
    for p in _tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1])
        except OSError:
            continue
    return total * _PAGE / 1e6
