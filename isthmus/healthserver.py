"""The small HTTP endpoint every control-plane component has: /ready and /metrics (Prometheus text).

Components that are still scaffolds (pilot, citadel, mixer today) run only this, so that the launcher,
Compose health checks and tests have a real endpoint to talk to.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Info, generate_latest

from isthmus.log import event

log = logging.getLogger("isthmus.healthserver")


def make_handler(registry: CollectorRegistry, is_ready) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/ready":
                ok = is_ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
            elif path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
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


def serve(
    component: str, address: tuple[str, int], registry: CollectorRegistry = REGISTRY, is_ready=lambda: True
) -> int:
    """Serve /ready and /metrics on `address` until SIGINT/SIGTERM. Returns the exit status."""
    Info("isthmus_component", "Which Isthmus component this process is", registry=registry).info(
        {"component": component}
    )
    try:
        server = ThreadingHTTPServer(address, make_handler(registry, is_ready))
    except OSError as e:
        message = f"cannot listen on {address[0]}:{address[1]}: {e.strerror or e}"
        print(f"{component}: {message}", file=sys.stderr)
        event(log, logging.ERROR, "server.listen_failed", address=f"{address[0]}:{address[1]}", error=message)
        return 1
    server.daemon_threads = True
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    thread = threading.Thread(target=server.serve_forever, name=f"{component}-http", daemon=True)
    thread.start()
    event(
        log,
        logging.INFO,
        "server.listening",
        address=f"{address[0]}:{server.server_address[1]}",
        endpoints="/ready,/metrics",
    )
    stop.wait()
    server.shutdown()
    server.server_close()
    event(log, logging.INFO, "server.stopped")
    return 0
