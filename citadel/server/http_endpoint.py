"""citadel's HTTP side: /ready, /metrics (Prometheus text) and /root-cert (the trust anchor, PEM)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from isthmus.log import event

log = logging.getLogger("citadel.http")


def make_handler(registry: CollectorRegistry, is_ready: Callable[[], bool], root_pem: Callable[[], str]):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/ready":
                ok = is_ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
            elif path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/root-cert":
                self._send(200, root_pem().encode(), "application/x-pem-file")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:
            event(log, logging.DEBUG, "http.request", line=fmt % args)

    return Handler


def start(address, registry, is_ready, root_pem) -> ThreadingHTTPServer:
    """Bind and serve in a daemon thread; raises OSError when the address is taken."""
    try:
        server = ThreadingHTTPServer(address, make_handler(registry, is_ready, root_pem))
    except OSError as e:
        raise OSError(f"cannot listen on {address[0]}:{address[1]}: {e.strerror or e}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="citadel-http", daemon=True).start()
    event(
        log,
        logging.INFO,
        "server.listening",
        address=f"{address[0]}:{server.server_address[1]}",
        endpoints="/ready,/metrics,/root-cert",
    )
    return server
