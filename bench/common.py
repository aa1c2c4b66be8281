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


@contextlib.contextmanager
def isthmus_proxy(upstream_port: int, *extra: str, interpreter_args: tuple | list = ()):
    """An Isthmus proxy (1 worker) routing everything to 127.0.0.1:upstream_port; yields (port, proc).

    ``proc.isthmus_admin_port`` is its admin port; ``interpreter_args`` go before ``-m proxy``
    (e.g. ``-m cProfile -o out``)."""
    listen, admin = free_port(), free_port()
    log_dir = tempfile.TemporaryDirectory(prefix="isthmus-bench-log-")
    access_log = str(Path(log_dir.name) / "access.log")
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "bench",
                                        # Stats are always on; an access log too, as a sidecar runs.
                                        "access_log": [
                                            {
                                                "name": "envoy.access_loggers.file",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                                                    "path": access_log,
                                                },
                                            }
                                        ],
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {"cluster": "upstream"},
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
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
            wait_for_port("127.0.0.1", listen, proc=proc)
            try:
                yield listen, proc
            finally:
                log_dir.cleanup()


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
